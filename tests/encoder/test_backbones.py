"""Backbone registry, FaceEncoder output and preprocessing."""
import numpy as np
import pytest
import torch

from encoder.backbones import BACKBONES, FaceResNet, InceptionResnetV1Backbone, create_backbone
from encoder.face_encoder import MEAN, STD, EncoderConfig, FaceEncoder, preprocess


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_registry_names():
    assert sorted(BACKBONES) == ["chip_resnet", "face_resnet", "inception_resnet_v1"]


def test_unknown_backbone_lists_known_names():
    with pytest.raises(ValueError, match="unknown backbone 'resnet50'") as e:
        create_backbone("resnet50")
    assert "face_resnet" in str(e.value) and "inception_resnet_v1" in str(e.value)


def test_create_backbone_passes_kwargs():
    b = create_backbone("face_resnet", widths=(8, 16), depths=(1, 1), stem_width=4)
    assert isinstance(b, FaceResNet)
    assert b.out_channels == 16
    # stem /2, stage 2 /2: 4x downsampling, rounded up
    assert b.out_size(32) == 8
    assert b.out_size(33) == 9


def test_face_resnet_widths_and_depths_must_match():
    with pytest.raises(ValueError, match="differ in length"):
        FaceResNet(widths=(8, 16), depths=(1,))


def test_face_resnet_default_map_is_4x4_at_64():
    b = create_backbone("face_resnet").eval()
    assert b.out_channels == 256 and b.out_size(64) == 4
    with torch.no_grad():
        assert b(torch.randn(1, 3, 64, 64)).shape == (1, 256, 4, 4)
        # odd input: out_size agrees with the real map (65 -> 33 -> 17 -> 9 -> 5)
        assert b(torch.randn(1, 3, 65, 65)).shape[-1] == b.out_size(65) == 5


def test_default_encoder_gives_unit_128d_rows():
    enc = FaceEncoder().eval()
    assert enc.config == EncoderConfig()
    assert enc.head_fc.in_features == 256 * 4 * 4
    with torch.no_grad():
        y = enc(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 128)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    assert not torch.allclose(y[0], y[1])   # two different inputs, two different embeddings


def test_eval_mode_is_deterministic():
    enc = FaceEncoder().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), enc(x), atol=0, rtol=0)


def test_features_then_head_is_forward():
    enc = FaceEncoder().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = enc.forward_features(x)
        assert f.shape == (2, 256, 4, 4)
        torch.testing.assert_close(enc.forward_head(f), enc(x), atol=1e-6, rtol=0)


def test_embedding_dim_and_backbone_args_from_config():
    cfg = EncoderConfig(backbone_args={"widths": (8, 16), "depths": (1, 1), "stem_width": 8},
                        input_size=32, embedding_dim=16)
    enc = FaceEncoder(cfg).eval()
    assert enc.head_fc.in_features == 16 * 8 * 8
    with torch.no_grad():
        y = enc(torch.randn(3, 3, 32, 32))
    assert y.shape == (3, 16)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)


def test_config_to_dict():
    d = EncoderConfig().to_dict()
    assert d == {"backbone": "face_resnet", "backbone_args": {}, "input_size": 64,
                 "embedding_dim": 128, "dropout": 0.2, "head": "spatial"}


@pytest.mark.slow
def test_inception_resnet_v1_encoder():
    enc = FaceEncoder(EncoderConfig(backbone="inception_resnet_v1", input_size=160)).eval()
    assert isinstance(enc.backbone, InceptionResnetV1Backbone)
    assert enc.backbone.out_channels == 1792
    assert enc.backbone.out_size(160) == 3            # facenet's 3x3x1792 map at 160
    assert enc.head_fc.in_features == 1792 * 3 * 3
    with torch.no_grad():
        y = enc(torch.randn(2, 3, 160, 160))
    assert y.shape == (2, 128)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)


def test_preprocess_values_and_layout():
    crops = np.zeros((2, 4, 4, 3), np.uint8)
    crops[..., 0], crops[..., 1], crops[..., 2] = 255, 0, 200
    crops[1, 0, 3] = (10, 20, 30)          # one odd pixel: row 0, column 3 of the second crop
    x = preprocess(crops, input_size=4)
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.float32
    assert (MEAN, STD) == (127.5, 128.0)
    # (255 - 127.5)/128 = 0.99609375, (0 - 127.5)/128 = -0.99609375, (200 - 127.5)/128 = 0.56640625
    assert x[0, 0, 2, 1].item() == 0.99609375
    assert x[0, 1, 2, 1].item() == -0.99609375
    assert x[0, 2, 2, 1].item() == 0.56640625
    # the odd pixel lands at [1, :, 0, 3]: (10-127.5)/128, (20-127.5)/128, (30-127.5)/128
    assert x[1, :, 0, 3].tolist() == [-0.91796875, -0.83984375, -0.76171875]
    # everywhere else the two crops agree
    rest = torch.ones(4, 4, dtype=torch.bool)
    rest[0, 3] = False
    assert torch.equal(x[0][:, rest], x[1][:, rest])
    assert not torch.equal(x[0], x[1])


def test_preprocess_single_crop_and_tensor_input():
    crop = np.full((4, 4, 3), 255, np.uint8)
    x = preprocess(crop, input_size=4)
    assert x.shape == (1, 3, 4, 4)
    assert torch.equal(x, preprocess(torch.from_numpy(crop), input_size=4))
    assert torch.equal(x, torch.full((1, 3, 4, 4), 0.99609375))


def test_preprocess_resizes_112_to_input_size():
    crops = np.full((2, 112, 112, 3), 200, np.uint8)
    x = preprocess(crops, input_size=64)
    assert x.shape == (2, 3, 64, 64)
    # a flat image stays flat under an (antialiased) bilinear resize
    torch.testing.assert_close(x, torch.full((2, 3, 64, 64), 0.56640625), atol=1e-5, rtol=0)


def test_chip_resnet_has_dlibs_topology_and_a_pooled_head():
    enc = FaceEncoder(EncoderConfig(backbone="chip_resnet", input_size=112, dropout=0.0, head="pool")).eval()
    convs = enc.backbone.convs
    assert len(convs) == 29 and convs[0].kernel_size == (7, 7) and convs[0].padding == (0, 0)
    assert [c.stride[0] for c in convs].count(2) == 5          # the stem and four downsampling blocks
    assert enc.head_fc.in_features == 256 and not hasattr(enc, "head_bn")
    with torch.no_grad():
        e = enc(torch.randn(3, 3, 112, 112))
    assert e.shape == (3, 128) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)


def test_chip_resnet_reads_dlibs_chip_out_of_the_crop():
    """The chip is a fixed zoom into the aligned crop: a crop's pixel lands where the transform says."""
    b = create_backbone("chip_resnet")
    crop = torch.zeros(1, 3, 112, 112)
    crop[..., 60, 40] = 1.0                                     # one bright pixel at crop (x=40, y=60)
    chip = b.chips(crop)[0, 0]
    y, x = divmod(int(chip.argmax()), chip.shape[1])
    m = np.array(b.chip_from_crop112)
    ex, ey = m @ np.array([40, 60, 1.0])
    assert chip.shape == (150, 150) and abs(x - ex) <= 1 and abs(y - ey) <= 1
    # the same face at another crop size gives the same chip
    big = torch.nn.functional.interpolate(crop, size=(224, 224), mode="nearest")
    chip2 = b.chips(big)[0, 0]
    assert divmod(int(chip2.argmax()), 150) in [(y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def test_unknown_head_is_refused():
    with pytest.raises(ValueError, match="unknown head 'gap'"):
        FaceEncoder(EncoderConfig(head="gap"))
