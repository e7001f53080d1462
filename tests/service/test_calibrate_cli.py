"""`facegate calibrate` and `eval-pairs` write where they are told (a data folder, a release
file), never into the packaged checkpoint; on a few real LFW pairs."""
from __future__ import annotations

import json

import pytest

from encoder.checkpoint import DEFAULT_CHECKPOINT, read_meta
from service.cli import main
from service.thresholds import ThresholdStore

pytestmark = pytest.mark.slow


@pytest.fixture
def pairs(lfw, tmp_path):
    rows = [line for line in (lfw / "pairs_calib.tsv").read_text().splitlines()]
    genuine = [r for r in rows if r.split("\t")[2] == "1"][:6]
    impostor = [r for r in rows if r.split("\t")[2] == "0"][:6]
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(genuine + impostor) + "\n")
    return path


def run(capsys, *argv) -> tuple[int, dict]:
    rc = main([*map(str, argv), "--json"])
    return rc, json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_calibrate_writes_the_data_folder_and_a_release_file_not_the_packaged_checkpoint(
        pairs, lfw, tmp_path, capsys):
    packaged = DEFAULT_CHECKPOINT.read_bytes()
    rel, data = tmp_path / "release.pt", tmp_path / "data"
    rc, day = run(capsys, "calibrate", pairs, "--root", lfw, "--target-far", 0.2, "--site", "gym",
                  "--data-dir", data, "--release", rel)
    assert rc == 0 and day["site"] == "gym" and day["written_to_release"] == str(rel)
    assert read_meta(rel)["threshold"] == day["threshold"]
    assert ThresholdStore(data).get("gym", "day", day["encoder_version"]) == day["threshold"]
    rc, ident = run(capsys, "calibrate", pairs, "--root", lfw, "--target-far", 0.1, "--kind", "identify",
                    "--release", rel)
    assert rc == 0 and read_meta(rel)["identify_threshold"] == ident["threshold"]
    rc, night = run(capsys, "calibrate", pairs, "--root", lfw, "--target-far", 0.2, "--profile", "night",
                    "--site", "gym", "--data-dir", data, "--release", rel, "--cache-dir", tmp_path / "cache")
    assert rc == 0 and read_meta(rel)["too_dark_light"] == night["too_dark_light"]
    assert ThresholdStore(data).get("gym", "night", night["encoder_version"]) == night["night_threshold"]
    assert list((tmp_path / "cache").glob("*.npz"))                 # the darkened probes' cache, not in the tree
    assert DEFAULT_CHECKPOINT.read_bytes() == packaged


def test_eval_pairs_records_only_in_a_release_file(pairs, lfw, tmp_path, capsys):
    rc, out = run(capsys, "eval-pairs", pairs, "--root", lfw, "--record", "calib6")
    assert rc == 2 and out["error"]["code"] == "INVALID_ARGUMENT" and "--release" in out["error"]["message"]
    rel = tmp_path / "release.pt"
    rc, report = run(capsys, "eval-pairs", pairs, "--root", lfw, "--record", "calib6", "--release", rel)
    assert rc == 0 and read_meta(rel)["metrics"]["calib6"]["pairs"] == report["pairs"] == 12
