"""The benches' own arithmetic."""
import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("cluster_run", Path(__file__).resolve().parents[2] / "bench/cluster_run.py")
cluster_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cluster_run)
spec = importlib.util.spec_from_file_location("door_run", Path(__file__).resolve().parents[2] / "bench/door_run.py")
door_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(door_run)


def test_adjusted_rand_index():
    ari = cluster_run.adjusted_rand_index
    assert ari([0, 0, 1, 1], [5, 5, 7, 7]) == pytest.approx(1.0)           # same partition, other names
    # contingency [[2,0],[1,1]]: sum_ij=1, sum_a=2, sum_b=3, expected=1, best=2.5 -> 0/1.5 = 0
    assert ari([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.0)
    # [[2,1],[0,3]] over 6: sum_ij=1+3=4, sum_a=3+3=6, sum_b=1+6=7, expected=42/15=2.8, best=6.5
    assert ari([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]) == pytest.approx((4 - 2.8) / (6.5 - 2.8))


def test_rates_at_other_thresholds_count_faceless_probes_as_rejects():
    # 5 genuine calls, one without a usable face (no distance); 4 impostor calls
    r = door_run.rates_at(0.8, [0.5, 0.7, 0.9, 1.2], 5, [0.6, 1.0, 1.1, 1.3], 4)
    assert r == {"threshold": 0.8, "frr": 0.6, "far": 0.25}   # 0.9, 1.2 and the faceless one rejected
    assert door_run.rates_at(2.0, [0.5], 2, [], 0) == {"threshold": 2.0, "frr": 0.5, "far": 0.0}


def test_retake_shows_another_photo_of_the_same_person_never_the_enrolment_one():
    photos = ["p0", "p1", "p2", "p3", "p4", "p5"]      # p0 enrolled, p1-p3 probes (probes=3)
    assert door_run.retake_photo(photos, "p2", 3) == "p4"   # an unused photo first
    assert door_run.retake_photo(photos[:4], "p2", 3) == "p1"   # none unused: another probe
    assert door_run.retake_photo(photos[:4], "p1", 3) == "p2"
    assert door_run.retake_photo(["p0", "p1"], "p1", 3) is None   # nothing else to show
    assert door_run.retake_photo(["p0", "p1", "p2"], "p1", 1) == "p2"
    assert "NO_MATCH" not in door_run.RETAKE_REASONS and "MULTIPLE_FACES" in door_run.RETAKE_REASONS


def test_wilson_interval_contains_the_rate_and_narrows_with_n():
    lo, hi = door_run.wilson(4, 100)
    assert lo < 0.04 < hi and lo > 0
    lo2, hi2 = door_run.wilson(40, 1000)
    assert lo < lo2 < 0.04 < hi2 < hi
    assert door_run.wilson(0, 50)[0] == 0.0 and door_run.wilson(0, 0) == [0.0, 1.0]


def test_cluster_cuts_follow_the_encoders_own_distance_scale():
    spec = importlib.util.spec_from_file_location("cluster_tune", Path(__file__).resolve().parents[2] / "bench/cluster_tune.py")
    cluster_tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cluster_tune)
    # s96fm2 (Verify threshold 0.7647) was cut at 1.1; a dlib-like encoder's threshold is ~0.30
    wide = cluster_tune.cut_grid(0.7647)
    assert wide[0] == pytest.approx(0.688, abs=1e-3) and wide[-1] == pytest.approx(1.682, abs=2e-3)
    assert any(abs(c - 1.1) < 0.01 for c in wide)
    narrow = cluster_tune.cut_grid(0.2986)
    assert narrow[0] == pytest.approx(0.269, abs=1e-3) and max(narrow) < 0.66
    assert narrow == sorted(set(narrow)) and len(narrow) > 40


def test_cluster_cut_takes_the_tightest_within_one_standard_error():
    spec = importlib.util.spec_from_file_location("cluster_tune", Path(__file__).resolve().parents[2] / "bench/cluster_tune.py")
    cluster_tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cluster_tune)
    methods = {"complete@0.3": ("complete", 0.30), "complete@0.35": ("complete", 0.35), "complete@0.4": ("complete", 0.40),
               "complete@0.45": ("complete", 0.45), "average@0.3": ("average", 0.30)}
    scores = {"complete@0.3": [0.70, 0.72], "complete@0.35": [0.955, 0.975], "complete@0.4": [0.96, 0.98],
              "complete@0.45": [0.80, 0.82], "average@0.3": [0.99, 0.99]}
    # only the top method's own cuts are candidates
    assert cluster_tune.one_se_cut(methods, scores, "average@0.3") == "average@0.3"
    # complete@0.4 scores 0.97 (s.e. 0.01): 0.35 (0.965) is within one s.e. and tighter; 0.3 is not
    assert cluster_tune.one_se_cut(methods, scores, "complete@0.4") == "complete@0.35"
    # with no spread at the top, nothing below it qualifies
    tight = scores | {"complete@0.4": [0.97, 0.97]}
    assert cluster_tune.one_se_cut(methods, tight, "complete@0.4") == "complete@0.4"


def test_claims_decided_on_a_photo_of_several_faces_are_told_by_their_stages():
    def answer(*stages):
        return {"stages": [{"name": n, "outcome": o} for n, o in stages]}
    one = answer(("daynight", "day"), ("detect", "OK"), ("encode", "OK"), ("match", "OK"))
    central = answer(("detect", "MULTIPLE_FACES"), ("encode", "OK"), ("match", "OK"))
    refused = answer(("detect", "MULTIPLE_FACES"))
    assert [door_run.detected(r) for r in (one, central, refused, answer())] == ["OK", "MULTIPLE_FACES",
                                                                                 "MULTIPLE_FACES", None]
    assert [door_run.judged_on_a_photo_of_several(r) for r in (one, central, refused)] == [False, True, False]
