"""The cosine learning-rate decay every training loop of this project uses."""
from __future__ import annotations

import math


def cosine(t: float, lr: float, floor: float = 0.0) -> float:
    """lr at fraction t (clipped to [0, 1]) of a cosine decay from lr down to floor."""
    t = min(max(t, 0.0), 1.0)
    return floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * t))
