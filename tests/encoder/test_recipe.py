"""The training recipes run end to end from the data, with SMOKE=1 (2 steps a phase, AT&T only),
and leave an encoder that loads and embeds:
- scripts/train_encoder.sh, the shipped one: dlib's weights trained further, reading dlib's chip;
- scripts/train_student.sh, the from-scratch student: every phase, dlib's network in the
  pipeline, the closed-form chain refit."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_recipe(script: str, data_dir: Path, tmp_path: Path, timeout: int) -> tuple[subprocess.CompletedProcess, Path]:
    """SMOKE=1 scripts/SCRIPT into tmp_path/runs -> (the finished process, the runs folder)."""
    pytest.importorskip("face_recognition_models", reason="the recipes start from or distil dlib's network")
    runs = tmp_path / "runs"
    env = {**os.environ, "SMOKE": "1", "FACEGATE_DATA": str(data_dir), "RUNS": str(runs),
           "CACHE": str(tmp_path / "cache")}
    p = subprocess.run(["bash", str(ROOT / "scripts" / script)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p, runs


def embeds_unit_vectors(checkpoint: Path, crop_size: int):
    from encoder.embedder import Embedder

    emb = Embedder.from_checkpoint(checkpoint)
    v = emb.embed_crops(np.random.default_rng(0).integers(0, 256, (2, crop_size, crop_size, 3), dtype=np.uint8))
    assert v.shape == (2, 128) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-3)
    return emb


def test_the_recipe_trains_from_dlibs_weights_and_leaves_a_working_encoder(data_dir, tmp_path):
    _, runs = run_recipe("train_encoder.sh", data_dir, tmp_path, timeout=900)
    config = json.loads((runs / "dlib_chip" / "config.json").read_text())
    assert config["steps"] == 2 and config["init_from"] == "dlib" and config["teacher_view"] == "clean"
    from encoder.checkpoint import read_meta

    meta = read_meta(runs / "encoder.pt")
    assert meta["preprocessing"]["geometry"] == "dlib150" and meta["preprocessing"]["flip_average"]
    assert meta["training"]["init_from"].startswith("dlib_resnet_v1")
    assert embeds_unit_vectors(runs / "encoder.pt", 150).aligner.config.geometry == "dlib150"


def test_the_student_recipe_runs_every_step_and_leaves_a_working_encoder(data_dir, tmp_path):
    p, runs = run_recipe("train_student.sh", data_dir, tmp_path, timeout=1500)
    phases = [line.split()[2] for line in p.stderr.splitlines() if line.startswith("== phase ")]
    assert phases == ["p1", "p1r1", "p1b", "p1c", "p4a"]
    for name in phases:
        assert json.loads((runs / name / "config.json").read_text())["steps"] == 2
    from encoder.checkpoint import read_meta

    meta = read_meta(runs / "encoder.pt")
    assert meta["training"]["block_refit"]["photos"] == 32 and meta["preprocessing"]["flip_average"]
    embeds_unit_vectors(runs / "encoder.pt", 112)
