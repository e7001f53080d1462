"""The trigger-word gate: WAV reading of any common kind, the spectrogram, steps, events, the training
set's synthesis and labels, augmentation, event scoring, and the shipped checkpoint on held-out audio."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from gates import audio_augment as aug
from gates import trigger_metrics as tm
from gates.gate import create_gate
from gates.trigger_synth import CLIP_SAMPLES, CLIP_STEPS, Placement, Word, compose, fits, place, step_labels, trim_silence
from gates.trigger_word import (DEFAULT_CHECKPOINT, HOP, N_MELS, RATE, AudioError, TriggerNet, TriggerWordGate, events,
                                load_wav, output_steps, seconds_to_step, spectrogram, step_seconds)

ROOT = Path(__file__).resolve().parents[2]


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


# ---------------------------------------------------------------------------- files, synthesis, metrics


def test_wav_files_stereo_44k_and_mono_8k_become_mono_16k(tmp_path):
    t44, t8 = np.arange(44100) / 44100, np.arange(8000) / 8000
    left = 0.4 * np.sin(2 * np.pi * 300 * t44)
    stereo = (np.stack([left, np.zeros_like(left)], 1) * 32767).astype(np.int16)      # the right channel silent
    wavfile.write(tmp_path / "stereo.wav", 44100, stereo)
    wavfile.write(tmp_path / "mono8k.wav", 8000, (0.5 * np.sin(2 * np.pi * 1000 * t8) * 32767).astype(np.int16))
    for name, hz, amp in (("stereo.wav", 300, 0.2), ("mono8k.wav", 1000, 0.5)):
        x = load_wav(tmp_path / name)
        assert x.dtype == np.float32 and x.ndim == 1 and abs(len(x) - RATE) <= 1
        assert np.abs(x[100:-100]).max() == pytest.approx(amp, abs=0.02)           # stereo: the mean of both
        assert np.fft.rfftfreq(len(x), 1 / RATE)[np.abs(np.fft.rfft(x)).argmax()] == pytest.approx(hz, abs=2)


def test_words_never_overlap_and_labels_sit_right_after_each_activate():
    rng = np.random.default_rng(0)
    words = [Word(np.full(8000, 0.1, np.float32), 8000, True, "a"), Word(np.full(12000, 0.1, np.float32), 12000, False, "n"),
             Word(np.full(11200, 0.1, np.float32), 9600, True, "a-reverb")]         # a 0.1 s tail after the word
    for _ in range(50):
        clip = compose(rng, np.zeros(CLIP_SAMPLES, np.float32), words, [1.0, 1.0, 1.0], min_gap=0.1)
        spans = sorted((p.start, p.start + len(next(w for w in words if w.source == p.source).audio) / RATE)
                       for p in clip.placements)
        assert all(b[0] - a[1] >= 0.1 - 1e-9 for a, b in zip(spans, spans[1:]))      # no overlap, 0.1 s apart
        assert spans[-1][1] <= 10.0 - 0.3 + 1e-9                                      # labels fit in the clip
        assert np.count_nonzero(clip.audio) == 8000 + 12000 + 11200                   # every sample where placed
        y = clip.labels(0.5)
        t = np.array([step_seconds(i) for i in range(CLIP_STEPS)])
        expect = np.zeros(CLIP_STEPS, bool)
        for p in clip.placements:
            if p.positive:
                expect |= (t > p.end) & (t <= p.end + 0.5)
                assert round(p.end - p.start, 6) in (0.5, 0.6)                        # the dry end, not the tail
        assert np.array_equal(y.astype(bool), expect) and 20 <= y.sum() <= 26         # ~12 steps per activate


def test_label_steps_by_hand():
    y = step_labels([Placement(1.0, 2.0, True, "a"), Placement(3.0, 4.0, False, "n")], span=0.5)
    on = np.flatnonzero(y)
    assert step_seconds(on[0]) > 2.0 >= step_seconds(on[0] - 1)
    assert step_seconds(on[-1]) <= 2.5 < step_seconds(on[-1] + 1)
    assert len(on) == 12                       # 0.5 s of 40 ms steps (12 or 13, here 12)


def test_place_refuses_words_that_cannot_fit():
    with pytest.raises(ValueError, match="do not fit"):
        place(np.random.default_rng(0), [9000, 9000], 17000, 0)
    assert not fits([9000, 9000], 17000, 0)
    assert fits([8000, 8000], 17000, 1000)                        # exactly full: words and the gap
    assert not fits([8000, 8000], 17000, 1001)
    assert place(np.random.default_rng(0), [8000, 8000], 17000, 1000) in ([0, 9000], [9000, 0])


def test_event_matching_by_hand():
    words = [(1.0, 1.6), (5.0, 5.7)]
    c = tm.match([1.2, 2.5, 2.7, 6.6, 9.0], words)          # 1.2 hit; 2.5 in word 1's window but it is used
    assert (c.tp, c.fp, c.fn) == (2, 3, 0)                   # 6.6 <= 5.7 + 1: hit; 2.7 and 9.0 false
    assert tm.match([], words) == tm.Counts(0, 0, 2)
    assert tm.match([0.9], words) == tm.Counts(0, 1, 2)      # before the word starts: false
    c = tm.Counts(8, 2, 2)
    assert (c.precision, c.recall, c.f1) == (0.8, 0.8, pytest.approx(0.8))
    rows = [{"threshold": t, "f1": f, "false_per_10min": fa} for t, f, fa in
            ((0.3, 0.95, 3.0), (0.4, 0.9, 0.4), (0.5, 0.9, 0.2), (0.6, 0.9, 0.0), (0.7, 0.8, 0.0))]
    assert tm.pick_threshold(rows, 0.5)["threshold"] == 0.5    # best F1 within the bound, middle of the tie


def test_speed_pitch_and_reverb_do_what_they_say():
    t = np.arange(RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 400 * t)).astype(np.float32)
    peak = lambda y: np.fft.rfftfreq(len(y), 1 / RATE)[np.abs(np.fft.rfft(y)).argmax()]  # noqa: E731
    fast = aug.change_speed(tone, 1.25)
    assert len(fast) == pytest.approx(RATE / 1.25, abs=2) and peak(fast) == pytest.approx(500, abs=3)
    up = aug.shift_pitch(tone, 12.0)
    assert len(up) == pytest.approx(RATE, abs=200) and peak(up) == pytest.approx(800, abs=5)
    wet = aug.add_reverb(tone, np.random.default_rng(0), rt60=0.5, direct_to_reverb_db=3.0)
    assert len(wet) == RATE + int(0.25 * RATE) and aug.rms(wet[:RATE]) == pytest.approx(aug.rms(tone), rel=1e-3)
    assert aug.rms(wet[RATE:]) > 0.01                           # the room rings on after the sound stops
    brown = aug.coloured_noise(np.random.default_rng(0), RATE, 2.0)
    spec = np.abs(np.fft.rfft(brown)) ** 2
    assert spec[10:200].mean() > 100 * spec[4000:6000].mean() and aug.rms(brown) == pytest.approx(1.0)


def test_tts_reads_its_cache_without_espeak(tmp_path, monkeypatch):
    from gates import tts

    u = tts.Utterance("activate", "en-us+f3", 150, 50)
    wavfile.write(tmp_path / u.file_name(), 22050, (0.3 * np.sin(np.arange(22050) / 5)).astype(np.float32))
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)          # as on CI: no espeak-ng
    assert len(tts.synthesise(u, tmp_path)) == RATE
    with pytest.raises(tts.TTSUnavailable, match="espeak-ng"):
        tts.synthesise(tts.Utterance("active", "en-us", 150, 50), tmp_path)


def test_tts_filled_by_several_at_once_gives_each_the_same_word(tmp_path, monkeypatch):
    """Training processes (or threads) that synthesise the same utterance at one time each get it:
    each writes its own temporary file before the rename (a shared one failed the slower one)."""
    import threading

    from gates import tts

    fake = tmp_path / "espeak-ng"         # writes its WAV (-w PATH) slowly, as a busy machine does
    fake.write_text("#!" + sys.executable + "\n"
                    "import sys, time, numpy as np\nfrom scipy.io import wavfile\n"
                    "out = sys.argv[sys.argv.index('-w') + 1]\ntime.sleep(0.3)\n"
                    "wavfile.write(out, 16000, (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32))\n")
    fake.chmod(0o755)
    monkeypatch.setattr(tts.shutil, "which", lambda name: str(fake) if name == "espeak-ng" else None)
    u, cache, got, errors = tts.Utterance("activate", "en-us", 150, 50), tmp_path / "cache", [], []

    def one():
        try:
            got.append(len(tts.synthesise(u, cache)))
        except Exception as e:                       # noqa: BLE001 - the test reports it
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and got == [RATE] * 4
    assert [f.name for f in cache.iterdir()] == [u.file_name()]      # no temporary file left behind


# ---------------------------------------------------------------------------- the shipped checkpoint
def _trigger_data() -> Path:
    d = Path(os.environ.get("FACEGATE_DATA", ROOT.parent / "shared" / "data")) / "trigger_word"
    if not (d / "activates").is_dir():
        pytest.skip(f"trigger-word data not found at {d} (set FACEGATE_DATA)")
    return d


shipped = pytest.mark.skipif(not DEFAULT_CHECKPOINT.exists(), reason="no shipped trigger-word checkpoint")


@shipped
def test_shipped_checkpoint_loads_with_its_decision_data():
    gate = create_gate("trigger_word")
    assert isinstance(gate, TriggerWordGate) and 0.05 <= gate.threshold <= 0.95
    assert 0.2 <= gate.meta["label_span"] < 1.0
    assert gate.meta["holdout"]["activates"] and gate.meta["holdout"]["backgrounds"]
    assert DEFAULT_CHECKPOINT.stat().st_size < 5_000_000


@pytest.mark.data     # reads the recordings itself (_trigger_data)
@shipped
def test_shipped_gate_hears_the_held_out_voice_and_not_the_held_out_background():
    d = _trigger_data()
    gate = TriggerWordGate.load()
    held = gate.meta["holdout"]
    bg = load_wav(d / "backgrounds" / held["backgrounds"][0])[:CLIP_SAMPLES]
    assert gate.probabilities(bg).max() < gate.threshold                  # the background alone: silence
    clip, truth = bg.copy(), []
    for name, at in zip(held.get("test_activates", held["activates"])[:2], (2.0, 6.0)):
        w = trim_silence(load_wav(d / "activates" / name))
        s = int(at * RATE)
        clip[s:s + len(w)] += w
        truth.append((at, at + len(w) / RATE))
    found = gate.predict(wav_bytes(clip, RATE))
    c = tm.match([e.t for e in found], truth)
    assert (c.tp, c.fp) == (2, 0), found


@pytest.mark.data     # reads the recordings itself (_trigger_data)
@shipped
@pytest.mark.slow
def test_trigger_cli_prints_the_contract_keys():
    d = _trigger_data()
    path = str(sorted((d / "dev").glob("*.wav"))[0])
    p = subprocess.run([sys.executable, "-m", "service.cli", "trigger", path, "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout)
    assert row["path"] == path and isinstance(row["detected"], bool) and row["detected"] == bool(row["events"])
    assert all(set(e) == {"t", "p"} and 0 <= e["t"] <= 10 and 0 <= e["p"] <= 1 for e in row["events"])


@shipped
@pytest.mark.slow
def test_trigger_cli_refuses_a_corrupt_wav_with_a_clear_error(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 7)
    p = subprocess.run([sys.executable, "-m", "service.cli", "trigger", str(bad), "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    err = json.loads(p.stdout)["error"]
    assert err["code"] == "INVALID_ARGUMENT" and "broken.wav" in err["message"] and "WAV" in err["message"]


def test_a_clip_shorter_than_one_step_is_padded_not_refused():
    net = TriggerNet()
    torch.nn.init.constant_(net.out.bias, -10.0)               # a net that never fires
    torch.nn.init.zeros_(net.out.weight)
    gate = TriggerWordGate(net, {"threshold": 0.5})
    assert len(gate.probabilities(np.zeros(10, np.float32))) == 1
    assert gate.predict(wav_bytes(np.zeros(800, np.int16), 16000)) == []      # 50 ms of silence


@pytest.mark.parametrize("rate, seconds, match", [(1, 5, "sample rate of 1 Hz"), (4000, 1, "sample rate"),
                                                  (400_000, 0.1, "sample rate"), (8000, 31, "more than the limit")])
def test_audio_a_microphone_cannot_have_made_is_refused_before_resampling(rate, seconds, match):
    """A WAV of 1 Hz would be resampled to 16 kHz x its length: 5 samples are harmless, but a
    hostile file's 200,000 would need tens of GB (found by bench/fuzz.py)."""
    import io

    from scipy.io import wavfile

    from gates.trigger_word import AudioError, load_wav

    buf = io.BytesIO()
    wavfile.write(buf, rate, np.zeros(max(1, int(rate * seconds)), np.int16))
    with pytest.raises(AudioError, match=match):
        load_wav(buf.getvalue())


# ---------------------------------------------------------------------------- the robust recipe, LOSO, confidence
def test_formant_shift_moves_the_spectral_envelope_and_keeps_the_pitch():
    t = np.arange(RATE) / RATE
    # a 150 Hz voice through one resonance near 1 kHz: harmonics weighted by a bump around 1 kHz
    voice = sum(np.exp(-((k * 150 - 1000) / 200) ** 2) * np.sin(2 * np.pi * k * 150 * t) for k in range(1, 30))
    voice = (0.3 * voice / np.abs(voice).max()).astype(np.float32)
    shifted = aug.shift_formants(voice, 1.2)
    spec = np.abs(np.fft.rfft(shifted * np.hanning(len(shifted))))
    f = np.fft.rfftfreq(len(shifted), 1 / RATE)
    assert len(shifted) == pytest.approx(RATE / 1.2, rel=0.02)
    assert f[spec.argmax()] == pytest.approx(1200, abs=160)                       # the resonance moved up 20 %
    harmonics = f[(spec > 0.05 * spec.max())]
    assert np.min(np.abs(harmonics[:, None] - 150 * np.arange(1, 30)[None]), axis=1).max() < 12   # pitch kept


def test_per_utterance_normalisation_ignores_loudness_and_a_fixed_microphone_colour():
    from gates.trigger_word import normalise_utterance

    x = spectrogram(np.random.default_rng(0).normal(0, 0.1, 2 * RATE).astype(np.float32))[None]
    tilt = torch.linspace(-2.0, 2.0, N_MELS)                                       # a fixed response per band
    a, b = normalise_utterance(x), normalise_utterance(x + np.log(4.0) + tilt)      # 4x the power, coloured
    assert torch.allclose(a, b, atol=1e-4) and abs(float(a.mean())) < 1e-4
    net = TriggerNet(utt_norm=True)
    assert net.args["utt_norm"] is True and "utt_norm" not in TriggerNet().args   # old checkpoints still load


def test_a_warped_filterbank_moves_a_tone_to_another_band():
    from gates.train_trigger import warped_filterbank
    from gates.trigger_word import mel_filterbank

    assert torch.allclose(warped_filterbank(1.0), torch.from_numpy(mel_filterbank()), atol=1e-6)
    tone = np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE).astype(np.float32)
    power = torch.stft(torch.from_numpy(tone), 400, 160, window=torch.hann_window(400), return_complex=True).abs() ** 2
    band = lambda fb: int((fb @ power).mean(1).argmax())  # noqa: E731
    assert band(warped_filterbank(1.1)) > band(warped_filterbank(1.0)) > band(warped_filterbank(0.9))


def test_loso_folds_keep_each_speaker_out_of_its_own_training(tmp_path):
    from gates.trigger_loso import folds, speaker_of
    from gates.train_trigger import TriggerConfig, split_files

    root = tmp_path / "trigger_word"
    names = {"activates": ["1.wav", "1_act2.wav", "2.wav", "2_act2.wav", "3_act3.wav", "4_act2.wav"],
             "negatives": [f"{i}.wav" for i in range(1, 7)], "backgrounds": ["1.wav", "2.wav"]}
    for kind, files in names.items():
        (root / kind).mkdir(parents=True)
        for n in files:
            wavfile.write(root / kind / n, RATE, np.zeros(RATE // 2, np.int16))
    fs = folds(root)
    assert [f["speaker"] for f in fs] == ["1", "2", "3", "4"] and speaker_of("3_act3.wav") == "3"
    for f in fs:
        assert {speaker_of(a) for a in f["test_activates"]} == {f["speaker"]} != {f["threshold_speaker"]}
        cfg = TriggerConfig(holdout_activates=tuple(f["test_activates"]), holdout_negatives=tuple(f["negatives"]),
                            holdout_backgrounds=(f["background"],), threshold_activates=tuple(f["threshold_activates"]))
        split = split_files(tmp_path, cfg)
        trained = {speaker_of(p.name) for p in split["train"]["activates"]}
        assert f["speaker"] not in trained and f["threshold_speaker"] not in trained and len(trained) == 2
        assert not {p.name for p in split["train"]["negatives"]} & set(f["negatives"])
        assert [p.name for p in split["train"]["backgrounds"]] != [f["background"]]
        assert [p.name for p in split["threshold"]["activates"]] == f["threshold_activates"]
    assert {f["background"] for f in fs} == {"1.wav", "2.wav"}


def test_loso_names_what_each_false_trigger_fired_on_and_the_best_f1_within_the_bound():
    from gates.trigger_loso import best_within, false_trigger_sources
    from gates.trigger_synth import Clip

    def fired(*times):                                        # p 0.99 for 3 steps from each time, else 0.01
        p = np.full(CLIP_STEPS, 0.01, np.float32)
        for t in times:
            p[seconds_to_step(t):seconds_to_step(t) + 3] = 0.99
        return p

    near = Placement(2.0, 2.6, False, "tts-test:accurate/en-029+m1")
    real = Placement(6.0, 6.5, False, "negatives/1_0.wav")
    clips = [Clip(np.zeros(CLIP_SAMPLES, np.float32), [near, real]), Clip(np.zeros(CLIP_SAMPLES, np.float32), [real])]
    probs = [fired(2.7, 6.6, 9.0), fired(6.4)]                # 2.7: after "accurate"; 9.0: 2.5 s after any word
    assert false_trigger_sources(probs, clips, 0.5, 3) == {"negatives/1_0.wav": 2, "no word": 1,
                                                           "tts-test:accurate/en-029+m1": 1}
    assert false_trigger_sources(probs, clips, 0.995, 3) == {}
    def rows(minutes):                                        # as tm.sweep gives them
        return [{"threshold": t, "f1": f1, "false_triggers": n, "false_per_10min": n * 10.0 / minutes}
                for t, f1, n in ((0.5, 0.99, 3), (0.9, 0.95, 1), (0.95, 0.95, 0), (0.99, 0.6, 0))]
    assert best_within(rows(60.0)) == {"f1": 0.95, "threshold": 0.9, "false_triggers": 1}   # ties: the lower
    assert best_within(rows(30.0)) == {"f1": 0.95, "threshold": 0.95, "false_triggers": 0}  # 1 in 30 min: 2 per hour
    assert best_within(rows(60.0)[:1]) is None


def test_training_voices_never_include_the_test_voices():
    from gates import tts

    train, test = set(tts.training_voices()), set(tts.test_voices())
    assert test and train and not train & test
    assert all(v.split("+")[0] in tts.TEST_BASE_VOICES for v in test)
    u = tts.Utterance("activate", "festival:kal_diphone", 100, 0)
    assert ":" not in u.file_name() and "+" not in tts.Utterance("a", "en-us+f3", 150, 50).file_name()


def test_a_gate_tells_no_word_from_a_word_like_sound():
    from gates.trigger_word import Heard

    net = TriggerNet()
    torch.nn.init.zeros_(net.out.weight)
    gate = TriggerWordGate(net, {"threshold": 0.8})
    silence = wav_bytes(np.zeros(RATE, np.int16), RATE)
    for bias, verdict in ((-5.0, "not_heard"), (0.0, "say_again"), (5.0, "heard")):     # p 0.007, 0.5, 0.993
        torch.nn.init.constant_(net.out.bias, bias)
        h = gate.listen(silence)
        assert h.verdict == verdict and h.retry_threshold == 0.4 and bool(h.events) == (verdict == "heard")
    assert Heard([], 0.55, 0.8, 0.4).message().startswith("say it again")
    assert Heard([], 0.1, 0.8, 0.4).message().startswith("no word heard") and "peak p 0.10" in \
        Heard([], 0.1, 0.8, 0.4).message()
    assert TriggerWordGate(net, {"threshold": 0.8, "retry_threshold": 0.7}).retry_threshold == 0.7


def test_accent_voices_join_training_only_when_asked_and_never_the_test_voices():
    from gates import tts
    from gates.train_trigger import ACCENTS, ROBUST, TriggerConfig, tts_plan

    plain, accents = tts.training_voices(), tts.training_voices(accents=True)
    assert accents[:len(plain)] == plain and len(accents) > len(plain)
    extra = {v.split("+")[0] for v in accents[len(plain):]}
    assert extra == set(tts.ACCENT_BASE_VOICES) and not set(accents) & set(tts.test_voices())
    assert ACCENTS["accent_voices"] and not ROBUST.get("accent_voices", False)
    cfg = TriggerConfig(**{**ACCENTS, "tts_positives": 40, "tts_negatives": 60, "festival_share": 0.0})
    spoken = {u.voice.split("+")[0] for k, us in tts_plan(cfg).items() for u in us}
    assert spoken & set(tts.ACCENT_BASE_VOICES) and not spoken & set(tts.TEST_BASE_VOICES)


def _member(bias: float, utt_norm: bool = False) -> TriggerNet:
    torch.manual_seed(int(bias * 10) + 7)
    net = TriggerNet(utt_norm=utt_norm).eval()
    torch.nn.init.constant_(net.out.bias, bias)
    return net


def test_an_ensemble_hears_the_mean_of_its_members_and_survives_a_save(tmp_path):
    from gates.trigger_word import TriggerEnsemble, save_trigger, spectrogram

    a, b = _member(-1.0), _member(2.0, utt_norm=True)
    ens = TriggerEnsemble.of([a, b])
    audio = np.random.default_rng(0).normal(0, 0.05, RATE * 2).astype(np.float32)
    spec = spectrogram(audio)[None]
    with torch.inference_mode():
        want = (torch.sigmoid(a(spec)) + torch.sigmoid(b(spec))) / 2
        got = torch.sigmoid(ens(spec))
    assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(want, torch.sigmoid(a(spec)), atol=1e-2)
    path = tmp_path / "pair.pt"
    save_trigger(path, ens, threshold=0.6, min_gap_steps=3, members=[{"version": "a"}, {"version": "b"}])
    gate = TriggerWordGate.load(path)
    assert isinstance(gate.model, TriggerEnsemble) and gate.threshold == 0.6 and gate.min_gap_steps == 3
    assert np.allclose(gate.probabilities(audio), got[0].numpy(), atol=1e-6)
    single = tmp_path / "one.pt"                                   # a single detector still loads as one
    save_trigger(single, a, threshold=0.5)
    assert isinstance(TriggerWordGate.load(single).model, TriggerNet)
    with pytest.raises(ValueError, match="at least two"):
        TriggerEnsemble([a.args])


def test_an_ensemble_refuses_members_trained_on_different_hold_outs(tmp_path):
    from gates.trigger_ensemble import combine
    from gates.trigger_word import save_trigger

    held = {"activates": ["3.wav"], "test_activates": ["3.wav"], "threshold_activates": ["4_act2.wav"],
            "negatives": ["3.wav"], "backgrounds": ["2.wav"]}
    save_trigger(tmp_path / "a.pt", _member(0.0), threshold=0.9, holdout=held, label_span=0.5, min_gap_steps=3)
    save_trigger(tmp_path / "b.pt", _member(1.0), threshold=0.9, holdout={**held, "test_activates": ["1.wav"]},
                 label_span=0.5, min_gap_steps=3)
    with pytest.raises(ValueError, match="different hold-outs"):
        combine([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path, tmp_path)
    with pytest.raises(ValueError, match="at least two"):
        combine([tmp_path / "a.pt"], tmp_path, tmp_path)
    save_trigger(tmp_path / "c.pt", _member(2.0), threshold=0.9, holdout=held, label_span=0.5, min_gap_steps=3)
    with pytest.raises(ValueError, match="no training config"):         # the same hold-out, but no recipe
        combine([tmp_path / "a.pt", tmp_path / "c.pt"], tmp_path, tmp_path)


def test_loso_test_clips_leave_out_a_negative_that_would_overflow_the_clip(tmp_path, monkeypatch):
    import gates.trigger_loso as tl
    from gates.trigger_synth import Word

    root = tmp_path / "trigger_word"
    lengths = {"activates": (["1.wav", "2.wav", "3.wav", "4_act2.wav"], 0.8),
               "negatives": ([f"{i}.wav" for i in range(1, 7)], 4.2), "backgrounds": (["1.wav", "2.wav"], 12.0)}
    rng = np.random.default_rng(0)
    for kind, (files, seconds) in lengths.items():
        (root / kind).mkdir(parents=True)
        for n in files:                                      # noise, so that trimming keeps the whole length
            wavfile.write(root / kind / n, RATE, (rng.normal(0, 3000, int(seconds * RATE))).astype(np.int16))
    monkeypatch.setattr(tl, "test_voice_words", lambda n, seed, cache: [
        Word(np.full(RATE // 2, 0.01, np.float32), RATE // 2, False, "tts-test:other") for _ in range(4)])
    fold = tl.folds(root)[0]
    with_words, free = tl.test_set(root, fold, 40, 2.0, 7, tmp_path)     # up to 3 x 4.2 s negatives: overflow
    assert len(with_words) == 40 and len(free) == 12
    assert all(any(p.positive for p in c.placements) for c in with_words)
    assert max(len(c.placements) for c in with_words + free) >= 2
    assert all(c.placements[-1].end <= tl.CLIP_SECONDS - tl.TAIL + 1e-6 for c in with_words + free)


def test_a_warm_restart_schedule_begins_as_the_shorter_run_and_starts_again_from_its_warm_up():
    from gates.train_trigger import TriggerConfig, lr_at

    short, long = TriggerConfig(steps=300, warmup=20), TriggerConfig(steps=600, warmup=20, cycles=2)
    assert [lr_at(k, long) for k in range(300)] == [lr_at(k, short) for k in range(300)]
    assert [lr_at(k, long) for k in range(300, 600)] == [lr_at(k, short) for k in range(300)]
    assert lr_at(299, long) == pytest.approx(0.05 * long.lr, rel=1e-3)      # the first cycle ends at the floor
    assert lr_at(319, long) == pytest.approx(long.lr)                         # and the second warms up again
    assert all(lr_at(k, long) >= lr_at(k + 1, long) for k in range(320, 599))
    one = TriggerConfig(steps=600, warmup=20)
    assert lr_at(300, one) > 0.4 * one.lr                                      # one cycle: no restart halfway

