"""Calibrated values and results go into a release file, never into the packaged checkpoint in place."""
from __future__ import annotations

import pytest

from encoder.checkpoint import (DEFAULT_CHECKPOINT, CheckpointError, read_meta, record_in_checkpoint,
                                release_copy)


def test_the_packaged_checkpoint_is_never_recorded_in():
    before = DEFAULT_CHECKPOINT.read_bytes()
    with pytest.raises(CheckpointError, match="packaged checkpoint"):
        record_in_checkpoint(DEFAULT_CHECKPOINT, threshold=0.1)
    with pytest.raises(CheckpointError, match="packaged checkpoint"):
        release_copy(None, DEFAULT_CHECKPOINT)
    assert DEFAULT_CHECKPOINT.read_bytes() == before


def test_a_release_file_is_a_copy_that_takes_the_calibrated_values(tmp_path):
    shipped = read_meta()
    rel = release_copy(None, tmp_path / "rel" / "encoder.pt")
    assert read_meta(rel)["version"] == shipped["version"]
    assert record_in_checkpoint(rel, threshold=0.321, threshold_info={"target_far": 1e-3}) == shipped["version"]
    assert read_meta(rel)["threshold"] == 0.321
    assert read_meta()["threshold"] == shipped["threshold"]           # the packaged one is as it was
    assert release_copy(None, rel) == rel                              # an existing release is reused...
    assert read_meta(rel)["threshold"] == 0.321                        # ...as it is, not copied over


def test_a_release_file_of_another_encoder_is_refused(tmp_path):
    other = release_copy(None, tmp_path / "other.pt")
    record_in_checkpoint(other, flip_average=not read_meta()["preprocessing"].get("flip_average", False))
    with pytest.raises(CheckpointError, match="name a new release file"):
        release_copy(other, release_copy(None, tmp_path / "rel.pt"))
