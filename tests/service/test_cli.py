"""The CLI as CONTRACT.md pins it: JSON keys, exit codes, error objects (real subprocesses)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from encoder.checkpoint import DEFAULT_CHECKPOINT

FACEGATE = [sys.executable, "-m", "service.cli"]
ROOT = Path(__file__).resolve().parents[2]
EVAL_KEYS = ["pairs", "acc", "acc_std", "auc", "eer", "tar@far=1e-2", "tar@far=1e-3", "threshold", "images",
             "no_face", "sec_per_detect", "sec_per_embed", "sec_per_image"]


def run(*args, timeout=600):
    p = subprocess.run([*FACEGATE, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    return p.returncode, [json.loads(line) for line in lines], p.stderr


@pytest.fixture(scope="module")
def small_pairs(lfw, tmp_path_factory):
    rows = (lfw / "pairs_devtest.tsv").read_text().splitlines()
    path = tmp_path_factory.mktemp("pairs") / "p.tsv"
    path.write_text("\n".join(rows[:10] + rows[500:510]) + "\n")   # 10 genuine, then 10 impostor pairs
    return path


@pytest.mark.slow
def test_eval_pairs_prints_the_contract_keys(small_pairs, lfw, tmp_path):
    rc, out, err = run("eval-pairs", small_pairs, "--root", lfw, "--json", "--plot", tmp_path / "roc.png")
    assert rc == 0, err
    assert len(out) == 1
    r = out[0]
    assert [k for k in EVAL_KEYS if k not in r] == []
    assert r["pairs"] == 20 and isinstance(r["images"], int) and isinstance(r["no_face"], int)
    assert 0.5 <= r["acc"] <= 1 and 0 <= r["eer"] <= 0.5 and 0 < r["threshold"] < 2
    assert 0 < r["sec_per_detect"] < 5 and 0 < r["sec_per_embed"] < 5
    assert r["sec_per_image"] == pytest.approx(r["sec_per_detect"] + r["sec_per_embed"], abs=2e-5)
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_calibrate_writes_the_sites_threshold(small_pairs, lfw, tmp_path):
    rc, out, err = run("calibrate", small_pairs, "--root", lfw, "--target-far", "0.1", "--site", "gym",
                       "--data-dir", tmp_path, "--json")
    assert rc == 0, err
    r = out[0]
    for k in ["threshold", "far", "tar", "site", "profile", "encoder_version"]:
        assert k in r
    assert r["site"] == "gym" and r["profile"] == "day" and r["far"] <= 0.1
    store = json.loads((tmp_path / "thresholds.json").read_text())
    assert store["gym"]["day"]["threshold"] == r["threshold"]
    assert store["gym"]["day"]["encoder_version"] == r["encoder_version"]


def test_site_sets_and_shows_the_policy(tmp_path):
    rc, out, err = run("site", "gym", "--several-faces", "central-face", "--data-dir", tmp_path, "--json")
    assert rc == 0, err
    assert out[0]["several_faces"] == "central_face" and out[0]["trigger_word"] is False
    rc, out, _ = run("site", "gym", "--trigger-word", "on", "--data-dir", tmp_path, "--json")
    assert out[0]["several_faces"] == "central_face" and out[0]["trigger_word"] is True   # one change keeps the other
    rc, out, _ = run("site", "pool", "--data-dir", tmp_path, "--json")
    assert rc == 0 and out[0]["several_faces"] == "refuse"


@pytest.mark.slow
def test_errors_are_json_with_exit_code_2(lfw, tmp_path):
    rc, out, _ = run("eval-pairs", tmp_path / "missing.tsv", "--root", lfw, "--json")
    assert rc == 2 and out[0]["error"]["code"] == "INVALID_ARGUMENT" and "missing.tsv" in out[0]["error"]["message"]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(DEFAULT_CHECKPOINT.read_bytes()[:1000])
    pairs = tmp_path / "p.tsv"
    pairs.write_text("images/a.jpg\timages/b.jpg\t1\t0\n")
    rc, out, _ = run("eval-pairs", pairs, "--root", lfw, "--checkpoint", bad, "--json")
    assert rc == 2 and out[0]["error"]["code"] == "FAILED_PRECONDITION" and "bad.pt" in out[0]["error"]["message"]
    rc, out, _ = run("calibrate", pairs, "--root", lfw, "--target-far", "2", "--json")
    assert rc == 2 and out[0]["error"]["code"] == "INVALID_ARGUMENT"


@pytest.mark.slow
def test_compare_tells_the_same_person_from_another(lfw):
    img = lfw / "images"
    same = [img / "Abdullah_Gul/Abdullah_Gul_0013.jpg", img / "Abdullah_Gul/Abdullah_Gul_0014.jpg"]
    rc, out, err = run("compare", *same, "--json")
    assert rc == 0, (out, err)
    assert out[0]["pairs"][0]["same"] is True
    rc, out, _ = run("compare", same[0], img / "Reese_Witherspoon/Reese_Witherspoon_0003.jpg", "--json")
    assert rc == 1 and out[0]["pairs"][0]["same"] is False


@pytest.mark.slow
def test_compare_saves_what_the_network_sees(lfw, tmp_path):
    """--save-crops DIR: each photo's aligned face as the encoder reads it, in its geometry's size."""
    import cv2
    from encoder.checkpoint import read_meta

    img = lfw / "images"
    photos = [img / "Abdullah_Gul/Abdullah_Gul_0013.jpg", img / "Reese_Witherspoon/Reese_Witherspoon_0003.jpg"]
    rc, out, err = run("compare", *photos, "--save-crops", tmp_path / "crops", "--json")
    assert rc in (0, 1), err
    saved = out[0]["crops"]
    assert [Path(p).name for p in saved] == ["000_Abdullah_Gul_0013.png", "001_Reese_Witherspoon_0003.png"]
    size = read_meta(DEFAULT_CHECKPOINT)["preprocessing"]["crop_size"]
    crops = [cv2.imread(p) for p in saved]
    assert all(c.shape == (size, size, 3) for c in crops)
    assert float(np.abs(crops[0].astype(int) - crops[1]).mean()) > 10    # two faces, not one picture twice


@pytest.mark.slow
def test_train_exports_a_checkpoint_and_fine_tunes_from_it(data_dir, tmp_path):
    """`facegate train` end to end on 6 AT&T people: a crop cache, a run folder, an exported
    checkpoint; then a second run of the same config that starts from it (--init-from) records the
    version it started from."""
    people = tmp_path / "att6"
    people.mkdir()
    for i in range(1, 7):
        (people / f"s{i}").symlink_to(data_dir / "faces/att" / f"s{i}")
    small = {"encoder": {"input_size": 64}, "p": 3, "k": 3, "extra": 0, "steps": 4, "warmup": 1,
             "eval_every": 2, "ckpt_every": 2, "log_every": 1, "val_share": 0.34, "threads": 1}
    common = ["--data", people, "--cache-dir", tmp_path / "cache", "--workers", 1]
    (tmp_path / "a.json").write_text(json.dumps(small))
    rc, out, err = run("train", *common, "--config", tmp_path / "a.json", "--out", tmp_path / "a",
                       "--export", tmp_path / "a.pt", "--name", "base")
    assert rc == 0, err
    assert out[-1]["checkpoint"] == str(tmp_path / "a.pt") and out[-1]["version"].startswith("base-")
    assert (tmp_path / "a/last.pt").exists() and (tmp_path / "a/log.jsonl").exists()
    rc, out2, err = run("train", *common, "--config", tmp_path / "a.json", "--init-from", tmp_path / "a.pt",
                        "--out", tmp_path / "b", "--export", tmp_path / "b.pt", "--name", "tuned")
    assert rc == 0, err
    from encoder.checkpoint import read_meta

    meta = read_meta(tmp_path / "b.pt")
    assert meta["training"]["init_from"] == out[-1]["version"]
    assert meta["training"]["config"]["init_from"] == str(tmp_path / "a.pt")   # the effective config, flag included
    assert json.loads((tmp_path / "b/config.json").read_text())["init_from"] == str(tmp_path / "a.pt")
    assert out2[-1]["version"].startswith("tuned-") and out2[-1]["version"] != out[-1]["version"]
