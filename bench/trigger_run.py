"""The trigger-word gate on audio it never heard: the held-out voice and background.

  python bench/trigger_run.py [--checkpoint gates/weights/trigger_word.pt] [--data ../shared/data] \
      [--out docs/gates/trigger_run.json]
  python bench/trigger_run.py --loso [--recipe shipped|robust|accents|pair] [--steps 250] [--word-free-minutes 60]
      leave-one-speaker-out: one model per real speaker, trained without that speaker (gates/trigger_loso.py)

The hold-out is read from the checkpoint (what its training kept out). Test audio:
  - word clips: 10 s pieces of the held-out background (random circular shift, +-3 dB) with 1-3
    of the held-out speaker's "activate" recordings (as recorded, +-6 dB) and 0-3 held-out
    negative words at random, non-overlapping places;
  - word-free audio (>= 30 min): the held-out background with 1-4 held-out negative words per
    10 s, never "activate";
  - the two unlabelled dev clips, as they are.
Nothing is augmented beyond placement and gain: the recordings are the real ones. Prints
one JSON object (also written to --out; with the median time the gate takes per 10 s clip, on
one thread) and draws a PNG beside it: F1 / precision / recall
against the threshold on the test (a diagnostic: the threshold in use was chosen on
validation), and probability traces of test and dev clips.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gates import trigger_metrics as tm  # noqa: E402
from gates.trigger_synth import CLIP_SECONDS, Clip, compose, fit_background, load_word  # noqa: E402
from gates.trigger_word import TriggerWordGate, events, load_wav, step_seconds  # noqa: E402
from gates.audio_augment import db_to_gain  # noqa: E402


def test_clips(data: Path, holdout: dict, n_word_clips: int, word_free_minutes: float, seed: int):
    root = data / "trigger_word"
    pos = [load_word(root / "activates" / n, True, f"activates/{n}")
           for n in holdout.get("test_activates", holdout["activates"])]
    neg = [load_word(root / "negatives" / n, False, f"negatives/{n}") for n in holdout["negatives"]]
    bgs = [load_wav(root / "backgrounds" / n) for n in holdout["backgrounds"]]
    rng = np.random.default_rng(seed)

    def clip(n_pos: int, n_neg: int) -> Clip:
        bg = fit_background(bgs[int(rng.integers(len(bgs)))], rng) * db_to_gain(float(rng.uniform(-3, 3)))
        words = [pos[int(rng.integers(len(pos)))] for _ in range(n_pos)]
        words += [neg[int(rng.integers(len(neg)))] for _ in range(n_neg)]
        return compose(rng, bg, words, [db_to_gain(float(rng.uniform(-6, 6))) for _ in words], min_gap=0.2)

    with_words = [clip(int(rng.integers(1, 4)), int(rng.integers(0, 4))) for _ in range(n_word_clips)]
    n_free = int(np.ceil(word_free_minutes * 60 / CLIP_SECONDS))
    free = [clip(0, int(rng.integers(1, 5))) for _ in range(n_free)]
    return with_words, free


def positives(c: Clip) -> list[tuple[float, float]]:
    return [(p.start, p.end) for p in c.placements if p.positive]


def plot(path: Path, rows, threshold, traces, dev):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2 + len(traces) + len(dev), 1, figsize=(11, 2.2 * (2 + len(traces) + len(dev))))
    th = [r["threshold"] for r in rows]
    ax = axes[0]
    for k in ("f1", "precision", "recall"):
        ax.plot(th, [r[k] for r in rows], label=k)
    ax.axvline(threshold, color="k", ls="--", label=f"threshold in use {threshold:.3f} (chosen on validation)")
    ax.set_xlabel("threshold")
    ax.set_title("held-out voice + background: event metrics vs threshold (diagnostic)")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot(th, [r["false_per_10min"] for r in rows])
    ax.axvline(threshold, color="k", ls="--")
    ax.axhline(1.0, color="r", lw=0.8)
    ax.set_yscale("symlog")
    ax.set_ylabel("false / 10 min")
    ax.set_title("false triggers per 10 min on word-free held-out audio")
    t = np.array([step_seconds(i) for i in range(len(traces[0][1]))])
    for ax, (c, p) in zip(axes[2:], traces + dev):
        ax.plot(t, p, lw=1)
        ax.axhline(threshold, color="k", ls="--", lw=0.8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0, CLIP_SECONDS)
        if isinstance(c, Clip):
            for w in c.placements:
                ax.axvspan(w.start, w.end, color="g" if w.positive else "0.8", alpha=0.3)
                if w.positive:
                    ax.axvspan(w.end, w.end + tm.AFTER_END, color="g", alpha=0.08)
            ax.set_title("test clip: green = held-out 'activate' (light: the 1 s after), grey = other words", fontsize=8)
        else:
            ax.set_title(f"dev clip {c}", fontsize=8)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def loso(a) -> None:
    """--loso: train a model per speaker fold with a recipe and test it on that fold's held-out audio."""
    import torch

    from gates.trigger_loso import run_loso
    from gates.tts import DEFAULT_CACHE

    torch.set_num_threads(1)
    try:
        from gates.tts import install

        install()                    # espeak-ng and festival from Debian's packages (a no-op when installed)
    except Exception as e:           # noqa: BLE001 -- a filled cache still runs
        print(f"could not install the synthesisers ({e}); relying on the cache", file=sys.stderr)
    out = run_loso(a.recipe, a.steps, Path(a.data), Path(a.runs) / a.recipe, DEFAULT_CACHE, a.seed,
                   a.word_clips, max(a.word_free_minutes, 60.0), speakers=a.speakers, cycles=a.cycles)
    path = Path(a.out) if a.out else ROOT / "docs" / "gates" / f"trigger_loso_{a.recipe}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="(default: the shipped gates/weights/trigger_word.pt)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=None, help="(default docs/gates/trigger_run.json, or "
                                                 "docs/gates/trigger_loso_RECIPE.json with --loso)")
    ap.add_argument("--word-clips", type=int, default=100)
    ap.add_argument("--word-free-minutes", type=float, default=32.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--loso", action="store_true",
                    help="leave-one-speaker-out: train a model per real speaker (gates/trigger_loso.py) and test "
                         "each on its held-out speaker, background, negatives and >= 60 min of word-free audio")
    ap.add_argument("--recipe", choices=("shipped", "robust", "accents", "pair"), default="shipped",
                    help="(--loso) the training recipe; pair: robust and accents trained apart, their mean heard")
    ap.add_argument("--steps", type=int, default=250, help="(--loso) training steps per fold")
    ap.add_argument("--cycles", type=int, default=1, help="(--loso) cosine cycles with warm restarts per "
                    "member (the first of N is a steps/N-step run: its checkpoints resume into the longer run)")
    ap.add_argument("--speakers", nargs="*", help="(--loso) only these speakers' folds (e.g. one process per "
                                                    "pair of folds, then a run of all of them resumes every fold)")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "trigger_loso"), help="(--loso) fold run folders (resumable)")
    a = ap.parse_args(argv)
    if a.loso:
        return loso(a)
    a.out = a.out or str(ROOT / "docs" / "gates" / "trigger_run.json")
    import torch

    torch.set_num_threads(1)
    gate = TriggerWordGate.load(a.checkpoint)
    holdout = gate.meta["holdout"]
    gap = int(gate.meta.get("min_gap_steps", 0))
    data = Path(a.data)
    with_words, free = test_clips(data, holdout, a.word_clips, a.word_free_minutes, a.seed)
    probs, seconds = [], []
    for c in with_words:                     # one thread: the gate's cost per 10 s clip, as a door pays it
        t0 = time.perf_counter()
        probs.append(gate.probabilities(c.audio))
        seconds.append(time.perf_counter() - t0)
    free_probs = [gate.probabilities(c.audio) for c in free]
    minutes = len(free) * CLIP_SECONDS / 60
    truth = [positives(c) for c in with_words]
    at = tm.score(probs, truth, gate.threshold, gap)
    fa = tm.score(free_probs, [[] for _ in free], gate.threshold, gap).fp
    # 3.wav alone: the one voice unheard in training whichever reading of the speakers holds
    strict, _ = test_clips(data, {**holdout, "test_activates": ["3.wav"]}, a.word_clips, 0, a.seed + 1)
    st = tm.score([gate.probabilities(c.audio) for c in strict], [positives(c) for c in strict], gate.threshold, gap)
    rows = tm.sweep(probs, truth, free_probs, minutes, np.round(np.arange(0.05, 0.96, 0.025), 3), gap)
    dev = []
    for f in sorted((data / "trigger_word" / "dev").glob("*.wav")):
        p = gate.probabilities(load_wav(f))
        dev.append((f.name, p, [{"t": e.t, "p": round(e.p, 4)} for e in events(p, gate.threshold, gap)]))
    out = {
        "checkpoint": str(a.checkpoint or "gates/weights/trigger_word.pt"),
        "version": gate.meta.get("version"),
        "members": [m.get("version") for m in gate.meta.get("members", [])] or None,
        "threshold": gate.threshold,
        "threshold_chosen_on": gate.meta.get("threshold_chosen_on", "validation (training sources only)"),
        "label_span_s": gate.meta.get("label_span"), "min_gap_steps": gap,
        "holdout": {k: holdout[k] for k in ("activates", "test_activates", "negatives", "backgrounds") if k in holdout},
        "event_rule": "hit when start <= t <= end + 1 s of a true 'activate', each word at most once",
        "test": {"clips_with_words": len(with_words), "activates": at.tp + at.fn, "tp": at.tp, "fp": at.fp, "fn": at.fn,
                 "precision": round(at.precision, 4), "recall": round(at.recall, 4), "f1": round(at.f1, 4),
                 "minutes": round(len(with_words) * CLIP_SECONDS / 60, 2)},
        "test_3wav_only": {"clips_with_words": len(strict), "activates": st.tp + st.fn, "tp": st.tp, "fp": st.fp,
                           "fn": st.fn, "precision": round(st.precision, 4), "recall": round(st.recall, 4),
                           "f1": round(st.f1, 4)},
        "word_free": {"minutes": round(minutes, 2), "false_triggers": fa, "false_per_10min": round(fa * 10 / minutes, 3),
                      "negative_words": sum(len(c.placements) for c in free)},
        "test_minutes_total": round((len(with_words) + len(free)) * CLIP_SECONDS / 60, 2),
        "ms_per_clip_median": round(1000 * float(np.median(seconds[3:] or seconds)), 2),
        "threads": torch.get_num_threads(),
        "targets": {"f1>=0.90": at.f1 >= 0.90, "false_per_10min<=1": fa * 10 / minutes <= 1.0},
        "dev": {name: ev for name, _, ev in dev},
        "best_test_f1_any_threshold": round(max(r["f1"] for r in rows), 4),
        "sweep": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
        "seed": a.seed,
    }
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    traces = [(with_words[i], probs[i]) for i in range(3)]
    plot(path.with_suffix(".png"), rows, gate.threshold, traces, [(n, p) for n, p, _ in dev])
    print(json.dumps({k: v for k, v in out.items() if k != "sweep"}))


if __name__ == "__main__":
    main()
