"""Choose how Cluster picks k (k = 0) on people apart from the test: the DevTest people of
pairs_calib.tsv (no photo of theirs is in pairs_devtest.tsv, whose people bench/cluster_run.py
clusters). Many random sets of 20 people (up to 4 photos each) are clustered with each method; the
mean adjusted Rand index (ARI) picks the method and its cut, which --release FILE records in that
release file of the encoder (a distance is the encoder's own: a new encoder is tuned again).

The pool is every calib person with 2+ photos (78 people; with 4+ photos only 23, so that sets of
20 drawn from it were nearly the same set and the best cut over-fitted them). Among the cuts of the
best method whose mean ARI is within one standard error of the best, the tightest is taken: a
merge of two people is worse than a split of one (staff see a split as two groups of one face;
a merge hides a stranger among a student's photos), and the cut must hold on people it was not
tuned on.

  python bench/cluster_tune.py [--sets 200] [--checkpoint CK] [--release FILE] > docs/encoder/cluster_tune.json
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster_run import adjusted_rand_index  # noqa: E402
from encoder.embedder import Embedder  # noqa: E402
from encoder.images import decode_image  # noqa: E402
from encoder.score_norm import scorer  # noqa: E402
from index.kmeans import choose_k, choose_k_by_distance, kmeans  # noqa: E402

# cuts as multiples of the encoder's own Verify threshold (FAR 1e-3): distances are each
# encoder's own scale (an encoder whose threshold is 0.76 was best cut at 1.1; a dlib-like one's is ~0.30)
CUT_MULTIPLES = np.arange(0.90, 2.21, 0.025)


def cut_grid(threshold: float) -> list[float]:
    return sorted({round(float(threshold * m), 3) for m in CUT_MULTIPLES})


def one_se_cut(methods: dict[str, tuple[str, float]], scores: dict[str, list[float]], top: str) -> str:
    """The tightest cut of the top method whose mean ARI is within one standard error of the top's."""
    s = np.asarray(scores[top])
    floor = s.mean() - s.std(ddof=1) / np.sqrt(len(s)) if len(s) > 1 else s.mean()
    same = [m for m in methods if methods[m][0] == methods[top][0] and np.mean(scores[m]) >= floor]
    return min(same, key=lambda m: methods[m][1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", default=str(ROOT.parent / "shared/data/faces/lfw"))
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--people", type=int, default=20)
    ap.add_argument("--per-person", type=int, default=4, help="at most this many photos of a person")
    ap.add_argument("--min-photos", type=int, default=2, help="a person of the pool has at least this many")
    ap.add_argument("--sets", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--release", metavar="FILE", help="record the cut in this release file (made a copy of "
                                                     "--checkpoint when it does not exist yet)")
    a = ap.parse_args()
    lfw = Path(a.lfw)
    calib = sorted({p.split("/")[1] for line in (lfw / "pairs_calib.tsv").read_text().splitlines()
                    for p in line.split("\t")[:2]})
    test = {p.split("/")[1] for line in (lfw / "pairs_devtest.tsv").read_text().splitlines()
            for p in line.split("\t")[:2]}
    assert not set(calib) & test, "pairs_calib and pairs_devtest people overlap"
    eligible = [n for n in calib if len(list((lfw / "images" / n).glob("*.jpg"))) >= a.min_photos]
    if a.release:
        from encoder.checkpoint import release_copy

        a.checkpoint = str(release_copy(a.checkpoint, a.release))
    emb = Embedder.from_checkpoint(a.checkpoint)
    vec = {}
    for n in tqdm(eligible, desc="embed", unit="person", file=sys.stderr):
        for p in sorted((lfw / "images" / n).glob("*.jpg"))[:a.per_person]:
            v = emb.embed(decode_image(p)).vector
            if v is not None:
                vec[p] = (n, v)
    rng = random.Random(a.seed)
    if not emb.meta.get("threshold"):
        sys.exit("cluster_tune: the checkpoint has no calibrated Verify threshold; run calibrate first")
    cuts = cut_grid(emb.meta["threshold"])
    methods = {f"average@{c}": ("average", c) for c in cuts} | {f"complete@{c}": ("complete", c) for c in cuts}
    scores = {m: [] for m in [*methods, "silhouette-kmeans"]}
    ks = {m: [] for m in scores}
    for _ in tqdm(range(a.sets), desc="sets", file=sys.stderr):
        people = set(rng.sample(eligible, a.people))
        rows = [(n, v) for n, v in vec.values() if n in people]
        truth = [n for n, _ in rows]
        x = np.stack([v for _, v in rows])
        for m, (method, cut) in methods.items():
            c = choose_k_by_distance(x, cut, method)
            scores[m].append(adjusted_rand_index(truth, c.labels))
            ks[m].append(c.k)
        c = choose_k(x, same_distance=emb.meta.get("threshold"), measure=scorer(emb.norm))
        scores["silhouette-kmeans"].append(adjusted_rand_index(truth, c.labels))
        ks["silhouette-kmeans"].append(c.k)
    table = {m: {"ari": round(float(np.mean(s)), 4), "ari_std": round(float(np.std(s)), 4),
                 "k_mean": round(float(np.mean(ks[m])), 2)} for m, s in scores.items()}
    top = max(methods, key=lambda m: table[m]["ari"])
    best = one_se_cut(methods, scores, top)
    method, cut = methods[best]
    # k-means (FAISS) with the k the best cut chooses: the same k, the partition of k-means
    kk = []
    rng = random.Random(a.seed)
    for _ in range(a.sets):
        people = set(rng.sample(eligible, a.people))
        rows = [(n, v) for n, v in vec.values() if n in people]
        x = np.stack([v for _, v in rows])
        k = choose_k_by_distance(x, cut, method).k
        kk.append(adjusted_rand_index([n for n, _ in rows], kmeans(x, k).labels))
    table[f"kmeans with k of {best}"] = {"ari": round(float(np.mean(kk)), 4), "ari_std": round(float(np.std(kk)), 4)}
    out = {"encoder_version": emb.version, "people_pool": len(eligible), "min_photos": a.min_photos,
           "sets": a.sets, "people": a.people, "per_person": a.per_person, "photos_with_face": len(vec),
           "rule": "the tightest cut of the best method within one standard error of the best mean ARI",
           "best": {"method": method, "cut": cut, **table[best]},
           "highest_mean": {"method": methods[top][0], "cut": methods[top][1], **table[top]}, "table": table}
    if a.release:
        from encoder.checkpoint import record_in_checkpoint

        record_in_checkpoint(a.release, cluster={"method": method, "cut": cut, "tuned_on": "pairs_calib people",
                                                   "ari": table[best]["ari"]})
        out["written_to_release"] = a.release
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
