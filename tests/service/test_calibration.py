"""TOO_DARK and the night threshold, decided from data: on hand-made distances where the answer
is known (the real curve is computed by `facegate calibrate --profile night`)."""
import numpy as np
import pytest

from service.calibration import DarkPairs, calibrate_night, curve, too_dark_level


def make_pairs(seed=0, n_gen=200, n_imp=2000):
    """Column 0: the probe as taken (light 0.4); columns 1..3 darkened to light 0.15, 0.07, 0.03.
    Impostors sit at 1.4 +- 0.1 everywhere. Genuine pairs sit at 0.6 +- 0.1, except at light
    0.03 where they look like impostors and half the faces are lost."""
    rng = np.random.default_rng(seed)
    same = np.r_[np.ones(n_gen, bool), np.zeros(n_imp, bool)]
    lights = [0.4, 0.15, 0.07, 0.03]
    dist = np.empty((len(same), 4))
    for j, lv in enumerate(lights):
        gen = rng.normal(0.6, 0.1, n_gen) if lv > 0.04 else rng.normal(1.4, 0.1, n_gen)
        dist[:, j] = np.r_[gen, rng.normal(1.4, 0.1, n_imp)]
    dist[: n_gen // 2, 3] = np.inf                                   # no face found
    light = np.tile(lights, (len(same), 1))
    night = light < 0.2
    return DarkPairs(same, dist, light, night, (0.3, 0.6, 0.9), dropped_pairs=0)


def test_curve_bins_by_light_and_counts_lost_faces_as_rejects():
    rows = {r["light_lo"]: r for r in curve(make_pairs(), target_far=1e-2)}
    assert set(rows) == {0.02, 0.06, 0.13}
    assert rows[0.13]["tar_at_target_far"] > 0.95 and rows[0.06]["tar_at_target_far"] > 0.95
    assert rows[0.02]["face_found"] == pytest.approx(1 - 100 / 2200, abs=1e-4)
    assert rows[0.02]["tar_at_target_far"] < 0.05                  # lost faces and impostor-like distances


def test_too_dark_is_the_upper_edge_of_the_brightest_failing_bin():
    rows = curve(make_pairs(), target_far=1e-2)
    assert too_dark_level(rows, min_tar=0.8) == 0.04
    assert too_dark_level(rows, min_tar=0.0) == 0.0                 # nothing fails: never too dark
    assert too_dark_level(rows, min_tar=0.8, min_genuine=10_000) == 0.0   # too few pairs to judge


def test_a_brighter_bin_missing_the_target_after_one_that_met_it_is_noise():
    row = lambda lo, hi, tar: {"light_lo": lo, "light_hi": hi, "genuine": 150, "tar_at_target_far": tar}  # noqa: E731
    rows = [row(0.0, 0.02, 0.1), row(0.02, 0.04, 0.12), row(0.04, 0.06, 0.3), row(0.16, 0.2, 0.15)]
    assert too_dark_level(rows, min_tar=0.2) == 0.04
    rows[0]["genuine"] = 5                     # passed over: too few to judge
    assert too_dark_level(rows, min_tar=0.2) == 0.04
    assert too_dark_level([row(0.0, 0.02, 0.5), row(0.16, 0.2, 0.1)], min_tar=0.2) == 0.0


def test_night_threshold_is_calibrated_on_night_probes_above_too_dark():
    res = calibrate_night(make_pairs(), target_far=1e-2, identify_far=1e-3)
    assert res["too_dark_light"] == 0.04
    # night probes above TOO_DARK: columns 1 and 2 only (column 0 is day, column 3 too dark)
    assert res["night_genuine_pairs"] == 400 and res["night_impostor_pairs"] == 4000
    assert res["night_far"] <= 1e-2 and res["night_tar"] > 0.95
    assert 0.8 < res["night_threshold"] < 1.3
    assert res["night_identify_threshold"] <= res["night_threshold"]
    assert res["min_tar"] == pytest.approx(0.8 * res["day_tar_at_target_far"], abs=1e-4)
