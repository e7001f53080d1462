"""The from-scratch student's recipe runs end to end from the data: scripts/train_student.sh with SMOKE=1 takes
every step of it (each training phase, dlib's network in the pipeline, the closed-form chain
refit) for 2 steps on AT&T, and leaves an encoder checkpoint that loads and embeds."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_the_recipe_runs_every_step_and_leaves_a_working_encoder(data_dir, tmp_path):
    pytest.importorskip("face_recognition_models", reason="the recipe's teacher: ./dev teacher")
    runs = tmp_path / "runs"
    env = {**os.environ, "SMOKE": "1", "FACEGATE_DATA": str(data_dir), "RUNS": str(runs),
           "CACHE": str(tmp_path / "cache")}
    p = subprocess.run(["bash", str(ROOT / "scripts/train_student.sh")], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    phases = [line.split()[2] for line in p.stderr.splitlines() if line.startswith("== phase ")]
    assert phases == ["p1", "p1r1", "p1b", "p1c", "p4a"]
    for name in phases:
        assert json.loads((runs / name / "config.json").read_text())["steps"] == 2
    from encoder.checkpoint import read_meta
    from encoder.embedder import Embedder

    meta = read_meta(runs / "encoder.pt")
    assert meta["training"]["block_refit"]["photos"] == 32 and meta["preprocessing"]["flip_average"]
    emb = Embedder.from_checkpoint(runs / "encoder.pt")
    v = emb.embed_crops(np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8))
    assert v.shape == (2, 128) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-3)
