"""Backbones for the face encoder, picked by name from a small registry (as timm's create_model).

Each backbone maps a B x 3 x S x S batch to a B x C x h x w feature map and states
`out_channels` and `out_size(input_size)`, so the 128-d head can be sized for it.
"""
from __future__ import annotations

import torch
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


BACKBONES = {
    "face_resnet": FaceResNet,
    "inception_resnet_v1": InceptionResnetV1Backbone,
}


def create_backbone(name: str, **kwargs) -> nn.Module:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)
