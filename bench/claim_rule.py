"""How should a claim against a subject of several ID photos be scored? The FAR per claim by rule
and by number of templates, on LFW people never trained on.

Thresholds are calibrated on pairs of single photos (lfw/pairs_calib.tsv). A subject enrolled with
E ID photos is a set of E templates; a claim's distance to that set can be read three ways:

  nearest   the distance to the nearest template: an impostor gets E tries, and the FAR grows with E;
  centroid  the distance to the mean of the templates (re-normalised);
  mean      the mean of the distances to each template (encoder.score_norm.claim_distance: Verify's rule).

People: LFW DevTest people (none in peopleDevTrain.txt, so none in the encoder's training) with at
least 6 photos; the first E in name order are enrolled (E = 1..5), their photos 6 to 12 are the
probes, the same probes for every E. Every probe claims its own subject (genuine) and every other
subject (impostor). Distances are the release's own (normalised where it has a cohort). For each E
and rule: the FAR and FRR at the release's Verify threshold (and the FAR over its target), and the
FRR at the threshold each rule needs for FAR 1e-2 and 1e-3 on these claims (the rules' ROC, for
the same FAR). Prints one JSON object, writes it and a PNG of the FAR over target.

  python bench/claim_rule.py [--checkpoint RELEASE.pt] [--lfw ../shared/data/faces/lfw] [--out bench/out/claim_rule.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoder.embedder import Embedder  # noqa: E402
from encoder.images import decode_image  # noqa: E402
from encoder.pair_metrics import threshold_at_far  # noqa: E402
from encoder.score_norm import euclidean  # noqa: E402

MAX_ENROLLED, MAX_PHOTOS = 5, 12
RULES = ("nearest", "centroid", "mean")


def devtest_people(lfw: Path, min_photos: int) -> dict[str, list[Path]]:
    """LFW people outside DevTrain with at least min_photos photos -> their first MAX_PHOTOS, by name."""
    train = {line.split("\t")[0] for line in (lfw / "peopleDevTrain.txt").read_text().splitlines()[1:] if line}
    out = {}
    for d in sorted((lfw / "images").iterdir()):
        photos = sorted(d.glob("*.jpg"))
        if d.name not in train and len(photos) >= min_photos:
            out[d.name] = photos[:MAX_PHOTOS]
    return out


def claim_distances(emb: Embedder, probes: np.ndarray, sets: list[np.ndarray], rule: str) -> np.ndarray:
    """len(probes) x len(sets): each probe's distance to each template set, by `rule`."""
    if rule == "centroid":
        c = np.stack([s.mean(0) / np.linalg.norm(s.mean(0)) for s in sets])
        return _distances(emb, probes, c)
    t = np.concatenate(sets)
    d = _distances(emb, probes, t).reshape(len(probes), len(sets), -1)    # every set holds E templates
    return d.min(2) if rule == "nearest" else d.mean(2)


def _distances(emb: Embedder, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if emb.norm is None:
        return euclidean(a[:, None, :], b[None, :, :])
    return emb.norm.normalise(euclidean(a[:, None, :], b[None, :, :]), emb.norm.stats(a)[:, None, :],
                              emb.norm.stats(b)[None, :, :])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="a release file (default: the shipped encoder)")
    ap.add_argument("--lfw", default=str(ROOT.parent / "shared/data/faces/lfw"))
    ap.add_argument("--out", default=str(ROOT / "bench/out/claim_rule.json"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    emb = Embedder.from_checkpoint(a.checkpoint)
    threshold = float(emb.meta["threshold"])
    target = float(emb.meta["threshold_info"]["target_far"])
    people = devtest_people(Path(a.lfw), MAX_ENROLLED + 1)
    vectors: dict[str, list[np.ndarray | None]] = {}
    for name, photos in tqdm(people.items(), desc="lfw devtest people", unit="person", file=sys.stderr):
        row = []
        for f in photos:
            al = emb.align(decode_image(f))
            row.append(emb.embed_crops(al.crop[None])[0] if al.crop is not None else None)
        vectors[name] = row
    names = [n for n, row in vectors.items()
             if all(v is not None for v in row[:MAX_ENROLLED]) and any(v is not None for v in row[MAX_ENROLLED:])]
    probes, owner = [], []
    for i, n in enumerate(names):
        for v in vectors[n][MAX_ENROLLED:]:
            if v is not None:
                probes.append(v)
                owner.append(i)
    probes, owner = np.stack(probes), np.array(owner)
    own = owner[:, None] == np.arange(len(names))[None, :]
    out = {"encoder_version": emb.version, "verify_threshold": threshold, "target_far": target,
           "people": len(names), "probes": int(len(probes)), "genuine_claims": int(own.sum()),
           "impostor_claims": int((~own).sum()), "photos_without_face": sum(v is None for r in vectors.values() for v in r),
           "by_templates": {}}
    for e in range(1, MAX_ENROLLED + 1):
        sets = [np.stack(vectors[n][:e]) for n in names]
        row = {}
        for rule in RULES:
            d = claim_distances(emb, probes, sets, rule)
            g, i = d[own], d[~own]
            same = np.r_[np.ones(len(g), bool), np.zeros(len(i), bool)]
            r = {"far": round(float((i <= threshold).mean()), 5), "frr": round(float((g > threshold).mean()), 4)}
            r["far_over_target"] = round(r["far"] / target, 2)
            for f in (1e-2, 1e-3):
                t, _, tar = threshold_at_far(np.r_[g, i], same, f)
                r[f"threshold_for_far_{f:g}"], r[f"frr_at_far_{f:g}"] = round(t, 4), round(1 - tar, 4)
            row[rule] = r
        out["by_templates"][str(e)] = row
    out_path = Path(a.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=1))
    plot(out, out_path.with_suffix(".png"))
    print(json.dumps(out))


def plot(out: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    es = [int(e) for e in out["by_templates"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for rule in RULES:
        ax.plot(es, [out["by_templates"][str(e)][rule]["far_over_target"] for e in es], marker="o", label=rule)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("templates (ID photos) of the claimed subject")
    ax.set_ylabel(f"FAR per claim / target {out['target_far']:g}")
    ax.set_title(f"Verify threshold {out['verify_threshold']}: {out['impostor_claims']} impostor claims, LFW DevTest")
    ax.set_xticks(es)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
