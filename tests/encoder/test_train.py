"""Training: the schedule, a few real steps on AT&T crops, and resume == uninterrupted."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from encoder.train import TrainConfig, lr_at, make_val_pairs, run_training


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-5, warmup=10, steps=110)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(110, cfg) == pytest.approx(1e-5)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 110))


def test_val_pairs_are_genuine_and_impostor_within_held_out_rows():
    labels = np.array([0, 0, 0, 1, 1, 2, -1])
    pairs = make_val_pairs(labels, np.array([0, 1, 2, 3, 4, 5]), seed=0, impostor_factor=2)
    gen, imp = pairs[pairs[:, 2] == 1], pairs[pairs[:, 2] == 0]
    assert len(gen) == 4 and len(imp) == 8          # 3 pairs of identity 0, 1 of identity 1
    assert all(labels[a] == labels[b] for a, b, _ in gen)
    assert all(labels[a] != labels[b] for a, b, _ in imp)
    assert 6 not in pairs[:, :2]


@pytest.fixture(scope="module")
def att_cache(data_dir, tmp_path_factory):
    from encoder.crop_cache import CropCache, build_cache
    from encoder.face_folders import list_person_folders

    photos = [p for p in list_person_folders(data_dir / "faces/att") if int(p.identity.split("/s")[1]) <= 8]
    folder = build_cache(photos, tmp_path_factory.mktemp("cache"), workers=1)
    return CropCache(folder)


def _cfg(**kw):
    return TrainConfig(p=4, k=3, extra=4, steps=6, warmup=2, eval_every=3, ckpt_every=2, log_every=1,
                       val_share=0.25, threads=1, **kw)


def test_crop_cache_holds_aligned_att_faces(att_cache):
    assert len(att_cache) >= 78                       # 80 photos; MTCNN may miss one or two
    assert att_cache.crops.shape[1:] == (112, 112, 3)
    assert len(set(att_cache.identities)) == 8
    assert att_cache.teacher is None


def test_training_steps_change_the_weights_and_write_a_run_folder(att_cache, tmp_path):
    model, summary = run_training(_cfg(), att_cache, tmp_path / "run")
    assert [h["step"] for h in summary["history"]] == [3, 6]
    assert summary["history"][-1]["triplets"] > 0
    assert "val_auc" in summary["history"][-1]
    assert json.loads((tmp_path / "run/config.json").read_text())["steps"] == 6
    log = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert any(r["step"] == 6 for r in log)
    assert (tmp_path / "run/last.pt").exists()


def test_resumed_training_equals_uninterrupted_training(att_cache, tmp_path):
    straight, _ = run_training(_cfg(), att_cache, tmp_path / "a")
    _, part = run_training(_cfg(), att_cache, tmp_path / "b", stop_at=4)   # "killed" after step 4
    assert torch.load(tmp_path / "b/last.pt", weights_only=True)["step"] == 4
    resumed, _ = run_training(_cfg(), att_cache, tmp_path / "b")
    a, b = straight.state_dict(), resumed.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_another_config(att_cache, tmp_path):
    run_training(_cfg(), att_cache, tmp_path / "c", stop_at=2)
    with pytest.raises(ValueError, match="another config"):
        run_training(_cfg(margin=0.3), att_cache, tmp_path / "c")
