"""bench/accuracy.py: which face of a photo the peer (face_recognition) is scored on."""
import importlib.util
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    saved = dict(os.environ)     # the bench pins its thread counts in os.environ when loaded
    try:
        spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "bench" / "accuracy.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_the_peer_is_scored_on_its_first_face_as_documented_and_on_the_largest_and_the_central_beside_it():
    peer_faces = _bench().peer_faces
    small, big = (10, 60, 60, 10), (80, 230, 230, 80)      # (top, right, bottom, left)
    assert peer_faces([small, big], (250, 250, 3)) == {"first": small, "largest": big, "central": big}
    assert peer_faces([big, small], (250, 250, 3)) == {"first": big, "largest": big, "central": big}
    assert peer_faces([small], (250, 250, 3)) == {"first": small, "largest": small, "central": small}
    # a larger face at the edge: the largest rule takes it, facegate's rule the one in the middle
    middle, edge = (70, 170, 170, 70), (60, 250, 180, 140)
    assert peer_faces([edge, middle], (250, 250, 3)) == {"first": edge, "largest": edge, "central": middle}


def test_a_photo_without_a_face_is_scored_from_its_centre_crop_for_every_rule():
    centre = (56, 193, 193, 56)                             # 0.55 of 250 = 137 px, centred
    assert _bench().peer_faces([], (250, 250, 3)) == {"first": centre, "largest": centre, "central": centre}


def test_the_peers_thresholds_are_calibrated_for_facegates_targets_and_judged_by_the_same_rule():
    import numpy as np

    from encoder.pair_eval import thresholds_on_pairs

    bench = _bench()
    rng = np.random.default_rng(0)
    # calibration pairs: 2,000 impostors spread over 0.5..1.5, 200 genuine pairs over 0.1..0.6
    dist = np.concatenate([rng.uniform(0.5, 1.5, 2000), rng.uniform(0.1, 0.6, 200)])
    same = np.concatenate([np.zeros(2000, bool), np.ones(200, bool)])
    fg_meta = {"threshold": 0.4, "threshold_info": {"target_far": 1e-2, "pair_list": "pairs_calib.tsv"},
               "identify_threshold": 0.3, "identify_threshold_info": {"target_far": 1e-3, "pair_list": "pairs_calib.tsv"}}
    meta = bench.calibrated_like(fg_meta, dist, same, "pairs_calib.tsv")
    imp = np.sort(dist[~same])
    assert imp[19] <= meta["threshold"] < imp[20]              # 20 of 2,000 impostors admitted: FAR 1e-2
    assert imp[1] <= meta["identify_threshold"] < imp[2]       # 2 of 2,000: FAR 1e-3
    back = thresholds_on_pairs(meta, dist, same)               # on its own calibration pairs: the targets
    assert back["verify"]["far"] == 0.01 and back["identify"]["far"] == 0.001
    assert back["verify"]["target_far"] == 0.01 and back["verify"]["calibrated_on"] == "pairs_calib.tsv"
    # on a population whose impostors sit closer, the same thresholds admit more of them
    shifted = thresholds_on_pairs(meta, np.concatenate([dist[~same] - 0.2, dist[same]]), same)
    assert shifted["verify"]["far"] > 0.05 and shifted["verify"]["far_over_target"] > 5
    assert bench.calibrated_like({"threshold": 0.4}, dist, same, "x") == {}     # no target recorded: nothing
