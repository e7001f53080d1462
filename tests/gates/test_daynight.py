"""The day/night gate: the night simulation, the light level, the shipped checkpoint on real scenes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gates.daynight import DEFAULT_CHECKPOINT, DayNightGate, DayNightNet, darken, light_level, to_input, to_tensor
from gates.gate import create_gate

ROOT = Path(__file__).resolve().parents[2]


def test_light_level_by_hand():
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0] = 255                              # pure red: luminance 0.299
    assert light_level(img) == pytest.approx(0.299, abs=1e-6)
    assert light_level(np.full((2, 2, 3), 255, np.uint8)) == pytest.approx(1.0)


def test_darken_makes_photos_darker_the_stronger_it_is():
    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).integers(60, 230, (80, 80, 3), dtype=np.uint8)
    levels = [light_level(darken(img, np.random.default_rng(2), s)) for s in (0.0, 0.5, 1.0)]
    assert levels[0] > levels[1] > levels[2] and levels[2] < 0.5 * light_level(img)
    out = darken(img, rng)
    assert out.shape == img.shape and out.dtype == np.uint8


def test_net_shapes():
    net = DayNightNet().eval()
    x = to_tensor(np.stack([to_input(np.zeros((120, 90, 3), np.uint8))] * 2))
    assert x.shape == (2, 3, 64, 64) and net(x).shape == (2,)


def test_unknown_gate_is_refused():
    with pytest.raises(ValueError, match="known"):
        create_gate("moon-phase")


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.exists(), reason="no shipped day/night checkpoint")
def test_shipped_gate_tells_day_from_night_scenes(data_dir):
    gate = DayNightGate.load()
    root = data_dir / "daynight/training"
    day = sorted((root / "day").glob("*.jpg"))[:10]
    night = sorted((root / "night").glob("*.jpg"))[:10]
    from encoder.images import decode_image

    res = gate.predict_batch([decode_image(p) for p in day + night])
    correct = sum(r.label == "day" for r in res[:10]) + sum(r.label == "night" for r in res[10:])
    assert correct >= 18          # these scenes were seen in training: a sanity check, not the CV figure


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.exists(), reason="no shipped day/night checkpoint")
@pytest.mark.slow
def test_daynight_cli_prints_one_json_line_per_photo(data_dir):
    paths = [str(sorted((data_dir / "daynight/training" / k).glob("*.jpg"))[0]) for k in ("day", "night")]
    p = subprocess.run([sys.executable, "-m", "service.cli", "daynight", *paths, "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["path"] for r in rows] == paths
    assert all(r["label"] in ("day", "night") and 0 <= r["p_night"] <= 1 for r in rows)
    # TOO_DARK is the encoder checkpoint's calibrated level unless one is given
    from encoder.checkpoint import load_checkpoint

    level = load_checkpoint(None)[1].get("too_dark_light") or 0.0
    assert all(r["too_dark"] == (r["light"] < level) for r in rows)
    p = subprocess.run([sys.executable, "-m", "service.cli", "daynight", paths[0], "--json", "--too-dark", "0.99"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert json.loads(p.stdout)["too_dark"] is True
