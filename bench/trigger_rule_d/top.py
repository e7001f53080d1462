import pickle, sys, collections
sys.path.insert(0, "/work/main")
from rules import fired_sources
for name in sys.argv[1:]:
    res = pickle.load(open(f"bench/trigger_rule_d/{name}.pkl", "rb"))
    texts, voices, n = collections.Counter(), collections.Counter(), 0
    for sp, d in res.items():
        fs = set(fired_sources(d["extra_probs"], d["extra_place"], d["threshold_R0"], d["gap"]))
        for s in fs:
            if s == "no word": continue
            t = s.split("tts:")[1]
            texts[t.split("/")[0]] += 1; voices[t.split("/")[1].split("+")[0]] += 1; n += 1
    print(name, n, "firing of", 2000 * len(res), texts.most_common(8), voices.most_common(5))
