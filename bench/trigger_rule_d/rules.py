import pickle, sys, json
import numpy as np
sys.path.insert(0, "/work/main")
from gates import trigger_metrics as tm, trigger_loso as tl
from gates.train_trigger import THRESHOLDS
from gates.trigger_word import events

G = tl.CEILING_THRESHOLDS

def fired_sources(probs, places, th, gap, before=0.2, after=1.0):
    out = []
    for p, pl in zip(probs, places):
        for e in events(p, th, gap):
            near = [s for (a, b, s) in pl if a - before <= e.t <= b + after]
            out.append(near[0] if near else "no word")
    return out

def rule_D(d, limit=4):
    gap = d["gap"]
    rows = tm.sweep(d["val_word_probs"], d["val_word_pos"], d["val_free_probs"], d["val_free_minutes"], G, gap)
    ok, counts = [], {}
    for r in rows:
        th = r["threshold"]
        c1 = len(set(fired_sources(d["extra_probs"], d["extra_place"], th, gap)))
        c2 = sum(1 for s in fired_sources(d["val_free_probs"], d["val_free_place"], th, gap) if not s.startswith("tts"))
        counts[th] = (c1, c2)
        if c1 <= limit and c2 == 0:
            ok.append(r)
    if not ok:
        low = min(sum(v) for v in counts.values())
        ok = [r for r in rows if sum(counts[r["threshold"]]) == low]
    best = max(r["f1"] for r in ok)
    tied = [r for r in ok if r["f1"] >= best - 1e-9]
    return tied[len(tied) // 2]["threshold"], counts

def test_at(d, th):
    gap = d["gap"]
    c = tm.score(d["test_word_probs"], d["test_word_pos"], th, gap)
    fa = tm.score(d["test_free_probs"], [[] for _ in d["test_free_probs"]], th, gap).fp
    return round(c.f1, 4), fa

for name in sys.argv[1:]:
    res = pickle.load(open(f"bench/trigger_rule_d/{name}.pkl", "rb"))
    out = {}
    for sp, d in res.items():
        thD, counts = rule_D(d)
        out[sp] = {"R0": (d["threshold_R0"],) + test_at(d, d["threshold_R0"]), "D": (thD,) + test_at(d, thD),
                   "D_counts_at_R0": counts.get(round(d["threshold_R0"], 4))}
    f0 = [v["R0"][1] for v in out.values()]; fD = [v["D"][1] for v in out.values()]
    print(name, json.dumps(out))
    print(f"  R0 mean {np.mean(f0):.3f} worst {min(f0):.3f} FT {[v['R0'][2] for v in out.values()]}")
    print(f"  D  mean {np.mean(fD):.3f} worst {min(fD):.3f} FT {[v['D'][2] for v in out.values()]}")
