"""Alignment reasons on real photos (LFW, AT&T, a day/night scene)."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from encoder.align import TEMPLATE_112, centre_crop, choose_face, similarity_transform
from encoder.images import decode_image
from facegate.reasons import Reason


@pytest.fixture(scope="module")
def gul(lfw):
    return decode_image(lfw / "images/Abdullah_Gul/Abdullah_Gul_0013.jpg")


@pytest.fixture(scope="module")
def reese(lfw):
    return decode_image(lfw / "images/Reese_Witherspoon/Reese_Witherspoon_0003.jpg")


def _upright(landmarks):
    eyes_y = landmarks[:2, 1].mean()
    mouth_y = landmarks[3:, 1].mean()
    return mouth_y - eyes_y > 0.5 * np.linalg.norm(landmarks[0] - landmarks[1])


def test_similarity_transform_recovers_a_known_transform():
    ang, s, t = np.deg2rad(20), 1.7, np.array([5.0, -3.0])
    rot = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    src = TEMPLATE_112.astype(np.float64)
    m = similarity_transform(src, src @ rot.T + t)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-4)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-3)


def test_lfw_photo_aligns_to_the_template(aligner, gul):
    a = aligner.align(gul)
    assert a.ok and a.faces == 1
    assert a.crop.shape == (112, 112, 3) and a.crop.dtype == np.uint8
    side = a.box[2] - a.box[0]
    assert 70 < side < 160, side                      # LFW faces are ~100 px in 250x250
    assert _upright(a.landmarks)
    # the landmarks, mapped by the alignment, land on the template
    m = similarity_transform(a.landmarks, TEMPLATE_112)
    mapped = a.landmarks @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - TEMPLATE_112).max() < 6.0


def test_small_id_card_scans_align(aligner, gul, data_dir):
    box = aligner.align(gul).box.astype(int)
    scan = cv2.resize(gul[box[1]:box[3], box[0]:box[2]], (100, 100))   # the face fills the frame
    assert aligner.align(scan).ok
    att = decode_image(data_dir / "faces/att/s5/3.png")                 # 92x112 grey, face filling it
    assert att.shape == (112, 92, 3)
    assert aligner.align(att).ok


@pytest.mark.slow
def test_no_face_in_a_scene_or_noise(aligner, data_dir):
    scene = sorted((data_dir / "daynight/training/day").glob("*.jpg"))[0]
    assert aligner.align(decode_image(scene)).reason is Reason.NO_FACE
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    r = aligner.align(noise)
    assert r.reason is Reason.NO_FACE and r.crop is None


def test_two_faces_of_similar_size_are_multiple_faces(aligner, gul, reese):
    r = aligner.align(np.concatenate([gul, reese], axis=1))
    assert r.reason is Reason.MULTIPLE_FACES and r.faces == 2
    assert r.crop is not None  # the chosen face is still there for evaluation


def test_a_small_background_face_does_not_count(aligner, gul, reese):
    canvas = np.concatenate([gul, np.full_like(gul, 128)], axis=1)
    canvas[180:230, 400:450] = cv2.resize(reese, (50, 50))   # a passer-by, far smaller
    assert aligner.align(canvas).ok


def test_a_far_away_face_is_too_small(aligner, gul):
    canvas = np.full((400, 400, 3), 128, np.uint8)
    canvas[165:235, 165:235] = cv2.resize(gul, (70, 70))      # face box ~28 px
    r = aligner.align(canvas)
    assert r.reason is Reason.FACE_TOO_SMALL and "px" in r.detail


def test_exif_orientation_is_honoured(aligner, gul):
    stored = np.rot90(gul, 1).copy()          # the sensor's pixels, lying on their side
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6                          # "rotate 90 degrees clockwise to display"
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    upright = decode_image(buf.getvalue())
    assert upright.shape == gul.shape
    assert np.abs(upright.astype(int) - gul.astype(int)).mean() < 6
    a = aligner.align(upright)
    assert a.ok and _upright(a.landmarks)


def test_centre_crop_is_the_middle_of_the_photo(gul):
    c = centre_crop(gul, 112)
    assert c.shape == (112, 112, 3)
    side = round(250 * 0.55)
    y0 = (250 - side) // 2
    ref = cv2.resize(gul[y0:y0 + side, y0:y0 + side], (112, 112), interpolation=cv2.INTER_AREA)
    assert np.array_equal(c, ref)


def test_a_face_cut_off_by_the_frame_is_not_a_second_person(aligner, lfw):
    # Bill_Paxton_0001: a second face at the bottom-right corner, half outside the 250x250 crop
    img = decode_image(lfw / "images/Bill_Paxton/Bill_Paxton_0001.jpg")
    r = aligner.align(img)
    assert r.faces == 2 and r.ok
    assert r.box[0] < 125 < r.box[2]            # the central face is the one chosen


def test_the_chosen_face_is_judged_by_what_the_photo_shows_of_it():
    # MTCNN's box of a face at the frame's right edge runs far outside the 250 x 250 photo; by its
    # full box it is the largest face, but only a strip of it is in the photo
    boxes = np.array([[183, 62, 371, 258], [84, 67, 172, 183]], np.float32)
    assert choose_face(boxes, 250, 250) == 1
    # inside the frame the rule is unchanged: the larger of two central faces, the central one of
    # two of the same size
    assert choose_face(np.array([[60, 60, 120, 120], [100, 90, 200, 190]], np.float32), 250, 250) == 1
    assert choose_face(np.array([[0, 0, 80, 80], [85, 85, 165, 165]], np.float32), 250, 250) == 1


@pytest.mark.parametrize("photo", ["Winona_Ryder/Winona_Ryder_0015.jpg", "Wendy_Selig/Wendy_Selig_0001.jpg"])
def test_a_bystander_cut_off_by_the_frame_is_not_chosen_over_the_person_in_the_middle(aligner, lfw, photo):
    # two DevTest photos where a second face, mostly outside the frame, once won the choice
    r = aligner.align(decode_image(lfw / "images" / photo))
    assert r.faces == 2 and r.ok
    assert r.box[0] < 125 < r.box[2] and r.box[1] < 125 < r.box[3]


@pytest.mark.slow
def test_a_large_photo_is_searched_downscaled_and_aligned_from_the_full_photo(aligner, gul):
    big = cv2.resize(gul, (2500, 2500), interpolation=cv2.INTER_CUBIC)        # 10x: over detect_max_side
    small, large = aligner.align(gul), aligner.align(big)
    assert small.ok and large.ok and large.crop.shape == small.crop.shape
    np.testing.assert_allclose(large.landmarks / 10, small.landmarks, atol=2.0)
    assert np.abs(large.crop.astype(int) - small.crop.astype(int)).mean() < 12


def test_a_strip_too_thin_for_the_detector_once_downscaled_has_no_face(aligner):
    strip = np.random.default_rng(0).integers(0, 256, (600, 60000, 3), dtype=np.uint8)
    assert aligner.align(strip).reason is Reason.NO_FACE            # 1280 x 13 after downscaling


def _searched_sizes(aligner, monkeypatch):
    """The (h, w) of every image MTCNN is run on from now on."""
    sizes = []
    run = aligner._detect
    monkeypatch.setattr(aligner, "_detect", lambda img: sizes.append(img.shape[:2]) or run(img))
    return sizes


def test_an_id_photo_is_searched_small_first_and_finds_the_same_face(aligner, gul, monkeypatch):
    full = aligner.align(gul)
    sizes = _searched_sizes(aligner, monkeypatch)
    first = aligner.align(gul, id_photo=True)
    assert sizes == [(80, 80)]          # faces of >= 1/4 of 250 px searched at 20/62.5: one search, no other
    assert first.ok and first.faces == full.faces
    np.testing.assert_allclose(first.box, full.box, atol=12)
    np.testing.assert_allclose(first.landmarks, full.landmarks, atol=3)


def test_an_id_photo_whose_face_is_small_is_searched_in_full(aligner, gul, monkeypatch):
    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[170:320, 245:395] = cv2.resize(gul, (150, 150))      # a face of ~60 px: under 1/4 of 480
    full = aligner.align(canvas)
    sizes = _searched_sizes(aligner, monkeypatch)
    r = aligner.align(canvas, id_photo=True)
    assert len(sizes) == 2 and sizes[1] == (480, 640)             # the small search found nothing it may keep
    assert r.reason is full.reason and r.ok
    np.testing.assert_allclose(r.box, full.box)


def test_an_id_photo_beside_another_face_of_its_size_is_still_multiple_faces(aligner, gul, reese):
    r = aligner.align(np.concatenate([gul, reese], axis=1), id_photo=True)
    assert r.reason is Reason.MULTIPLE_FACES and r.faces == 2


def test_the_frozen_detector_finds_what_the_eager_one_finds(gul, reese, monkeypatch):
    """MTCNN's networks traced and frozen (FrozenNet): the same boxes, probabilities and points,
    bit for bit, on an ID photo's first search, a full search and a photo of two faces."""
    from encoder.align import AlignConfig, FaceAligner, FrozenNet

    config = AlignConfig.for_geometry("dlib150")
    frozen = FaceAligner(config)
    monkeypatch.setenv("FACEGATE_FROZEN", "0")
    eager = FaceAligner(config)
    assert isinstance(frozen.mtcnn.pnet, FrozenNet) and isinstance(frozen.mtcnn.onet, FrozenNet)
    assert not isinstance(eager.mtcnn.pnet, FrozenNet)
    pair = np.concatenate([gul, reese], axis=1)
    for img, kw in ((gul, {"id_photo": True}), (gul, {}), (pair, {}), (pair, {"min_face_px": 80})):
        a, b = frozen.detect(img, **kw), eager.detect(img, **kw)
        assert len(a[0]) >= 1 and len(a[0]) == len(b[0])
        for x, y in zip(a, b):
            assert np.array_equal(x, y)
