"""Leave-one-speaker-out measurement of a trigger-word training recipe on the real recordings.

Each of the speakers of trigger_word/activates (the file name's first number) is the test speaker
once: a model is trained without any of that speaker's recordings, without one of the two
backgrounds and without four of the ten negative words, and is then tested on audio composed from
those held-out sources only:
  - word clips: 10 s of the held-out background (random circular shift, +-3 dB) with 1-3 of the test
    speaker's "activate" recordings as recorded (+-6 dB) and 0-3 held-out negative words (real, or
    spoken by the test voices: espeak-ng's tts.TEST_BASE_VOICES, which no training uses);
  - word-free audio (>= 60 min): the held-out background, or generated coloured noise, with 1-4
    held-out negative words (real or test voices) per 10 s, never "activate".
Nothing is augmented beyond placement, gain and the generated noise: the recordings are the real ones.
A recipe that is an ensemble (PAIRS: "pair", the shipped gate's) trains each of its members in the
fold, then hears them together with the threshold chosen on the first member's validation set.
Scoring (gates/trigger_metrics.py): an event is a hit when it fires between a word's start and 1 s
after its end; each word counts once; every other event is a false trigger. Each fold also names what
its false triggers fired on (the placed word each lands in, "no word" otherwise) and, as a diagnostic
read off the test itself (never a result), the best F1 that any threshold reaches within 1 false
trigger per hour: how far the weights, rather than the threshold's choice, are from the bar.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import audio_augment as aug
from . import trigger_metrics as tm
from .trigger_synth import CLIP_SAMPLES, CLIP_SECONDS, Clip, Word, compose, fit_background, fits, load_word, trim_silence
from .trigger_word import RATE, events, load_wav

N_TEST_NEGATIVES = 4
GAP, TAIL = 0.2, 0.3           # seconds between the test clips' words, and kept free at a clip's end
# recipes that are ensembles: their members' recipes (gates/trigger_ensemble.py), trained per fold
PAIRS = {"pair": ("robust", "accents")}


def speaker_of(name: str) -> str:
    """activates/3_act2.wav -> "3" (the data README: the file name's first number is the speaker)."""
    return Path(name).stem.split("_")[0]


def folds(root: Path) -> list[dict]:
    """One fold per speaker: its test recordings, the held-out negatives and background, and (for the
    nested threshold) the next speaker's recordings, which the fold's weights must not see either."""
    acts = sorted(f.name for f in (root / "activates").glob("*.wav"))
    negs = sorted(f.name for f in (root / "negatives").glob("*.wav"))
    bgs = sorted(f.name for f in (root / "backgrounds").glob("*.wav"))
    if not acts or len(negs) <= N_TEST_NEGATIVES or len(bgs) < 2:
        raise FileNotFoundError(f"{root} needs activates/, > {N_TEST_NEGATIVES} negatives/ and 2 backgrounds/")
    speakers = sorted({speaker_of(a) for a in acts}, key=lambda s: (len(s), s))
    out = []
    for k, s in enumerate(speakers):
        thr = speakers[(k + 1) % len(speakers)]
        out.append({"speaker": s, "test_activates": [a for a in acts if speaker_of(a) == s],
                    "threshold_speaker": thr, "threshold_activates": [a for a in acts if speaker_of(a) == thr],
                    "negatives": [negs[(2 * k + j) % len(negs)] for j in range(N_TEST_NEGATIVES)],
                    "background": bgs[k % len(bgs)]})
    return out


def test_voice_words(n: int, seed: int, cache: Path) -> list[Word]:
    """Other words (near misses among them) spoken by the test voices: never "activate", never in training."""
    from .train_trigger import NEAR_MISSES, OTHER_WORDS
    from .tts import Utterance, synthesise, test_voices

    rng = np.random.default_rng([seed, 7])
    voices, texts = test_voices(), list(NEAR_MISSES) * 2 + list(OTHER_WORDS)
    utts = [Utterance(str(texts[int(rng.integers(len(texts)))]), str(voices[int(rng.integers(len(voices)))]),
                      int(rng.integers(110, 230)), int(rng.integers(15, 86))) for _ in range(n)]
    return [Word(x, len(x), False, f"tts-test:{u.text}/{u.voice}") for u in utts
            for x in [trim_silence(synthesise(u, cache))]]


def test_set(root: Path, fold: dict, n_word_clips: int, word_free_minutes: float, seed: int,
             cache: Path) -> tuple[list[Clip], list[Clip]]:
    rng = np.random.default_rng([seed, 11])
    pos = [load_word(root / "activates" / n, True, f"activates/{n}") for n in fold["test_activates"]]
    real_neg = [load_word(root / "negatives" / n, False, f"negatives/{n}") for n in fold["negatives"]]
    tts_neg = test_voice_words(160, seed, cache)
    bg_src = load_wav(root / "backgrounds" / fold["background"])

    def negative() -> tuple[Word, float]:
        if rng.random() < 0.5:
            return real_neg[int(rng.integers(len(real_neg)))], aug.db_to_gain(float(rng.uniform(-6, 6)))
        w = tts_neg[int(rng.integers(len(tts_neg)))]
        return w, aug.db_to_gain(float(rng.uniform(-36, -16))) / max(aug.rms(w.audio), 1e-6)

    def clip(n_pos: int, n_neg: int, noise_only: bool = False) -> Clip:
        if noise_only:
            bg = aug.db_to_gain(float(rng.uniform(-55, -25))) * aug.coloured_noise(rng, CLIP_SAMPLES,
                                                                                   float(rng.uniform(0, 2)))
        else:
            bg = fit_background(bg_src, rng) * aug.db_to_gain(float(rng.uniform(-3, 3)))
        words = [pos[int(rng.integers(len(pos)))] for _ in range(n_pos)]
        gains = [aug.db_to_gain(float(rng.uniform(-6, 6))) for _ in words]
        for _ in range(n_neg):
            w, g = negative()
            # a negative that would overflow the clip (long real negatives can) is left out
            if fits([len(x.audio) for x in words + [w]], CLIP_SAMPLES - int(TAIL * RATE), int(GAP * RATE)):
                words.append(w)
                gains.append(g)
        return compose(rng, bg.astype(np.float32), words, gains, min_gap=GAP, tail_reserve=TAIL)

    with_words = [clip(int(rng.integers(1, 4)), int(rng.integers(0, 4))) for _ in range(n_word_clips)]
    n_free = int(np.ceil(word_free_minutes * 60 / CLIP_SECONDS))
    free = [clip(0, int(rng.integers(1, 5)), noise_only=rng.random() < 0.25) for _ in range(n_free)]
    return with_words, free


def positives(c: Clip) -> list[tuple[float, float]]:
    return [(p.start, p.end) for p in c.placements if p.positive]


# finer above 0.95, where the false triggers of a well-trained model are decided
CEILING_THRESHOLDS = np.round(np.concatenate([np.arange(0.05, 0.95, 0.025), np.arange(0.95, 0.996, 0.005)]), 4)


def false_trigger_sources(free_probs: list[np.ndarray], free: list[Clip], threshold: float, gap: int,
                          before: float = 0.2, after: float = tm.AFTER_END) -> dict[str, int]:
    """What the events on word-free clips fired on: the placed word whose (start - `before`, end + `after`)
    holds the event ("negatives/1_0.wav", "tts-test:accurate/en-029+m1"), else "no word"; most first."""
    counts: dict[str, int] = {}
    for p, c in zip(free_probs, free):
        for e in events(p, threshold, gap):
            near = [pl.source for pl in c.placements if pl.start - before <= e.t <= pl.end + after]
            key = near[0] if near else "no word"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def best_within(rows: list[dict], max_per_hour: float = 1.0) -> dict | None:
    """The best F1 among tm.sweep's rows with at most `max_per_hour` false triggers per hour (None if none
    is). Read off the test itself: a diagnostic of what a threshold could reach, never a result."""
    ok = [r for r in rows if r["false_per_10min"] <= max_per_hour / 6 + 1e-9]
    if not ok:
        return None
    r = max(ok, key=lambda r: (r["f1"], -r["threshold"]))
    return {"f1": round(r["f1"], 4), "threshold": r["threshold"], "false_triggers": r["false_triggers"]}


def score_fold(model, threshold: float, gap: int, with_words: list[Clip], free: list[Clip]) -> dict:
    from .train_trigger import predict

    probs = predict(model, [c.audio for c in with_words])
    free_probs = predict(model, [c.audio for c in free])
    c = tm.score(probs, [positives(x) for x in with_words], threshold, gap)
    sources = false_trigger_sources(free_probs, free, threshold, gap)
    fa = sum(sources.values())                   # no word in these clips: every event is a false trigger
    minutes = len(free) * CLIP_SECONDS / 60
    rows = tm.sweep(probs, [positives(x) for x in with_words], free_probs, minutes, CEILING_THRESHOLDS, gap)
    best = max((r for r in rows if r["threshold"] <= 0.95 + 1e-9), key=lambda r: r["f1"])
    return {"words": c.tp + c.fn, "tp": c.tp, "fp": c.fp, "fn": c.fn, "precision": round(c.precision, 4),
            "recall": round(c.recall, 4), "f1": round(c.f1, 4),
            "word_free_minutes": round(minutes, 1), "false_triggers": fa, "false_per_hour": round(fa * 60 / minutes, 3),
            "best_f1_any_threshold": {"f1": round(best["f1"], 4), "threshold": best["threshold"]},
            "best_f1_within_1_per_hour": best_within(rows),
            "false_trigger_sources": sources}


def training_seconds(run_dir: Path, this_call: float) -> float:
    """How long a member's training took: its log's last elapsed time (a run resumed when already
    finished spends no training in this call), else the seconds of this call."""
    log_path = Path(run_dir) / "log.jsonl"
    if log_path.exists():
        rows = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()]
        if rows and "elapsed_s" in rows[-1]:
            return float(rows[-1]["elapsed_s"])
    return this_call


def run_loso(recipe: str, steps: int, data: Path, out: Path, cache: Path, seed: int = 0, word_clips: int = 100,
             word_free_minutes: float = 60.0, log=lambda m: print(m, file=sys.stderr),
             speakers: list[str] | None = None, cycles: int = 1) -> dict:
    """Train and test one model per fold (only `speakers`' folds when given: folds are independent and
    resumable, so processes may share them out); -> per speaker, mean, worst and pooled figures."""
    import torch

    from .train_trigger import RECIPES, TriggerConfig, run
    from .trigger_ensemble import combine
    from .trigger_word import TriggerWordGate

    torch.set_num_threads(1)
    root = Path(data) / "trigger_word"
    members = PAIRS.get(recipe, (recipe,))
    rows = []
    for fold in folds(root):
        if speakers and fold["speaker"] not in speakers:
            continue
        t0 = time.time()
        fold_dir = Path(out) / f"speaker{fold['speaker']}"
        export = fold_dir / "trigger_word.pt"
        train_seconds = 0.0
        member_exports = []
        for r in members:
            over = dict(RECIPES[r], threshold_activates=tuple(fold["threshold_activates"])) if r in RECIPES else {}
            cfg = TriggerConfig(steps=steps, cycles=cycles, eval_every=steps, ckpt_every=min(steps, 250), threads=1,
                                workers=0, seed=seed,
                                holdout_activates=tuple(fold["test_activates"]),
                                test_activates=tuple(fold["test_activates"]),
                                holdout_negatives=tuple(fold["negatives"]), holdout_backgrounds=(fold["background"],),
                                **over)
            run_dir = fold_dir / r if len(members) > 1 else fold_dir
            res = run(replace(cfg), Path(data), run_dir, cache, run_dir / "trigger_word.pt", log=log)
            train_seconds += training_seconds(run_dir, res["seconds"])
            member_exports.append(run_dir / "trigger_word.pt")
        if len(members) > 1:              # the threshold on the first member's validation set
            combine(member_exports, Path(data), cache, export, log=log)
        gate = TriggerWordGate.load(export)
        with_words, free = test_set(root, fold, word_clips, word_free_minutes, seed + 1234, cache)
        m = score_fold(gate.model, gate.threshold, gate.min_gap_steps, with_words, free)
        row = {"speaker": fold["speaker"], "recordings": len(fold["test_activates"]),
               "test_activates": fold["test_activates"], "held_out_negatives": fold["negatives"],
               "held_out_background": fold["background"], "threshold": gate.threshold,
               "threshold_chosen_on": gate.meta.get("threshold_chosen_on", "validation (training sources only)"),
               **m, "train_seconds": round(train_seconds, 1), "fold_seconds": round(time.time() - t0, 1)}
        log(json.dumps(row))
        rows.append(row)
    if not rows:
        raise ValueError(f"no fold for speakers {speakers}")
    f1s = [r["f1"] for r in rows]
    minutes = sum(r["word_free_minutes"] for r in rows)
    fa = sum(r["false_triggers"] for r in rows)
    return {"recipe": recipe, "steps_per_fold": steps, "cycles": cycles, "batch": TriggerConfig().batch, "folds": rows,
            "mean_f1": round(float(np.mean(f1s)), 4), "worst_f1": round(float(np.min(f1s)), 4),
            "worst_speaker": rows[int(np.argmin(f1s))]["speaker"],
            "word_free_minutes_total": round(minutes, 1), "false_triggers_total": fa,
            "false_per_hour_pooled": round(fa * 60 / minutes, 3),
            "false_per_hour_worst_fold": max(r["false_per_hour"] for r in rows),
            "acceptance": {"mean_f1>=0.95": float(np.mean(f1s)) >= 0.95, "worst_f1>=0.90": min(f1s) >= 0.90,
                           "false_per_hour<=1 (every fold)": all(r["false_per_hour"] <= 1.0 for r in rows)},
            "event_rule": "hit when start <= t <= end + 1 s of a true 'activate', each word at most once; "
                          "any other event is a false trigger"}
