"""The face encoder: backbone -> 128-d linear head -> L2 normalisation."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import create_backbone


@dataclass(frozen=True)
class EncoderConfig:
    backbone: str = "face_resnet"
    backbone_args: dict = field(default_factory=dict)
    input_size: int = 64          # the aligned 112x112 crop is resized to this
    embedding_dim: int = 128
    dropout: float = 0.2
    head: str = "spatial"         # "spatial": BN-Dropout-FC-BN on the whole last map; "pool": its average -> FC

    def to_dict(self) -> dict:
        return asdict(self)


class FaceEncoder(nn.Module):
    def __init__(self, config: EncoderConfig = EncoderConfig()):
        super().__init__()
        self.config = config
        self.backbone = create_backbone(config.backbone, **config.backbone_args)
        c, s = self.backbone.out_channels, self.backbone.out_size(config.input_size)
        self.head_drop = nn.Dropout(config.dropout)
        if config.head == "spatial":
            # ArcFace's "BN-Dropout-FC-BN" output layer: keeps the spatial layout of the last map.
            self.head_bn = nn.BatchNorm2d(c)
            self.head_fc = nn.Linear(c * s * s, config.embedding_dim)
            self.head_out = nn.BatchNorm1d(config.embedding_dim)
        elif config.head == "pool":
            # dlib's (and FaceNet's) output layer: global average pool, then one linear layer
            self.head_fc = nn.Linear(c, config.embedding_dim)
        else:
            raise ValueError(f"unknown head {config.head!r}; known: 'spatial', 'pool'")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        if self.config.head == "pool":
            return F.normalize(self.head_fc(self.head_drop(f.mean((2, 3)))), p=2, dim=1)
        f = self.head_drop(self.head_bn(f).flatten(1))
        return F.normalize(self.head_out(self.head_fc(f)), p=2, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


MEAN, STD = 127.5, 128.0


def preprocess(crops: np.ndarray | torch.Tensor, input_size: int) -> torch.Tensor:
    """Aligned uint8 crops (B x S x S x 3, RGB) -> the encoder's float input (B x 3 x size x size)."""
    x = torch.as_tensor(np.asarray(crops)) if not isinstance(crops, torch.Tensor) else crops
    if x.ndim == 3:
        x = x[None]
    return pixels_to_input(x.permute(0, 3, 1, 2).float(), input_size)


def pixels_to_input(x: torch.Tensor, input_size: int) -> torch.Tensor:
    """Float pixels 0..255 (B x 3 x S x S) -> the encoder's input: resized (antialiased), normalised."""
    if x.shape[-1] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", antialias=True, align_corners=False)
    return (x - MEAN) / STD
