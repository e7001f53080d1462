"""The "dlib150" geometry (encoder/align.py): dlib's chip read straight from the photo, on real
faces: the same chip at any photo size, black past a tight photo's edge, the face_recognition
library's own chip where both find the same face, and the encoders that read it."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

dlib = pytest.importorskip("dlib", reason="dlib-bin is not installed (./dev setup installs it)")

from encoder.align import AlignConfig, FaceAligner, box_from_points, landmark_model_path  # noqa: E402
from encoder.augment import AugmentConfig, augment_pixels, degrade_pixels  # noqa: E402
from encoder.backbones import ChipResNet  # noqa: E402
from encoder.images import decode_image  # noqa: E402


@pytest.fixture(scope="module")
def chip_aligner():
    return FaceAligner(AlignConfig.for_geometry("dlib150"))


@pytest.fixture(scope="module")
def gul(lfw):
    return decode_image(lfw / "images/Abdullah_Gul/Abdullah_Gul_0013.jpg")


def _mean_abs(a, b):
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_the_chip_is_dlibs_chip_of_dlibs_landmarks(chip_aligner, gul):
    """Where the box dlib's shape model starts from is its own detector's, the chip is the
    library's chip to within the landmark model's start: the face_recognition pipeline's own."""
    a = chip_aligner.align(gul)
    assert a.ok and a.crop.shape == (150, 150, 3)
    hog = dlib.get_frontal_face_detector()(gul, 1)
    assert len(hog) == 1
    shape = dlib.shape_predictor(str(landmark_model_path()))(gul, hog[0])
    native = np.asarray(dlib.get_face_chip(gul, shape, size=150, padding=0.25))
    assert _mean_abs(a.crop, native) < 6.0       # grey levels: a pixel or so of landmark difference
    assert _mean_abs(np.roll(native, 8, axis=1), native) > 10.0   # the test can tell a misplaced chip


def test_the_chip_does_not_depend_on_the_photos_size(chip_aligner, gul):
    """Read from the photo with a low-pass before any downscale: the same face photographed 4x
    larger (or 2x smaller) gives about the same chip."""
    base = chip_aligner.align(gul).crop
    large = chip_aligner.align(cv2.resize(gul, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)).crop
    small = chip_aligner.align(cv2.resize(gul, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)).crop
    assert _mean_abs(base, large) < 6.0
    assert _mean_abs(base, small) < 12.0
    # aliasing would show as fine texture the base chip does not have: compare the high frequencies
    lap = [float(np.abs(cv2.Laplacian(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), cv2.CV_32F)).mean()) for c in (base, large)]
    assert lap[1] < 1.5 * lap[0]


def test_a_tight_photo_leaves_black_past_its_edge_not_streaks(chip_aligner, gul):
    """An ID photo cut at the hairline: the chip reaches past the photo's top edge, and that part
    is black (as dlib's training chips are), not the top row smeared downward."""
    a = chip_aligner.align(gul)
    y0 = int(a.landmarks[:2, 1].min() - 0.6 * (a.landmarks[3:, 1].mean() - a.landmarks[:2, 1].mean()))
    tight = np.ascontiguousarray(gul[y0:])
    t = chip_aligner.align(tight)
    assert t.ok
    top = t.crop[:8]
    assert top.max() == 0                      # black rows past the edge
    assert t.crop[75:].mean() > 40             # and the face below them


def test_the_box_from_mtcnns_points_is_dlibs_detectors_box(chip_aligner, gul):
    a = chip_aligner.align(gul)
    cx, cy, side = box_from_points(a.landmarks)
    d = dlib.get_frontal_face_detector()(gul, 1)[0]
    assert abs(cx - (d.left() + d.right()) / 2) < 0.15 * side
    assert abs(cy - (d.top() + d.bottom()) / 2) < 0.15 * side
    assert 0.8 < side / d.width() < 1.25


def test_no_face_falls_back_to_the_chip_of_the_centre(chip_aligner):
    grey = np.full((120, 100, 3), 128, np.uint8)
    assert chip_aligner.align(grey).crop is None
    assert chip_aligner.fallback_crop(grey).shape == (150, 150, 3)


def test_an_unknown_geometry_is_refused():
    with pytest.raises(ValueError, match="unknown geometry"):
        AlignConfig(geometry="dlib68")


def test_a_chip_reading_backbone_takes_the_chip_as_it_is():
    net = ChipResNet(chip_from_crop112=None)
    x = torch.rand(2, 3, 150, 150)
    assert net.reads_chip and torch.equal(net.chips(x), x)
    with pytest.raises(ValueError, match="150 px chips"):
        net.chips(torch.rand(2, 3, 112, 112))
    assert not ChipResNet().reads_chip


def test_degradations_apart_from_the_clean_view(gul, chip_aligner):
    """The clean view a teacher sees and the degraded one a student sees come from one draw of
    pose and colour; a tight view is black outside its box."""
    crops = torch.from_numpy(np.stack([chip_aligner.align(gul).crop] * 8))
    cfg = AugmentConfig(border="zeros", tight=1.0, low_res=0.0, dark=0.0, noise=0.0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    clean = augment_pixels(crops, 150, cfg, g1, degrade=False)
    both = augment_pixels(crops, 150, cfg, g2)
    degraded = degrade_pixels(clean, cfg, torch.Generator().manual_seed(5))
    assert clean.shape == both.shape == degraded.shape == (8, 3, 150, 150)
    inside = degraded > 0
    assert torch.equal(degraded[inside], clean[inside])                  # only blacked out, nothing else
    assert (degraded == 0).float().mean() > (clean == 0).float().mean() + 0.02
    lowres = degrade_pixels(clean, AugmentConfig(low_res=1.0, low_res_px=(40, 40), low_res_up="bicubic", dark=1.0,
                                                 noise=0.0), torch.Generator().manual_seed(1))
    assert not lowres.isnan().any() and lowres.min() >= 0     # bicubic overshoot clamped before the gamma


def test_the_checkpoint_says_which_geometry_and_the_embedder_aligns_so(tmp_path):
    from encoder.checkpoint import align_config_for, save_checkpoint
    from encoder.embedder import Embedder
    from encoder.face_encoder import EncoderConfig, FaceEncoder

    cfg = EncoderConfig(backbone="chip_resnet", backbone_args={"chip_from_crop112": None}, input_size=150,
                        dropout=0.0, head="pool")
    assert align_config_for(cfg).geometry == "dlib150"
    assert align_config_for(EncoderConfig()).geometry == "arcface112"
    ckpt = save_checkpoint(tmp_path / "e.pt", FaceEncoder(cfg).eval(), name="t")
    assert ckpt["preprocessing"]["geometry"] == "dlib150" and ckpt["preprocessing"]["crop_size"] == 150
    emb = Embedder.from_checkpoint(tmp_path / "e.pt")
    assert emb.aligner.config.geometry == "dlib150"
    v = emb.embed_crops(np.zeros((1, 150, 150, 3), np.uint8))
    assert v.shape == (1, 128) and abs(float(np.linalg.norm(v)) - 1) < 1e-3
