"""Batch augmentation of aligned crops, in torch (runs where the model runs).

Pose (rotation, scale, shift, mirror) and colour (brightness, contrast, saturation, grey), then
the degradations: a tight photo (the part of the crop outside a hairline-to-chin box blacked out,
as a chip taken from an ID photo cut at the hairline is black past the photo's edge), low
resolution, low light (gamma) and sensor noise: the door camera's and the ID scanner's
conditions, on photos that were taken in better ones. `augment_pixels(..., degrade=False)` and
`degrade_pixels` give the view before and after the degradations apart (a teacher shown the
clean view, a student the degraded one)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .face_encoder import MEAN, STD


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.06
    flip: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.5
    grey: float = 0.15
    low_res: float = 0.2
    low_res_px: tuple[int, int] = (16, 40)
    dark: float = 0.1
    gamma: tuple[float, float] = (1.5, 2.8)
    noise: float = 0.1
    noise_sigma: float = 8.0
    border: str = "border"      # what the pose warp shows past the crop's edge: "border" (its edge pixels
    # repeated) or "zeros" (black: dlib's chips, align.py's "dlib150" geometry)
    low_res_up: str = "bilinear"    # how a low-resolution view is enlarged back ("bicubic": as align.py's
    # "dlib150" geometry enlarges a small face)
    tight: float = 0.0          # share of views cut to a tight photo
    tight_margins: tuple[float, float, float, float] = (0.17, 0.17, 0.2, 0.13)   # the most blacked out at the
    # left, right, top and bottom, as shares of the crop's side (each drawn uniformly from 0 to this)


def augment(crops: torch.Tensor, size: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """uint8 B x S x S x 3 crops -> normalised B x 3 x size x size encoder input, augmented."""
    return (augment_pixels(crops, size, cfg, gen) - MEAN) / STD


def augment_pixels(crops: torch.Tensor, size: int, cfg: AugmentConfig, gen: torch.Generator,
                   degrade: bool = True) -> torch.Tensor:
    """uint8 B x S x S x 3 crops -> augmented float pixels (0..255), B x 3 x size x size; with
    degrade=False, pose and colour only (`degrade_pixels` does the rest)."""
    x = crops.permute(0, 3, 1, 2).float()
    b, dev = x.shape[0], x.device

    def u(lo, hi, n=b):
        return torch.rand(n, generator=gen, device=dev) * (hi - lo) + lo

    def coin(p):
        return torch.rand(b, generator=gen, device=dev) < p

    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    # pose: one affine warp per photo
    ang = u(-cfg.rotate_deg, cfg.rotate_deg) * math.pi / 180
    sc = 1.0 / u(*cfg.scale)
    sx = torch.where(coin(cfg.flip), -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = sc * torch.cos(ang) * sx
    theta[:, 0, 1] = -sc * torch.sin(ang)
    theta[:, 1, 0] = sc * torch.sin(ang) * sx
    theta[:, 1, 1] = sc * torch.cos(ang)
    theta[:, :, 2] = (torch.rand(b, 2, generator=gen, device=dev) * 2 - 1) * cfg.shift * 2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode=cfg.border, align_corners=False)
    # colour
    x = x * u(1 - cfg.brightness, 1 + cfg.brightness)[:, None, None, None]
    grey = x.mul(torch.tensor([0.299, 0.587, 0.114], device=dev)[None, :, None, None]).sum(1, keepdim=True)
    m = grey.mean((2, 3), keepdim=True)
    x = (x - m) * u(1 - cfg.contrast, 1 + cfg.contrast)[:, None, None, None] + m
    x = grey + (x - grey) * u(1 - cfg.saturation, 1 + cfg.saturation)[:, None, None, None]
    x = torch.where(coin(cfg.grey)[:, None, None, None], grey.expand_as(x), x)
    x = x.clamp(0, 255)
    return degrade_pixels(x, cfg, gen) if degrade else x


def degrade_pixels(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Float pixels B x 3 x size x size -> the same views degraded (a new tensor): tight photo,
    low resolution, low light, sensor noise."""
    x = x.clone()
    b, size, dev = x.shape[0], x.shape[-1], x.device

    def u(lo, hi, n=b):
        return torch.rand(n, generator=gen, device=dev) * (hi - lo) + lo

    def coin(p):
        return torch.rand(b, generator=gen, device=dev) < p

    tight = coin(cfg.tight) if cfg.tight > 0 else torch.zeros(b, dtype=torch.bool, device=dev)
    if tight.any():
        n = int(tight.sum())
        m = torch.rand(n, 4, generator=gen, device=dev) * torch.tensor(cfg.tight_margins, device=dev) * size
        r = torch.arange(size, device=dev, dtype=torch.float32)
        inside_x = (r[None] >= m[:, 0:1]) & (r[None] < size - m[:, 1:2])      # n x size
        inside_y = (r[None] >= m[:, 2:3]) & (r[None] < size - m[:, 3:4])
        x[tight] = x[tight] * (inside_y[:, None, :, None] & inside_x[:, None, None, :])
    # low resolution: down to a few dozen pixels and back
    lr = coin(cfg.low_res)
    if lr.any():
        px = int(torch.randint(cfg.low_res_px[0], cfg.low_res_px[1] + 1, (1,), generator=gen).item())
        small = F.interpolate(x[lr], size=(px, px), mode="bilinear", antialias=True, align_corners=False)
        x[lr] = F.interpolate(small, size=(size, size), mode=cfg.low_res_up, align_corners=False).clamp(0, 255)
    # low light: gamma darkening, then sensor noise
    dk = coin(cfg.dark)
    if dk.any():
        g = u(*cfg.gamma, n=int(dk.sum()))[:, None, None, None]
        x[dk] = 255.0 * (x[dk] / 255.0) ** g
    nz = coin(cfg.noise)
    if nz.any():
        x[nz] = x[nz] + torch.randn(x[nz].shape, generator=gen, device=dev) * cfg.noise_sigma
    return x.clamp(0, 255)
