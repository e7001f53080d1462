"""Scratch: per fold, validation (standard), the extra near-miss set (rule D) and the LOSO test,
scored by the fold's gate; saved to a pickle for offline threshold rules."""
import pickle, sys, json
from dataclasses import replace
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, "/work/main")
from gates import trigger_loso as tl, trigger_metrics as tm
from gates.train_trigger import (config_from_dict, split_files, tts_plan, validation_set, predict, build_pools,
                                 NEAR_MISSES, OTHER_WORDS, tts_words, positives_of)
from gates.trigger_synth import vary_background, compose, word_gain, fits, CLIP_SAMPLES, MixConfig
from gates.trigger_word import TriggerWordGate, events
from gates.tts import Utterance, DEFAULT_CACHE

torch.set_num_threads(1)
DATA = Path("/work/shared/data"); CACHE = DEFAULT_CACHE
run_dir, seed, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
N = 2000
res = {}
for fold in tl.folds(DATA / "trigger_word"):
    sp = fold["speaker"]
    fd = run_dir / f"speaker{sp}"
    gate = TriggerWordGate.load(fd / "trigger_word.pt")
    first = fd / "robust" / "trigger_word.pt" if (fd / "robust").is_dir() else fd / "trigger_word.pt"
    _c = dict(TriggerWordGate.load(first).meta["config"]); _c["mix"] = {k: v for k, v in _c["mix"].items() if k != "hard_share"}; cfg = config_from_dict(_c)
    split, plan = split_files(DATA, cfg), tts_plan(cfg)
    val = validation_set(cfg, split, plan, CACHE)
    # rule D's extra near misses: the validation voices, each utterance placed once
    rng = np.random.default_rng([cfg.seed, 99])
    vs = sorted({u.voice for u in plan["val_positive"] + plan["val_negative"]})
    texts = list(NEAR_MISSES) * 2 + list(OTHER_WORDS)
    utts = [Utterance(str(texts[int(rng.integers(len(texts)))]), str(vs[int(rng.integers(len(vs)))]),
                      int(rng.integers(110, 230)), int(rng.integers(15, 86))) for _ in range(N)]
    words = tts_words(utts, False, CACHE, rng, 0.5, 0.0)
    from dataclasses import replace as _r
    words = [_r(w, source=f"{i}:{w.source}") for i, w in enumerate(words)]
    bgs = [x for x in build_pools(split["threshold"], [], [], 2, CACHE, cfg.seed + 1000).backgrounds]
    extra = []
    i = 0
    while i < len(words):
        ws = []
        while i < len(words) and len(ws) < 3 and fits([len(x.audio) for x in ws + [words[i]]], CLIP_SAMPLES - int(0.3 * 16000), 1600):
            ws.append(words[i]); i += 1
        if not ws:
            ws = [words[i]]; i += 1
        extra.append(compose(rng, vary_background(bgs, rng), ws, [word_gain(w, rng) for w in ws]))
    m = gate.model
    d = {"threshold_R0": gate.threshold, "gap": gate.min_gap_steps,
         "val_word_probs": predict(m, [c.audio for c in val.word_clips]),
         "val_word_pos": [positives_of(c) for c in val.word_clips],
         "val_free_probs": predict(m, [c.audio for c in val.free_clips]),
         "val_free_place": [[(p.start, p.end, p.source) for p in c.placements] for c in val.free_clips],
         "val_free_minutes": val.free_minutes,
         "extra_probs": predict(m, [c.audio for c in extra]),
         "extra_place": [[(p.start, p.end, p.source) for p in c.placements] for c in extra]}
    ww, free = tl.test_set(DATA / "trigger_word", fold, 100, 60.0, seed + 1234, CACHE)
    d["test_word_probs"] = predict(m, [c.audio for c in ww]); d["test_word_pos"] = [tl.positives(c) for c in ww]
    d["test_free_probs"] = predict(m, [c.audio for c in free]); d["test_free_minutes"] = len(free) * 10 / 60
    res[sp] = d
    print(sp, "done", len(extra), "extra clips", file=sys.stderr, flush=True)
pickle.dump(res, open(out, "wb"))
