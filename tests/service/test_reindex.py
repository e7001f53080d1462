"""The upgrade path: re-enroll the photo source with a new encoder into a new index version,
switch atomically, resume, roll back; the server refuses whichever encoder does not match."""
from __future__ import annotations

import pytest
import torch

from encoder.checkpoint import DEFAULT_CHECKPOINT, record_in_checkpoint
from service.errors import FailedPrecondition
from service.index_layout import current_index_dir, switch_index
from service.reindex import reindex
from service.server import build_deps
from service.settings import Settings


@pytest.fixture
def source(lfw, tmp_path):
    src = tmp_path / "id-photos"
    for person, n in [("Abdullah_Gul", 2), ("Tom_Cruise", 1)]:
        (src / person).mkdir(parents=True)
        for p in sorted((lfw / "images" / person).glob("*.jpg"))[:n]:
            (src / person / p.name).write_bytes(p.read_bytes())
    return src


@pytest.fixture
def new_checkpoint(tmp_path):
    """The same weights with other preprocessing: another encoder version, as a retrained one would be."""
    path = tmp_path / "new.pt"
    path.write_bytes(DEFAULT_CHECKPOINT.read_bytes())
    flip = torch.load(path, weights_only=True)["preprocessing"].get("flip_average", False)
    record_in_checkpoint(path, flip_average=not flip, threshold=0.9, identify_threshold=0.8)
    return path


def test_reindex_switches_atomically_resumes_and_rolls_back(source, new_checkpoint, tmp_path):
    data = tmp_path / "data"
    old = reindex(source, data, None)
    assert old["accepted"] == 3 and old["switched"] and current_index_dir(data).name == old["index"]
    build_deps(Settings(data_dir=data, worker_processes=False))                # the shipped encoder serves it

    with pytest.raises(FailedPrecondition, match="facegate reindex"):
        build_deps(Settings(data_dir=data, checkpoint=new_checkpoint, worker_processes=False))

    new = reindex(source, data, new_checkpoint)
    assert new["index"] != old["index"] and new["encoder_version"] != old["encoder_version"]
    assert new["accepted"] == 3 and current_index_dir(data).name == new["index"]
    deps = build_deps(Settings(data_dir=data, checkpoint=new_checkpoint, worker_processes=False))
    assert deps.pipeline.status()["templates"] == 3
    with pytest.raises(FailedPrecondition):
        build_deps(Settings(data_dir=data, worker_processes=False))            # the old encoder is refused now
    assert (data / "indexes" / old["index"] / "templates.sqlite").exists()   # kept, for a rollback

    again = reindex(source, data, new_checkpoint)                     # an interrupted run, resumed
    assert again["accepted"] == 0 and again["already_enrolled"] == 3

    switch_index(data, old["index"])                                  # rollback is one switch
    build_deps(Settings(data_dir=data, worker_processes=False))


def test_reindex_reports_thresholds_of_the_old_encoder(source, new_checkpoint, tmp_path):
    from service.thresholds import ThresholdStore

    data = tmp_path / "data"
    old = reindex(source, data, None)
    ThresholdStore(data).put("gym", "day", 0.7, old["encoder_version"])
    new = reindex(source, data, new_checkpoint, switch=False)
    assert new["thresholds_to_recalibrate"] == ["gym/day"] and not new["switched"]
    assert current_index_dir(data).name == old["index"]
