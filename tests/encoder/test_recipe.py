"""The shipped recipe runs end to end from the data: scripts/train_encoder.sh with SMOKE=1 trains
2 steps on AT&T from dlib's weights and leaves an encoder that reads dlib's chip, loads and embeds."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_the_recipe_trains_from_dlibs_weights_and_leaves_a_working_encoder(data_dir, tmp_path):
    pytest.importorskip("face_recognition_models", reason="the recipe starts from dlib's weights")
    runs = tmp_path / "runs"
    env = {**os.environ, "SMOKE": "1", "FACEGATE_DATA": str(data_dir), "RUNS": str(runs),
           "CACHE": str(tmp_path / "cache")}
    p = subprocess.run(["bash", str(ROOT / "scripts/train_encoder.sh")], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    config = json.loads((runs / "dlib_chip" / "config.json").read_text())
    assert config["steps"] == 2 and config["init_from"] == "dlib" and config["teacher_view"] == "clean"
    from encoder.checkpoint import read_meta
    from encoder.embedder import Embedder

    meta = read_meta(runs / "encoder.pt")
    assert meta["preprocessing"]["geometry"] == "dlib150" and meta["preprocessing"]["flip_average"]
    assert meta["training"]["init_from"].startswith("dlib_resnet_v1")
    emb = Embedder.from_checkpoint(runs / "encoder.pt")
    assert emb.aligner.config.geometry == "dlib150"
    v = emb.embed_crops(np.random.default_rng(0).integers(0, 256, (2, 150, 150, 3), dtype=np.uint8))
    assert v.shape == (2, 128) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-3)
