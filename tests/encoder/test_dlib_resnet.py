"""dlib's face ResNet read into PyTorch (the in-loop training teacher): equal to dlib itself on
real faces, and usable on facegate's own aligned crops. Needs the teacher extra (./dev test
installs it); without it these tests skip, saying so."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

dlib = pytest.importorskip("dlib", reason="the teacher extra is not installed (./dev teacher)")
frm = pytest.importorskip("face_recognition_models", reason="the teacher extra is not installed (./dev teacher)")

from encoder.dlib_resnet import (DlibResNet, InLoopTeacher, chip_encoder_from_dlib, crop_to_chip_theta,  # noqa: E402
                                 default_dat, read_dlib_layers)
from encoder.images import decode_image  # noqa: E402

PHOTOS = ["Abdullah_Gul/Abdullah_Gul_0013.jpg", "Abdullah_Gul/Abdullah_Gul_0014.jpg",
          "Reese_Witherspoon/Reese_Witherspoon_0003.jpg", "Colin_Powell/Colin_Powell_0001.jpg"]


@pytest.fixture(scope="module")
def port():
    return DlibResNet.from_dat(default_dat())


@pytest.fixture(scope="module")
def photos(lfw):
    return [decode_image(str(lfw / "images" / p)) for p in PHOTOS]


def test_the_dat_holds_dlibs_29_convolutions_and_its_128d_layer():
    layers = read_dlib_layers(default_dat())
    kinds = [k for k, _, _ in layers]
    assert kinds.count("con_4") == 29 and kinds.count("affine_") == 29 and kinds[-1] == "fc_2"
    assert layers[0][2] == [32, 7, 7, 2, 2, 0, 0]        # the 7x7/2 stem, unpadded as dlib pads stride 2
    assert layers[-1][2] == [128, 256]


def test_port_gives_dlibs_own_descriptors_on_real_faces(port, photos):
    shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    detect = dlib.get_frontal_face_detector()
    chips, ref = [], []
    for img in photos:
        s = shape(img, detect(img, 1)[0])
        chips.append(dlib.get_face_chip(img, s, size=150, padding=0.25))
        ref.append(np.asarray(rec.compute_face_descriptor(img, s, 0)))
    with torch.no_grad():
        out = port(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()).numpy()
    assert np.abs(out - np.stack(ref)).max() < 1e-4
    assert np.linalg.norm(out[0] - out[1]) < 0.6 < np.linalg.norm(out[0] - out[2])   # dlib's own threshold


def test_teacher_on_facegate_crops_agrees_with_its_native_alignment(photos, aligner):
    from encoder.teacher import DlibTeacher

    native_teacher, teacher = DlibTeacher(), InLoopTeacher()
    aligned = [aligner.align(img) for img in photos]
    native = np.stack([native_teacher.embed(img, a.box) for img, a in zip(photos, aligned)])
    crops = torch.from_numpy(np.stack([a.crop for a in aligned])).permute(0, 3, 1, 2).float()
    mine = teacher.raw(crops).numpy()
    cos = (mine * native).sum(1)
    assert cos.min() > 0.97, cos                          # held-out DevTrain people: 0.992 on average
    d = np.linalg.norm(mine[:, None] - mine[None], axis=2)
    assert d[0, 1] < min(d[0, 2], d[0, 3], d[1, 2], d[1, 3])   # the same man's two photos are nearest


def test_a_file_that_is_not_dlibs_resnet_is_refused(tmp_path):
    bad = tmp_path / "not_a_model.dat"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not dlib's face ResNet"):
        DlibResNet.from_dat(bad)


def test_centred_teacher_output_is_unit_length():
    teacher = InLoopTeacher()
    x = torch.rand(3, 3, 112, 112) * 255
    teacher.center = teacher.raw(x).mean(0)
    assert torch.allclose(teacher(x).norm(dim=1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(teacher(x), F.normalize(teacher.raw(x), dim=1))


CHIP_CONFIG = dict(backbone="chip_resnet", input_size=112, dropout=0.0, head="pool")


def test_an_encoder_started_from_dlibs_weights_computes_the_teacher(photos, aligner):
    """The folds (affine layers into convolutions, facegate's normalisation into the first one)
    are exact: on real aligned crops the student is the teacher, before any training."""
    from encoder.backbones import CHIP150_FROM_CROP112
    from encoder.dlib_resnet import CROP112_TO_CHIP
    from encoder.face_encoder import EncoderConfig, preprocess

    assert np.allclose(np.array(CHIP150_FROM_CROP112), CROP112_TO_CHIP)   # one geometry, two places
    crops = np.stack([aligner.align(img).crop for img in photos])
    teacher = InLoopTeacher()
    pixels = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    d = teacher.descriptors(pixels)
    model = chip_encoder_from_dlib(EncoderConfig(**CHIP_CONFIG)).eval()
    centred = chip_encoder_from_dlib(EncoderConfig(**CHIP_CONFIG), center=d.mean(0)).eval()
    with torch.no_grad():
        x = preprocess(crops, 112)
        assert torch.allclose(model(x), F.normalize(d, dim=1), atol=1e-5)
        assert torch.allclose(centred(x), F.normalize(d - d.mean(0), dim=1), atol=1e-5)
    assert torch.allclose(model.backbone.theta(112), crop_to_chip_theta(112), atol=1e-6)


def test_dlibs_weights_fit_only_dlibs_network():
    from encoder.face_encoder import EncoderConfig

    with pytest.raises(ValueError, match="chip_resnet backbone with a pool head"):
        chip_encoder_from_dlib(EncoderConfig(backbone="face_resnet", input_size=96))
    with pytest.raises(ValueError, match="dlib's stages"):
        chip_encoder_from_dlib(EncoderConfig(**{**CHIP_CONFIG, "backbone_args": {"stages": ((32, 2, False),)}}))


def test_training_can_start_from_dlibs_weights_and_the_checkpoint_keeps_them(tmp_path):
    from encoder.checkpoint import load_checkpoint, save_checkpoint
    from encoder.face_encoder import EncoderConfig, FaceEncoder
    from encoder.train import TrainConfig, init_weights

    cfg = TrainConfig(encoder=EncoderConfig(**CHIP_CONFIG), init_from="dlib")
    model = FaceEncoder(cfg.encoder)
    center = torch.randn(128)
    init_weights(model, cfg, center=center)
    assert torch.equal(model.head_fc.bias, -center)
    save_checkpoint(tmp_path / "c.pt", model.eval(), name="chip", half=False)
    loaded, meta = load_checkpoint(tmp_path / "c.pt")
    assert meta["config"]["head"] == "pool" and meta["config"]["backbone"] == "chip_resnet"
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
