"""The face encoder: backbone -> 128-d linear head -> L2 normalisation."""
from __future__ import annotations

import json
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


def config_without(c: EncoderConfig, *keys: str) -> dict:
    """The config less `keys`, in JSON form (a config read from JSON has lists, a checkpoint's tuples)."""
    return json.loads(json.dumps({k: v for k, v in asdict(c).items() if k not in keys}))


def grown_from(source: FaceEncoder, config: EncoderConfig) -> FaceEncoder:
    """A deeper encoder that computes exactly what `source` computes (Net2DeeperNet, Chen et al.
    2016): a FaceResNet of the same widths with at least as many blocks in every stage. The
    trained blocks keep their places; each new block is appended to its stage as an identity
    (its last batch norm's scale and shift at 0, so the residual branch adds nothing, and its
    last PReLU's slope at 1). Training then gives the new blocks something to do. Dropout may
    differ: it holds no weights. Raises ValueError for any other difference."""
    from .backbones import FaceResNet

    def widths(b: FaceResNet) -> tuple:
        return b.stem[0].out_channels, [stage[0].conv2.out_channels for stage in b.stages]

    model = FaceEncoder(config)
    src, dst = source.backbone, model.backbone
    if (config_without(source.config, "backbone_args", "dropout") != config_without(config, "backbone_args", "dropout") or not isinstance(src, FaceResNet)
            or not isinstance(dst, FaceResNet) or widths(src) != widths(dst)
            or any(len(a) > len(b) for a, b in zip(src.stages, dst.stages))):
        raise ValueError(f"cannot grow {source.config.to_dict()} into {config.to_dict()}: only a FaceResNet "
                         f"with the same widths, input and head can be deepened, stage by stage")
    # every source weight has its place; only the new blocks' names are missing, and keep their init
    assert not model.load_state_dict(source.state_dict(), strict=False).unexpected_keys
    for old, new in zip(src.stages, dst.stages):
        for block in list(new)[len(old):]:
            nn.init.zeros_(block.bn2.weight)
            nn.init.zeros_(block.bn2.bias)
            nn.init.ones_(block.act2.weight)
    return model


def area_resample_matrix(n_from: int, n_to: int) -> torch.Tensor:
    """n_to x n_from: how much of each source cell falls into each target cell, when both grids
    span the same interval (cells of length 1 and n_from / n_to). Every column sums to 1, so a
    weight map resampled with it (A W A^T) gives a spatially constant input the same response."""
    edges = torch.arange(n_to + 1, dtype=torch.float64) * n_from / n_to
    cells = torch.arange(n_from, dtype=torch.float64)
    return (torch.minimum(edges[1:, None], cells + 1) - torch.maximum(edges[:-1, None], cells)).clamp(min=0)


def resized_from(source: FaceEncoder, config: EncoderConfig) -> FaceEncoder:
    """An encoder for another input size that starts from `source`: the backbone is convolutional
    and takes the new size as it is; the head's linear layer, one weight per cell of the last
    feature map (s x s), is resampled to the new map (t x t) by area overlap, so that a feature
    map constant over space gets exactly the source's embedding. Real feature maps are not
    constant, and the backbone sees the face at another scale: a start for fine-tuning, not an
    equivalent network. Dropout may differ; raises ValueError for any other difference."""
    if config_without(source.config, "input_size", "dropout") != config_without(config, "input_size", "dropout"):
        raise ValueError(f"cannot resize {source.config.to_dict()} into {config.to_dict()}: only the "
                         f"input size (and dropout) may differ")
    model = FaceEncoder(config)
    s, t = source.backbone.out_size(source.config.input_size), model.backbone.out_size(config.input_size)
    state = source.state_dict()
    w = state["head_fc.weight"]
    a = area_resample_matrix(s, t)
    w = w.double().reshape(w.shape[0], -1, s, s)
    state["head_fc.weight"] = (a @ w @ a.T).reshape(w.shape[0], -1).to(state["head_fc.weight"].dtype)
    model.load_state_dict(state)
    return model
