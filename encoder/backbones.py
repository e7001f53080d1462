"""Backbones for the face encoder, picked by name from a small registry (as timm's create_model).

Each backbone maps a B x 3 x S x S batch to a B x C x h x w feature map and states
`out_channels` and `out_size(input_size)`, so the 128-d head can be sized for it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with a shortcut (PReLU as in face ResNets)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.PReLU(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act2(y + self.shortcut(x))


class FaceResNet(nn.Module):
    """A small ResNet for CPU doors: a stride-2 stem, then stages that halve the map each time.

    With input 64 and widths (32, 64, 128, 256) the map at the head is 4x4: the head keeps
    where each feature is (eyes vs mouth), which a global average pool would throw away.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), depths: tuple[int, ...] = (1, 2, 2, 1),
                 stem_width: int = 32):
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError(f"widths {widths} and depths {depths} differ in length")
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, 2, 1, bias=False), nn.BatchNorm2d(stem_width), nn.PReLU(stem_width)
        )
        stages, cin = [], stem_width
        for i, (w, d) in enumerate(zip(widths, depths)):
            blocks = [BasicBlock(cin, w, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock(w, w) for _ in range(d - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.out_channels = cin
        self._downsample = 2 ** len(widths)  # stem /2, then stages 2.. each /2

    def out_size(self, input_size: int) -> int:
        return -(-input_size // self._downsample)

    def forward(self, x):
        return self.stages(self.stem(x))


class InceptionResnetV1Backbone(nn.Module):
    """facenet-pytorch's InceptionResnetV1 up to its last block (1792 channels): the GPU backbone.

    Randomly initialised: its pretrained weights are a download, which this project does not rely on."""

    def __init__(self):
        super().__init__()
        from facenet_pytorch import InceptionResnetV1

        net = InceptionResnetV1(pretrained=None, classify=False)
        self.body = nn.Sequential(
            net.conv2d_1a, net.conv2d_2a, net.conv2d_2b, net.maxpool_3a, net.conv2d_3b, net.conv2d_4a,
            net.conv2d_4b, net.repeat_1, net.mixed_6a, net.repeat_2, net.mixed_7a, net.repeat_3, net.block8,
        )
        self.out_channels = 1792

    def out_size(self, input_size: int) -> int:
        with torch.no_grad():
            return self.body(torch.zeros(1, 3, input_size, input_size)).shape[-1]

    def forward(self, x):
        return self.body(x)


# dlib's chip seen from facegate's aligned crop: crop pixel (x, y, 1) of a 112x112 crop -> chip
# pixel of its 150x150 chip (measured on LFW DevTrain photos; see dlib_resnet.CROP112_TO_CHIP)
CHIP150_FROM_CROP112 = ((1.57634, -0.01087, -12.3775), (0.01087, 1.57634, -36.7894))
DLIB_STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def chip_theta(crop_size: int, chip_size: int = 150, chip_from_crop112=CHIP150_FROM_CROP112) -> torch.Tensor:
    """affine_grid's theta (align_corners=False) that samples a chip_size chip out of a
    crop_size x crop_size aligned crop, given the 112-crop -> 150-chip pixel transform."""
    m = np.vstack([np.asarray(chip_from_crop112, dtype=np.float64).reshape(2, 3), [0, 0, 1]])
    # crop pixels -> 112-crop pixels -> 150-chip pixels -> this chip's pixels
    m = np.diag([chip_size / 150, chip_size / 150, 1.0]) @ m @ np.diag([112 / crop_size, 112 / crop_size, 1.0])
    n = chip_size
    out_px = np.array([[n / 2, 0, n / 2 - 0.5], [0, n / 2, n / 2 - 0.5], [0, 0, 1]])
    in_norm = np.array([[2 / crop_size, 0, 1 / crop_size - 1], [0, 2 / crop_size, 1 / crop_size - 1], [0, 0, 1]])
    return torch.tensor((in_norm @ np.linalg.inv(m) @ out_px)[:2], dtype=torch.float32)


def dlib_common_size(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two maps brought to dlib's common size for a residual sum: the larger size, the smaller
    zero-padded at the bottom/right and in channels."""
    if a.shape == b.shape:
        return a, b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
    a, b = (F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1])) for t in (a, b))
    return a, b


def dlib_residual_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's sum of two maps of different sizes (dlib_common_size)."""
    a, b = dlib_common_size(a, b)
    return a + b


class ChipResNet(nn.Module):
    """dlib's face ResNet topology (dnn_face_recognition_ex.cpp's `anet_type`), trainable, in
    front of it the resampling of dlib's chip out of facegate's aligned crop.

    The chip: a fixed similarity transform of the crop (`chip_from_crop112`, given for 112x112
    crops and 150x150 chips, scaled to the input and `chip_size`), bilinear, border pixels
    repeated; with `chip_from_crop112=None` the input is the chip itself (align.py's "dlib150"
    geometry, which reads it straight from the photo). Then a 7x7/2 convolution without padding, ReLU, a 3x3/2 max pool, and residual
    stages of two 3x3 convolutions per block; the first block of a downsampling stage has stride
    2 (no padding) and its shortcut is a 2x2 average pool. dlib's residual sum of maps of
    different sizes is kept: the smaller is zero-padded at the bottom/right and in channels.
    Batch norm is folded away (dlib's affine layers): every convolution has a bias. Its weights
    can start from dlib's own (dlib_resnet.chip_encoder_from_dlib; training only)."""

    def __init__(self, chip_size: int = 150, chip_from_crop112=CHIP150_FROM_CROP112,
                 stages=DLIB_STAGES, stem_width: int = 32):
        super().__init__()
        self.chip_size = int(chip_size)
        self.chip_from_crop112 = (None if chip_from_crop112 is None
                                  else np.asarray(chip_from_crop112, dtype=np.float64).reshape(2, 3))
        self.stages = tuple(tuple(s) for s in stages)
        convs, cin = [nn.Conv2d(3, stem_width, 7, stride=2)], stem_width
        for c, blocks, down in self.stages:
            for b in range(blocks):
                s = 2 if down and b == 0 else 1
                convs += [nn.Conv2d(cin, c, 3, stride=s, padding=0 if s == 2 else 1), nn.Conv2d(c, c, 3, padding=1)]
                cin = c
        self.convs = nn.ModuleList(convs)
        self.out_channels = cin
        self._thetas: dict[int, torch.Tensor] = {}

    def out_size(self, input_size: int) -> int:
        return 1     # the head pools the map (EncoderConfig.head = "pool")

    @property
    def reads_chip(self) -> bool:
        """The input is dlib's chip itself (the "dlib150" geometry): no resampling."""
        return self.chip_from_crop112 is None

    def theta(self, crop_size: int) -> torch.Tensor:
        """affine_grid's theta that samples the chip out of a crop_size x crop_size input."""
        if crop_size not in self._thetas:
            self._thetas[crop_size] = chip_theta(crop_size, self.chip_size, self.chip_from_crop112)
        return self._thetas[crop_size]

    def chips(self, x: torch.Tensor) -> torch.Tensor:
        if self.reads_chip:
            if x.shape[-1] != self.chip_size:
                raise ValueError(f"this backbone reads {self.chip_size} px chips, not {x.shape[-1]} px crops")
            return x
        theta = self.theta(x.shape[-1]).to(x.device, x.dtype).expand(len(x), 2, 3)
        grid = F.affine_grid(theta, [len(x), x.shape[1], self.chip_size, self.chip_size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def stem(self, chip: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.convs[0](chip)), 3, 2)

    def block(self, j: int, x: torch.Tensor) -> torch.Tensor:
        """Residual block j (0-based, in order from the input) applied to its input map."""
        down = self.block_downsamples[j]
        y = self.convs[2 + 2 * j](F.relu(self.convs[1 + 2 * j](x)))
        return F.relu(dlib_residual_sum(y, F.avg_pool2d(x, 2, 2) if down else x))

    @property
    def block_downsamples(self) -> tuple[bool, ...]:
        return tuple(bool(down and b == 0) for _, blocks, down in self.stages for b in range(blocks))

    def forward(self, x):
        x = self.stem(self.chips(x))
        for j in range(len(self.block_downsamples)):
            x = self.block(j, x)
        return x


BACKBONES = {
    "face_resnet": FaceResNet,
    "chip_resnet": ChipResNet,
    "inception_resnet_v1": InceptionResnetV1Backbone,
}


def create_backbone(name: str, **kwargs) -> nn.Module:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)
