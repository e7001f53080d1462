"""Detection sized to the site (FaceAligner.align's min_face_px): the photo is searched shrunk so
that the smallest face the site cares about is the detector's smallest, and the face is aligned
from the full-resolution photo."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from encoder.images import decode_image
from facegate.reasons import Reason


@pytest.fixture(scope="module")
def gul(lfw):
    return decode_image(lfw / "images/Abdullah_Gul/Abdullah_Gul_0013.jpg")


def _frame(photo: np.ndarray, side: int) -> np.ndarray:
    """A 640x480 camera frame with the photo, resized to side x side, in the middle."""
    frame = np.full((480, 640, 3), 110, np.uint8)
    y, x = (480 - side) // 2, (640 - side) // 2
    frame[y:y + side, x:x + side] = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    return frame


def test_the_search_scale_maps_the_sites_smallest_face_to_the_detectors(aligner):
    assert aligner.detect_scale(480, 640) == 1.0                     # the evaluation's rule: full size
    assert aligner.detect_scale(480, 640, 40) == 0.5                 # 40 px -> MTCNN's 20 px
    assert aligner.detect_scale(480, 640, 80) == 0.25
    assert aligner.detect_scale(480, 640, 20) == 1.0                 # never enlarged
    assert aligner.detect_scale(2000, 4000) == 1280 / 4000           # the large-photo bound
    assert aligner.detect_scale(1575, 1575, 40) == 640 / 1575        # sized to a site: a camera frame's side


@pytest.mark.slow
def test_a_kiosk_frame_searched_at_a_quarter_is_aligned_from_the_full_frame(gul):
    from encoder.embedder import Embedder

    emb = Embedder.from_checkpoint()                                 # the shipped encoder, its geometry
    frame = _frame(gul, 400)                                         # face box ~170 px
    full, kiosk = emb.align(frame), emb.align(frame, 80)
    assert full.ok and kiosk.ok
    # MTCNN's points come from a quarter-size search, in the frame's pixels; the chip is read from
    # the full frame, where dlib's shape model places the landmarks, so the crop barely moves
    np.testing.assert_allclose(kiosk.landmarks, full.landmarks, atol=6.0)
    assert np.abs(kiosk.crop.astype(int) - full.crop.astype(int)).mean() < 8
    a, b = emb.embed_crops(np.stack([full.crop, kiosk.crop]))
    assert np.linalg.norm(a - b) < 0.1                               # the threshold is ~0.37


def test_a_face_under_the_sites_minimum_is_too_small_or_not_found(aligner, gul):
    frame = _frame(gul, 150)                                         # face box ~60 px
    assert aligner.align(frame, 40).ok
    r = aligner.align(frame, 80)
    assert r.reason in (Reason.FACE_TOO_SMALL, Reason.NO_FACE)
    assert r.crop is None or "below 80 px" in r.detail


def test_id_photos_still_align_at_the_default_minimum(aligner, gul, data_dir):
    box = aligner.align(gul).box.astype(int)
    scan = cv2.resize(gul[box[1]:box[3], box[0]:box[2]], (100, 100))   # the face fills the frame
    assert aligner.align(scan, 40).ok
    assert aligner.align(decode_image(data_dir / "faces/att/s5/3.png"), 40).ok     # 92x112
    assert aligner.align(gul, 40).ok                                              # LFW, 250x250
