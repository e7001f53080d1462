"""The trigger-word detector ("activate"): audio -> spectrogram -> 1-D convolution -> GRUs ->
a sigmoid at every output step (the deep-learning course's model, on torch.stft: no torchaudio
release matches torch 2.14.1).

Any common WAV (8/16/24/32-bit or float, any rate, any channel count) is mixed to mono and
resampled to 16 kHz. A firing step means "the word ended just before here"; consecutive firing
steps make one event, reported at the time of its first step.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import torch
from scipy.io import wavfile
from scipy.signal import resample_poly
from torch import nn

from .checkpoints import load_gate, save_gate

RATE = 16_000
MIN_RATE, MAX_RATE = 8_000, 192_000     # the sample rates a microphone records at
MAX_SECONDS = 30.0                      # a door's clip is ~10 s; longer audio is refused, not resampled
N_FFT, HOP, N_MELS = 400, 160, 64          # 25 ms windows every 10 ms
CONV_KERNEL, CONV_STRIDE = 15, 4           # output step = 40 ms
FORMAT = "facegate-trigger/1"
DEFAULT_CHECKPOINT = Path(__file__).parent / "weights" / "trigger_word.pt"


class AudioError(ValueError):
    """Bytes that are not a WAV file we can read."""


def load_wav(data: bytes | str | Path) -> np.ndarray:
    """-> mono float32 in [-1, 1] at RATE."""
    if isinstance(data, (str, Path)):
        data = Path(data).read_bytes()
    if not data:
        raise AudioError("empty audio: 0 bytes")
    try:
        rate, x = wavfile.read(io.BytesIO(data))
    except (ValueError, EOFError, OSError, struct.error, IndexError, KeyError, UnboundLocalError) as e:
        # scipy's reader fails on garbage in several ways (UnboundLocalError included)
        raise AudioError(f"not a WAV file we can read: {type(e).__name__}: {e}") from None
    if x.size == 0:
        raise AudioError("the WAV file holds no samples")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"a sample rate of {rate} Hz, outside {MIN_RATE:,}..{MAX_RATE:,} Hz")
    if len(x) / rate > MAX_SECONDS:
        raise AudioError(f"{len(x) / rate:.1f} s of audio, more than the limit of {MAX_SECONDS:.0f} s")
    if x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    else:
        x = x.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if rate != RATE:
        g = gcd(int(rate), RATE)
        x = resample_poly(x, RATE // g, int(rate) // g).astype(np.float32)
    return np.clip(x, -1.0, 1.0)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = RATE) -> np.ndarray:
    """Triangular filters on the mel scale (Slaney-free HTK form): n_mels x (n_fft // 2 + 1)."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)   # noqa: E731
    pts = hz(np.linspace(mel(20.0), mel(rate / 2), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / rate)
    fb = np.zeros((n_mels, len(bins)), np.float32)
    for i in range(n_mels):
        lo, mid, hi = pts[i:i + 3]
        fb[i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    return fb


_FB = torch.from_numpy(mel_filterbank())


def spectrogram(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Mono audio at RATE -> log-mel frames, (frames, N_MELS); frames = 1 + samples // HOP.
    A batch (B x samples) gives B x frames x N_MELS."""
    x = torch.as_tensor(audio, dtype=torch.float32)
    spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = spec.abs() ** 2                                   # ([B,] freq, frames)
    return torch.log(_FB @ power + 1e-6).transpose(-1, -2)


def output_steps(frames: int) -> int:
    return (frames - CONV_KERNEL) // CONV_STRIDE + 1


def step_seconds(step: int) -> float:
    """The time, in seconds, at the end of an output step's receptive field's centre."""
    return (step * CONV_STRIDE + CONV_KERNEL / 2) * HOP / RATE


def seconds_to_step(t: float) -> int:
    return int(round((t * RATE / HOP - CONV_KERNEL / 2) / CONV_STRIDE))


def normalise_utterance(spec: torch.Tensor) -> torch.Tensor:
    """Per utterance: each mel band's mean over time removed (a microphone's and room's fixed colouring),
    then divided by the utterance's overall spread (its loudness and its noise floor)."""
    spec = spec - spec.mean(dim=-2, keepdim=True)
    return spec / (spec.flatten(-2).std(dim=-1)[..., None, None] + 1e-3)


class TriggerNet(nn.Module):
    def __init__(self, n_mels: int = N_MELS, conv: int = 128, hidden: int = 128, dropout: float = 0.3,
                 utt_norm: bool = False):
        super().__init__()
        self.utt_norm = utt_norm
        self.conv = nn.Sequential(nn.Conv1d(n_mels, conv, CONV_KERNEL, CONV_STRIDE), nn.BatchNorm1d(conv),
                                  nn.ReLU(), nn.Dropout(dropout))
        self.gru1 = nn.GRU(conv, hidden, batch_first=True)
        self.drop1 = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)
        self.gru2 = nn.GRU(hidden, hidden, batch_first=True)
        self.drop2 = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, 1)
        self.args = {"n_mels": n_mels, "conv": conv, "hidden": hidden, "dropout": dropout}
        if utt_norm:                                  # older checkpoints do not know the argument
            self.args["utt_norm"] = True

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """B x frames x N_MELS log-mel -> B x steps logits (one per output step)."""
        if self.utt_norm:
            spec = normalise_utterance(spec)
        x = self.conv(spec.transpose(1, 2)).transpose(1, 2)
        x = self.norm(self.drop1(self.gru1(x)[0]))
        x = self.drop2(self.gru2(x)[0])
        return self.out(x).squeeze(-1)


class TriggerEnsemble(nn.Module):
    """Several detectors heard at once: the mean of their probabilities per output step. forward gives
    the logit of that mean, so an ensemble stands wherever one TriggerNet does (sigmoid of the output)."""

    def __init__(self, members: list[dict]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = nn.ModuleList([TriggerNet(**m) for m in members])
        self.args = {"members": [dict(m.args) for m in self.members]}

    @classmethod
    def of(cls, nets: list[TriggerNet]) -> "TriggerEnsemble":
        ens = cls([n.args for n in nets])
        for dst, src in zip(ens.members, nets):
            dst.load_state_dict(src.state_dict())
        return ens.eval()

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        p = torch.stack([torch.sigmoid(m(spec)) for m in self.members]).mean(0)
        return torch.logit(p, eps=1e-7)


def trigger_net(**args) -> nn.Module:
    """The network a checkpoint's model_args describe: one detector, or an ensemble ("members")."""
    return TriggerEnsemble(args["members"]) if "members" in args else TriggerNet(**args)


@dataclass(frozen=True)
class Event:
    t: float        # seconds: when the detector fires, just after the word ends
    p: float        # the highest probability of its steps


def events(probs: np.ndarray, threshold: float = 0.5, min_gap_steps: int = 0) -> list[Event]:
    """Consecutive steps at or above the threshold make one event (gaps up to `min_gap_steps` joined)."""
    on = np.asarray(probs) >= threshold
    out, start, last = [], None, None
    for i, fire in enumerate(on):
        if fire:
            if start is None or (last is not None and i - last > min_gap_steps + 1):
                if start is not None:
                    out.append(Event(round(step_seconds(start), 3), float(np.max(probs[start:last + 1]))))
                start = i
            last = i
    if start is not None:
        out.append(Event(round(step_seconds(start), 3), float(np.max(probs[start:last + 1]))))
    return out


class TriggerWordGate:
    name = "trigger_word"

    def __init__(self, model: TriggerNet | TriggerEnsemble, meta: dict):
        self.model = model.eval()
        self.meta = meta
        self.threshold = float(meta.get("threshold", 0.5))
        self.min_gap_steps = int(meta.get("min_gap_steps", 0))     # firing runs this close are one event

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> "TriggerWordGate":
        return cls(*load_gate(Path(path) if path else DEFAULT_CHECKPOINT, FORMAT, trigger_net, "trigger-word",
                              device))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """p per output step; audio shorter than one step's window is padded with silence."""
        short = CONV_KERNEL * HOP - len(audio)
        if short > 0:
            audio = np.pad(audio, (0, short))
        return torch.sigmoid(self.model(spectrogram(audio)[None].to(self.device)))[0].cpu().numpy()

    def predict(self, wav: bytes | str | Path) -> list[Event]:
        return events(self.probabilities(load_wav(wav)), self.threshold, self.min_gap_steps)

    @property
    def retry_threshold(self) -> float:
        """Below the threshold but at or above this: a word-like sound, not clear enough (say it again)."""
        return float(self.meta.get("retry_threshold", 0.5 * self.threshold))

    def listen(self, wav: bytes | str | Path) -> "Heard":
        """The events, and what to tell a speaker when there is none."""
        p = self.probabilities(load_wav(wav))
        found = events(p, self.threshold, self.min_gap_steps)
        peak = float(np.max(p)) if len(p) else 0.0
        return Heard(found, peak, self.threshold, self.retry_threshold)


@dataclass(frozen=True)
class Heard:
    events: list[Event]
    peak: float                 # the highest probability of any step
    threshold: float
    retry_threshold: float

    @property
    def verdict(self) -> str:
        """"heard"; "say_again": a word-like sound below the threshold; "not_heard": nothing like the word."""
        if self.events:
            return "heard"
        return "say_again" if self.peak >= self.retry_threshold else "not_heard"

    def message(self) -> str:
        if self.verdict == "heard":
            return f"heard \"activate\" (p {max(e.p for e in self.events):.2f})"
        if self.verdict == "say_again":
            return (f"say it again: something like \"activate\" was heard, but not clearly enough "
                    f"(peak p {self.peak:.2f}, threshold {self.threshold:.2f})")
        return f"no word heard: \"activate\" was not heard in the audio (peak p {self.peak:.2f})"


def save_trigger(path: str | Path, model: TriggerNet | TriggerEnsemble, **meta) -> None:
    save_gate(path, FORMAT, model.args, model, **meta)
