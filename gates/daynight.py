"""Day or night: which light profile (and so which threshold) a door photo gets, or TOO_DARK.

A shallow CNN on 64x64x3 (colour matters: sodium lamps, blue dusk), one sigmoid output
p(night), trained with binary cross-entropy (gates/train_daynight.py). The photo's light level
(mean luminance, 0..1) is measured beside it; below the checkpoint's `too_dark_light` the
face models are not worth running (decided from data: see train_daynight.too_dark_curve).
"""
from __future__ import annotations

import hashlib

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from .checkpoints import load_gate, save_gate

INPUT = 64
FORMAT = "facegate-daynight/1"
DEFAULT_CHECKPOINT = Path(__file__).parent / "weights" / "daynight.pt"


class DayNightNet(nn.Module):
    def __init__(self, width: int = 16, dropout: float = 0.3):
        super().__init__()
        layers, cin = [], 3
        for w in (width, 2 * width, 4 * width, 4 * width):     # 64 -> 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, 1))
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x 64 x 64 in [0, 1] -> B logits of p(night)."""
        return self.head(self.features(x)).squeeze(1)


def to_input(img: np.ndarray) -> np.ndarray:
    """An RGB uint8 photo of any size -> 64 x 64 x 3 uint8 (the whole frame, squeezed)."""
    return cv2.resize(img, (INPUT, INPUT), interpolation=cv2.INTER_AREA)


def to_tensor(small: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(small)).float().div(255.0)
    return (x[None] if x.ndim == 3 else x).permute(0, 3, 1, 2).contiguous()


def light_level(img: np.ndarray) -> float:
    """Mean luminance (Rec. 601) in 0..1: the weighted sum of the channels' means, which is the
    mean of the per-pixel luminance (a 640x480 frame: 0.02 ms, where a per-pixel float image took 1.3)."""
    r, g, b, _ = cv2.mean(img)
    return (r * 0.299 + g * 0.587 + b * 0.114) / 255.0


def darken(img: np.ndarray, rng: np.random.Generator, strength: float | None = None) -> np.ndarray:
    """What a night camera makes of a scene: less light (gain and gamma), a colour cast (sodium
    orange, cold blue, green CCTV), blur from a long exposure, and sensor noise.
    `strength` in 0..1 (None: random) sets how dark."""
    s = rng.uniform(0.3, 1.0) if strength is None else float(strength)
    x = img.astype(np.float32) / 255.0
    gain = 1.0 - 0.85 * s                                   # 1.0 .. 0.15
    gamma = 1.0 + 2.0 * s                                   # 1 .. 3
    x = gain * np.power(x, gamma)
    cast = [np.array([1.15, 0.95, 0.7]), np.array([0.8, 0.9, 1.15]), np.array([0.85, 1.1, 0.85]),
            np.ones(3)][rng.integers(4)]
    x = x * cast.astype(np.float32)
    sigma = rng.uniform(0.3, 1.5)
    x = cv2.GaussianBlur(x, (0, 0), sigma)
    noise = rng.normal(0.0, rng.uniform(0.01, 0.04) * (0.5 + s), x.shape).astype(np.float32)
    x = x + noise
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


@dataclass(frozen=True)
class DayNightResult:
    label: str          # "day" or "night"
    p_night: float
    light: float        # mean luminance, 0..1
    too_dark: bool


class DayNightGate:
    name = "daynight"

    def __init__(self, model: DayNightNet, meta: dict):
        self.model = model.eval()
        self.meta = meta
        self.threshold = float(meta.get("threshold", 0.5))
        self.too_dark_light = float(meta.get("too_dark_light", 0.0))

    @property
    def digest(self) -> str:
        """A digest of the weights and the decision threshold: what the gate's answers depend on."""
        h = hashlib.sha256(repr(self.threshold).encode())
        for name, value in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(value.detach().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> "DayNightGate":
        return cls(*load_gate(Path(path) if path else DEFAULT_CHECKPOINT, FORMAT, DayNightNet, "day/night", device))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def predict_batch(self, imgs: list[np.ndarray]) -> list[DayNightResult]:
        small = np.stack([to_input(i) for i in imgs])
        p = torch.sigmoid(self.model(to_tensor(small).to(self.device))).cpu().numpy()
        out = []
        for img, pn in zip(imgs, p):
            light = light_level(img)
            out.append(DayNightResult("night" if pn >= self.threshold else "day", float(pn), light,
                                      light < self.too_dark_light))
        return out

    def predict(self, img: np.ndarray) -> DayNightResult:
        return self.predict_batch([img])[0]


def save_daynight(path: str | Path, model: DayNightNet, **meta) -> None:
    save_gate(path, FORMAT, {"width": model.width}, model, **meta)
