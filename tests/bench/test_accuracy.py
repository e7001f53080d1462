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
