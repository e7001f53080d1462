"""Audio augmentation for the trigger-word training set, in numpy/scipy (no torchaudio).

Every function takes mono float32 audio at 16 kHz and returns the same; randomness comes only
from the `rng` passed in, so a seeded generator gives the same data every run.

- speed:   resampling (tempo and pitch together, like a tape running fast or slow)
- pitch:   a phase-vocoder time stretch, then resampling back to the original duration
- formant: a vocal-tract-length change: resampling moves formants and pitch, a pitch shift puts
           the pitch back (another speaker's vocal tract, the same voice pitch)
- reverb:  convolution with a synthetic room impulse response (decaying noise, random RT60)
- eq:      a random band limit (telephone-ish to full band), for other microphones
- noise:   white / pink / brown (1/f^beta) noise at a chosen level
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

RATE = 16_000


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """factor > 1: faster and higher (fewer samples); by resampling."""
    frac = Fraction(factor).limit_denominator(64)
    return resample_poly(x, frac.denominator, frac.numerator).astype(np.float32)


def time_stretch(x: np.ndarray, rate: float, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Phase vocoder: rate > 1 shortens the sound (same pitch); length ~ len(x) / rate."""
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    win = np.hanning(n_fft).astype(np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, (n_fft // 2, n_fft // 2)), n_fft)[::hop]
    spec = np.fft.rfft(frames * win, axis=1)                            # (T, F)
    steps = np.arange(0, len(spec) - 1, rate)
    omega = 2 * np.pi * hop * np.arange(spec.shape[1]) / n_fft          # expected phase advance per hop
    phase = np.angle(spec[0])
    out = np.empty((len(steps), spec.shape[1]), np.complex64)
    for k, s in enumerate(steps):
        i = int(s)
        frac = s - i
        mag = (1 - frac) * np.abs(spec[i]) + frac * np.abs(spec[i + 1])
        out[k] = mag * np.exp(1j * phase)
        dphi = np.angle(spec[i + 1]) - np.angle(spec[i]) - omega
        dphi -= 2 * np.pi * np.round(dphi / (2 * np.pi))
        phase = phase + omega + dphi
    y = np.zeros(len(out) * hop + n_fft, np.float32)
    norm = np.zeros_like(y)
    for k, fr in enumerate(np.fft.irfft(out, n_fft, axis=1)):
        y[k * hop:k * hop + n_fft] += fr * win
        norm[k * hop:k * hop + n_fft] += win ** 2
    y = y / np.maximum(norm, 1e-3)
    return y[n_fft // 2:n_fft // 2 + int(round(len(x) / rate))].astype(np.float32)


def shift_pitch(x: np.ndarray, semitones: float) -> np.ndarray:
    """Pitch up by `semitones` (negative: down) at (about) the same duration."""
    if abs(semitones) < 1e-3:
        return x.astype(np.float32)
    factor = 2.0 ** (semitones / 12.0)
    return change_speed(time_stretch(x, 1.0 / factor), factor)


def shift_formants(x: np.ndarray, factor: float) -> np.ndarray:
    """Formants times `factor` (> 1: a shorter vocal tract), pitch kept; the length becomes len(x) / factor."""
    if abs(factor - 1.0) < 1e-3:
        return x.astype(np.float32)
    return shift_pitch(change_speed(x, factor), -12.0 * float(np.log2(factor)))


def room_impulse(rng: np.random.Generator, rt60: float, direct_to_reverb_db: float) -> np.ndarray:
    """A synthetic room: a direct path, then exponentially decaying noise (60 dB down at rt60)."""
    n = int(rt60 * RATE)
    t = np.arange(n) / RATE
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)        # ln(1000) = 6.9078: -60 dB at rt60
    tail[: int(0.003 * RATE)] = 0.0                                    # the first reflection comes a little later
    tail *= db_to_gain(-direct_to_reverb_db) / max(np.sqrt(np.sum(tail ** 2)), 1e-9)
    ir = tail.astype(np.float32)
    ir[0] = 1.0
    return ir


def add_reverb(x: np.ndarray, rng: np.random.Generator, rt60: float, direct_to_reverb_db: float,
               keep_tail: float = 0.25) -> np.ndarray:
    """Convolve with a synthetic room; keep up to `keep_tail` seconds of the tail; same RMS as before."""
    y = fftconvolve(x, room_impulse(rng, rt60, direct_to_reverb_db))[: len(x) + int(keep_tail * RATE)]
    return (y * (rms(x) / max(rms(y[: len(x)]), 1e-9))).astype(np.float32)


def band_limit(x: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """Butterworth band-pass (order 2 each side); a cheap stand-in for another microphone."""
    high_hz = min(high_hz, 0.45 * RATE)
    sos = butter(2, [low_hz, high_hz], btype="bandpass", fs=RATE, output="sos")
    return sosfilt(sos, x).astype(np.float32)


def coloured_noise(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """Unit-RMS noise with power ~ 1/f^beta (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / RATE)
    f[0] = f[1]
    y = np.fft.irfft(spec / f ** (beta / 2.0), n)
    return (y / max(rms(y), 1e-12)).astype(np.float32)


def augment_word(x: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
                 formant: float = 0.0) -> tuple[np.ndarray, int]:
    """One random variant of a spoken word: vocal tract (when `formant` > 0: factors within 1 +- formant),
    speed, pitch, microphone, room (each with a probability).

    -> (audio, end): `end` is where the dry word ends; a reverberant tail may follow it."""
    if formant > 0 and rng.random() < 0.7:
        x = shift_formants(x, float(rng.uniform(1 - formant, 1 + formant)))
    if rng.random() < 0.8:
        x = change_speed(x, float(rng.uniform(1 - 0.15 * strength, 1 + 0.15 * strength)))
    if rng.random() < 0.6:
        x = shift_pitch(x, float(rng.uniform(-3.0, 3.0) * strength))
    if rng.random() < 0.4:
        x = band_limit(x, float(rng.uniform(60, 400)), float(rng.uniform(3000, 7800)))
    end = len(x)
    if rng.random() < 0.5:
        x = add_reverb(x, rng, float(rng.uniform(0.15, 0.8)), float(rng.uniform(0.0, 12.0)))
    return x.astype(np.float32), end
