"""Cluster the photos of 20 DevTest people (4+ photos each) through the CLI with k=0, and
score the chosen k and the partition against the true people (adjusted Rand index).

  python bench/cluster_run.py --server 127.0.0.1:50051 [--people 20] [--per-person 4]
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def adjusted_rand_index(a, b) -> float:
    """Hubert & Arabie's ARI from the contingency table (1 = same partition, ~0 = chance)."""
    a, b = np.unique(a, return_inverse=True)[1], np.unique(b, return_inverse=True)[1]
    table = np.zeros((a.max() + 1, b.max() + 1), np.int64)
    np.add.at(table, (a, b), 1)
    comb = lambda x: x * (x - 1) / 2  # noqa: E731
    sum_ij = comb(table).sum()
    sum_a, sum_b = comb(table.sum(1)).sum(), comb(table.sum(0)).sum()
    expected = sum_a * sum_b / comb(len(a))
    best = (sum_a + sum_b) / 2
    return float((sum_ij - expected) / (best - expected)) if best != expected else 1.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True)
    ap.add_argument("--lfw", default=str(ROOT.parent / "shared/data/faces/lfw"))
    ap.add_argument("--people", type=int, default=20)
    ap.add_argument("--per-person", type=int, default=4)
    ap.add_argument("--k", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--facegate", default=str(ROOT / ".venv/bin/facegate"))
    a = ap.parse_args()
    lfw = Path(a.lfw)
    names = sorted({p.split("/")[1] for line in (lfw / "pairs_devtest.tsv").read_text().splitlines()
                    for p in line.split("\t")[:2]})
    eligible = [n for n in names if len(list((lfw / "images" / n).glob("*.jpg"))) >= 4]
    people = random.Random(a.seed).sample(eligible, a.people)
    photos, truth = [], []
    for i, n in enumerate(people):
        for p in sorted((lfw / "images" / n).glob("*.jpg"))[:a.per_person]:
            photos.append(str(p))
            truth.append(i)
    p = subprocess.run([a.facegate, "cluster", *photos, "--k", str(a.k), "--server", a.server, "--json"],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.exit(f"cluster failed: {p.stdout} {p.stderr[-500:]}")
    r = json.loads(p.stdout)
    got = {x["path"]: x["cluster"] for x in r["assignments"]}
    faces = [i for i, ph in enumerate(photos) if got[ph] >= 0]
    ari = adjusted_rand_index([truth[i] for i in faces], [got[photos[i]] for i in faces])
    print(json.dumps({"people": a.people, "photos": len(photos), "photos_without_face": len(photos) - len(faces),
                      "k_true": a.people, "k_chosen": r["k"], "ari": round(ari, 4),
                      "silhouette": r.get("silhouette")}))


if __name__ == "__main__":
    main()
