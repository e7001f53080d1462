"""Trigger-word building blocks: WAV reading of any common kind, the spectrogram, steps, events."""
from __future__ import annotations

import io

import numpy as np
import pytest
from scipy.io import wavfile

from gates.trigger_word import (HOP, N_MELS, RATE, AudioError, TriggerNet, events, load_wav, output_steps,
                                seconds_to_step, spectrogram, step_seconds)


def wav_bytes(x: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    wavfile.write(buf, rate, x)
    return buf.getvalue()


def test_any_rate_and_channel_count_becomes_mono_16k():
    t = np.arange(44100) / 44100
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    stereo = np.stack([tone, tone], 1)
    x = load_wav(wav_bytes(stereo, 44100))
    assert x.dtype == np.float32 and x.ndim == 1 and abs(len(x) - RATE) <= 1
    assert np.abs(x).max() == pytest.approx(0.5, abs=0.02)
    spectrum = np.abs(np.fft.rfft(x))
    assert np.fft.rfftfreq(len(x), 1 / RATE)[spectrum.argmax()] == pytest.approx(440, abs=2)
    f32 = load_wav(wav_bytes((tone / 32767).astype(np.float32), 44100))
    np.testing.assert_allclose(f32, x, atol=1e-3)


def test_bad_audio_is_an_audio_error():
    for data in (b"", b"RIFF....WAVEnot really", np.random.default_rng(0).bytes(500)):
        with pytest.raises(AudioError):
            load_wav(data)


def test_spectrogram_and_steps_line_up():
    x = np.zeros(10 * RATE, np.float32)
    s = spectrogram(x)
    assert s.shape == (1 + 10 * RATE // HOP, N_MELS)
    steps = output_steps(s.shape[0])
    assert steps == 247
    assert TriggerNet().eval()(s[None]).shape == (1, steps)
    for t in (1.0, 4.2, 9.5):
        assert step_seconds(seconds_to_step(t)) == pytest.approx(t, abs=0.021)


def test_a_tone_lands_in_the_right_mel_bands():
    t = np.arange(RATE) / RATE
    low = spectrogram(np.sin(2 * np.pi * 200 * t).astype(np.float32)).mean(0)
    high = spectrogram(np.sin(2 * np.pi * 4000 * t).astype(np.float32)).mean(0)
    assert low.argmax() < high.argmax()


def test_consecutive_firing_steps_make_one_event():
    p = np.zeros(50)
    p[10:14] = [0.6, 0.9, 0.7, 0.55]
    p[30] = 0.8
    ev = events(p)
    assert [e.p for e in ev] == [0.9, 0.8]
    assert ev[0].t == pytest.approx(step_seconds(10), abs=1e-3) and ev[1].t == pytest.approx(step_seconds(30), abs=1e-3)
    assert events(np.zeros(10)) == []
    p[32] = 0.8                                   # a one-step dip joins when allowed
    assert len(events(p)) == 3 and len(events(p, min_gap_steps=1)) == 2
