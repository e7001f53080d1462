"""Synthesised 10-second clips for the trigger-word detector, labelled by the code that made them.

A clip is a background with spoken words laid on it at random, non-overlapping places. The
word "activate" is positive, every other word negative. The label of an output step is 1 when
its time lies in (end, end + span] of a positive word, where `end` is where the dry word ends
(a reverberant tail may run on past it): the detector learns to fire just after the word.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import audio_augment as aug
from .trigger_word import HOP, RATE, load_wav, output_steps, step_seconds

CLIP_SECONDS = 10.0
CLIP_SAMPLES = int(CLIP_SECONDS * RATE)
CLIP_STEPS = output_steps(1 + CLIP_SAMPLES // HOP)            # 247


@dataclass(frozen=True)
class Word:
    audio: np.ndarray     # mono float32 at RATE
    end: int              # sample where the dry word ends (the audio may hold a reverberant tail after it)
    positive: bool
    source: str           # where it came from, e.g. "activates/1_act2.wav" or "tts:active/en-us+f3"


@dataclass(frozen=True)
class Placement:
    start: float          # seconds from the clip's start
    end: float            # seconds: the end of the dry word
    positive: bool
    source: str


@dataclass
class Clip:
    audio: np.ndarray
    placements: list[Placement] = field(default_factory=list)

    def labels(self, span: float, steps: int = CLIP_STEPS) -> np.ndarray:
        return step_labels(self.placements, span, steps)


def trim_silence(x: np.ndarray, below_peak_db: float = 30.0, pad: float = 0.02) -> np.ndarray:
    """Cut leading and trailing stretches quieter than the loudest 20 ms frame minus `below_peak_db`
    (and a click shorter than 100 ms at the start, when quiet follows it)."""
    n = int(0.02 * RATE)
    frames = len(x) // n
    if frames < 2:
        return x
    level = 10 * np.log10(np.mean(x[: frames * n].reshape(frames, n) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level >= level.max() - below_peak_db)
    gaps = np.flatnonzero(np.diff(loud) >= 8)                            # 160 ms or more of quiet
    if len(gaps) and loud[gaps[0]] - loud[0] < 5:                         # a click (< 100 ms) before the word
        loud = loud[gaps[0] + 1:]
    a = max(0, loud[0] * n - int(pad * RATE))
    b = min(len(x), (loud[-1] + 1) * n + int(pad * RATE))
    return x[a:b].astype(np.float32)


def load_word(path: str | Path, positive: bool, name: str | None = None) -> Word:
    x = trim_silence(load_wav(path))
    return Word(x, len(x), positive, name or str(path))


def step_labels(placements: list[Placement], span: float, steps: int = CLIP_STEPS) -> np.ndarray:
    """1.0 at the output steps whose time t satisfies end < t <= end + span for a positive word."""
    t = np.array([step_seconds(i) for i in range(steps)])
    y = np.zeros(steps, np.float32)
    for p in placements:
        if p.positive:
            y[(t > p.end) & (t <= p.end + span)] = 1.0
    return y


def slack(lengths: list[int], total: int, min_gap: int) -> int:
    """Samples of [0, total) left free once words of these lengths lie `min_gap` apart (< 0: they do not fit)."""
    return total - sum(lengths) - min_gap * max(len(lengths) - 1, 0)


def fits(lengths: list[int], total: int, min_gap: int) -> bool:
    """Whether `place` can lay words of these lengths in [0, total), `min_gap` samples apart."""
    return slack(lengths, total, min_gap) >= 0


def place(rng: np.random.Generator, lengths: list[int], total: int, min_gap: int) -> list[int]:
    """Random start samples for words of these lengths, in a random order, never overlapping
    (at least `min_gap` samples apart) and all inside [0, total). Raises if they cannot fit."""
    free = slack(lengths, total, min_gap)
    if free < 0:
        raise ValueError(f"{len(lengths)} words of {sum(lengths) / RATE:.2f} s do not fit in {total / RATE:.2f} s")
    order = rng.permutation(len(lengths))
    cuts = np.sort(rng.integers(0, free + 1, len(lengths)))        # silence before word k: cuts[k] - cuts[k-1]
    starts = [0] * len(lengths)
    pos = 0
    for k, i in enumerate(order):
        starts[i] = pos + int(cuts[k])
        pos += lengths[i] + min_gap
    return starts


def compose(rng: np.random.Generator, background: np.ndarray, words: list[Word], gains: list[float],
            min_gap: float = 0.1, tail_reserve: float = 0.3) -> Clip:
    """Lay the words (each times its gain) on the background at random, non-overlapping places;
    the last `tail_reserve` seconds stay free so that every positive word's labels fit in the clip."""
    audio = background.astype(np.float32).copy()
    total = len(audio) - int(tail_reserve * RATE)
    starts = place(rng, [len(w.audio) for w in words], total, int(min_gap * RATE))
    placements = []
    for w, g, s in zip(words, gains, starts):
        audio[s:s + len(w.audio)] += g * w.audio
        placements.append(Placement(s / RATE, (s + w.end) / RATE, w.positive, w.source))
    placements.sort(key=lambda p: p.start)
    return Clip(np.clip(audio, -1.0, 1.0), placements)


def fit_background(x: np.ndarray, rng: np.random.Generator, n: int = CLIP_SAMPLES) -> np.ndarray:
    """A clip-long piece of a background: a random circular shift (tiled when shorter than a clip)."""
    x = np.tile(x, -(-n // len(x)) + 1)
    s = int(rng.integers(0, len(x) - n + 1))
    return x[s:s + n].astype(np.float32)


def vary_background(sources: list[np.ndarray], rng: np.random.Generator, n: int = CLIP_SAMPLES) -> np.ndarray:
    """Training backgrounds: a random piece of a real one (sometimes reversed, band-limited), a random
    gain, mixed with coloured noise; or now and then coloured noise alone."""
    if rng.random() < 0.15:
        bg = np.zeros(n, np.float32)
    else:
        bg = fit_background(sources[int(rng.integers(len(sources)))], rng, n)
        if rng.random() < 0.5:
            bg = bg[::-1].copy()
        if rng.random() < 0.3:
            bg = aug.band_limit(bg, float(rng.uniform(40, 300)), float(rng.uniform(2500, 7800)))
        bg *= aug.db_to_gain(float(rng.uniform(-12, 18)))
    noise_db = float(rng.uniform(-75, -35))                                # noise RMS in dB full scale
    bg += aug.db_to_gain(noise_db) * aug.coloured_noise(rng, n, float(rng.uniform(0.0, 2.0)))
    return bg.astype(np.float32)


def add_babble(bg: np.ndarray, words: list[Word], rng: np.random.Generator, n: int,
               level_db: tuple[float, float]) -> np.ndarray:
    """Distant talk: `n` (non-trigger) words anywhere in the background, overlaps allowed, quiet."""
    out = bg.copy()
    for _ in range(n):
        w = words[int(rng.integers(len(words)))]
        x = w.audio[: len(out)] * word_gain(w, rng, level_db)
        s = int(rng.integers(0, len(out) - len(x) + 1))
        out[s:s + len(x)] += x
    return out


def word_gain(w: Word, rng: np.random.Generator, level_db: tuple[float, float] = (-36.0, -16.0)) -> float:
    """The gain that brings the word's RMS to a random level (dB full scale) in `level_db`."""
    return aug.db_to_gain(float(rng.uniform(*level_db))) / max(aug.rms(w.audio[:w.end]), 1e-6)


@dataclass(frozen=True)
class MixConfig:
    """How many words a clip gets, and how loud."""
    max_positives: int = 3
    max_negatives: int = 4
    p_no_positive: float = 0.3            # clips with no "activate" at all: what false triggers are made of
    real_positive_share: float = 0.5      # a positive is a real recording this often, else a synthetic voice
    real_negative_share: float = 0.4
    level_db: tuple[float, float] = (-36.0, -16.0)
    p_babble: float = 0.5                 # clips whose background holds distant talk (other words only)
    babble_db: tuple[float, float] = (-55.0, -33.0)


def random_clip(rng: np.random.Generator, positives: dict[str, list[Word]], negatives: dict[str, list[Word]],
                backgrounds: list[np.ndarray], cfg: MixConfig = MixConfig()) -> Clip:
    """One training (or validation) clip. `positives` / `negatives` map "real" and "tts" to word pools."""
    n_pos = 0 if rng.random() < cfg.p_no_positive else int(rng.integers(1, cfg.max_positives + 1))
    n_neg = int(rng.integers(0, cfg.max_negatives + 1))

    def pick(pools: dict[str, list[Word]], share: float) -> Word:
        kind = "real" if (rng.random() < share and pools.get("real")) or not pools.get("tts") else "tts"
        pool = pools[kind]
        return pool[int(rng.integers(len(pool)))]

    words = [pick(positives, cfg.real_positive_share) for _ in range(n_pos)]
    words += [pick(negatives, cfg.real_negative_share) for _ in range(n_neg)]
    while sum(len(w.audio) for w in words) > 0.8 * CLIP_SAMPLES:           # keep room between words
        words.pop()
    bg = vary_background(backgrounds, rng)
    talk = negatives.get("real", []) + negatives.get("tts", [])
    if talk and rng.random() < cfg.p_babble:
        bg = add_babble(bg, talk, rng, int(rng.integers(1, 6)), cfg.babble_db)
    return compose(rng, bg, words, [word_gain(w, rng, cfg.level_db) for w in words])


def word_variants(words: list[Word], per_word: int, rng: np.random.Generator, keep_original: bool = True,
                  formant: float = 0.0) -> list[Word]:
    """`per_word` augmented variants of each word (vocal tract when `formant`, speed, pitch, microphone, room)."""
    out = []
    for w in words:
        if keep_original:
            out.append(w)
        for _ in range(per_word - int(keep_original)):
            x, end = aug.augment_word(w.audio[:w.end], rng, formant=formant)
            out.append(Word(x, end, w.positive, w.source))
    return out

