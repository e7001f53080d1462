"""Event-level scoring of the trigger-word detector.

An event (one run of firing steps, reported at its first step's time t) is a hit when
start <= t <= end + 1 s for a true "activate" (start/end of the spoken word); each true word
is matched at most once; every event that is not a hit is a false trigger.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .trigger_word import events

AFTER_END = 1.0        # seconds after the word's end in which firing still counts


@dataclass(frozen=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, o: "Counts") -> "Counts":
        return Counts(self.tp + o.tp, self.fp + o.fp, self.fn + o.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def match(event_times: list[float], words: list[tuple[float, float]], after: float = AFTER_END) -> Counts:
    """Greedy in time: each event takes the open word window (start, end + after) that closes first."""
    windows = sorted((s, e + after) for s, e in words)
    used = [False] * len(windows)
    tp = fp = 0
    for t in sorted(event_times):
        best = None
        for i, (lo, hi) in enumerate(windows):
            if not used[i] and lo <= t <= hi and (best is None or hi < windows[best][1]):
                best = i
        if best is None:
            fp += 1
        else:
            used[best] = True
            tp += 1
    return Counts(tp, fp, len(windows) - tp)


def score(probs: list[np.ndarray], words: list[list[tuple[float, float]]], threshold: float,
          min_gap_steps: int = 0) -> Counts:
    """Summed over clips: `probs[i]` per output step, `words[i]` the true (start, end) of clip i's activates."""
    total = Counts()
    for p, w in zip(probs, words):
        total = total + match([e.t for e in events(p, threshold, min_gap_steps)], w)
    return total


def sweep(probs: list[np.ndarray], words: list[list[tuple[float, float]]], neg_probs: list[np.ndarray],
          neg_minutes: float, thresholds: np.ndarray, min_gap_steps: int = 0) -> list[dict]:
    """Per threshold: precision, recall, F1 on the word clips and false triggers per 10 minutes on
    the clips without the word."""
    rows = []
    for th in thresholds:
        c = score(probs, words, float(th), min_gap_steps)
        fa = score(neg_probs, [[] for _ in neg_probs], float(th), min_gap_steps).fp
        rows.append({"threshold": round(float(th), 4), "precision": c.precision, "recall": c.recall, "f1": c.f1,
                     "tp": c.tp, "fp": c.fp, "fn": c.fn, "false_triggers": fa,
                     "false_per_10min": fa * 10.0 / neg_minutes if neg_minutes else 0.0})
    return rows


def pick_threshold(rows: list[dict], max_false_per_10min: float) -> dict:
    """The best F1 among thresholds whose false-trigger rate is within bounds (if none is: among
    those of the lowest rate); ties: the middle of the tied thresholds."""
    lowest = min(r["false_per_10min"] for r in rows)
    ok = [r for r in rows if r["false_per_10min"] <= max(max_false_per_10min, lowest)]
    best = max(r["f1"] for r in ok)
    tied = [r for r in ok if r["f1"] >= best - 1e-9]
    return tied[len(tied) // 2]
