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


@pytest.mark.slow
def test_blockwise_targets_are_the_teachers_blocks_and_a_copy_of_the_teacher_scores_zero(photos, aligner):
    """Blockwise distillation pairs each student block with the teacher's block of the same
    place: a student that holds dlib's weights reproduces every target (the loss is float
    error), an untrained one is far from all of them, and the targets are the teacher's."""
    from encoder.face_encoder import EncoderConfig, FaceEncoder, preprocess
    from encoder.train import blockwise_loss

    crops = np.stack([aligner.align(img).crop for img in photos])
    teacher = InLoopTeacher()
    maps, d = teacher.activations(torch.from_numpy(crops).permute(0, 3, 1, 2).float())
    assert len(maps) == 1 + 14 and maps[0].shape[1:] == (32, 35, 35) and maps[-1].shape[1:] == (256, 2, 2)
    assert torch.allclose(d, teacher.descriptors(torch.from_numpy(crops).permute(0, 3, 1, 2).float()), atol=1e-5)
    x = preprocess(crops, 112)
    copy = chip_encoder_from_dlib(EncoderConfig(**CHIP_CONFIG)).eval()
    with torch.no_grad():
        loss, parts, _ = blockwise_loss(copy, x, maps, d)
        assert loss < 1e-8 and parts["bw_worst"] < 1e-7
        chained, _, e = blockwise_loss(copy, x, maps, d, chained=True)    # fed its own maps: the same maps
        assert chained < 1e-8 and torch.allclose(e, copy(x), atol=1e-5)
        centred, _, _ = blockwise_loss(chip_encoder_from_dlib(EncoderConfig(**CHIP_CONFIG), center=d.mean(0)).eval(),
                                    x, maps, d, descriptor_mean=d.mean(0))
        assert centred < 1e-8
        fresh, fresh_parts, _ = blockwise_loss(FaceEncoder(EncoderConfig(**CHIP_CONFIG)).eval(), x, maps, d)
        assert fresh > 0.3 and fresh_parts["bw_stem"] > 0.3


@pytest.mark.slow
def test_blockwise_training_steps_move_every_block_toward_the_teacher(photos, aligner):
    """A few steps of the blockwise objective alone (no end-to-end pass) on real crops lower it."""
    from encoder.face_encoder import EncoderConfig, FaceEncoder, preprocess
    from encoder.train import blockwise_loss

    torch.manual_seed(0)
    crops = np.stack([aligner.align(img).crop for img in photos])
    maps, d = InLoopTeacher().activations(torch.from_numpy(crops).permute(0, 3, 1, 2).float())
    model = FaceEncoder(EncoderConfig(**CHIP_CONFIG)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = preprocess(crops, 112)
    losses = []
    for _ in range(8):
        loss, _, _ = blockwise_loss(model, x, maps, d, chained=len(losses) % 2 == 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_blockwise_needs_the_teachers_topology_and_its_in_loop_activations():
    from encoder.face_encoder import EncoderConfig
    from encoder.train import TrainConfig

    with pytest.raises(ValueError, match="w_blockwise needs teacher_in_loop"):
        TrainConfig(encoder=EncoderConfig(**CHIP_CONFIG), w_blockwise=1.0)
    with pytest.raises(ValueError, match="chip_resnet backbone"):
        TrainConfig(encoder=EncoderConfig(backbone="face_resnet", input_size=96), w_blockwise=1.0, teacher_in_loop=True)
    cfg = TrainConfig(encoder=EncoderConfig(**CHIP_CONFIG), w_blockwise=1.0, teacher_in_loop=True,
                      w_triplet=0.0, w_distill=0.0, w_relation=0.0)
    assert not cfg.end_to_end
    with pytest.raises(ValueError, match="blockwise_inputs"):
        TrainConfig(encoder=EncoderConfig(**CHIP_CONFIG), w_blockwise=1.0, teacher_in_loop=True, blockwise_inputs="x")
