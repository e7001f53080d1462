"""Does a threshold calibrated on LFW hold within other groups of people? FAR per demographic group.

LFW's random impostor pairs are mostly white men against people who look nothing alike; at a
door, the impostor who matters looks like the card's owner. This scores impostor pairs *within*
groups of the same apparent race and gender, using UTKFace's file-name labels (adults 18-60; two
photos of a group are taken as two people: UTKFace has no identities, so a rare pair may be one
person twice, which can only raise the FAR shown), at the release's own Verify and Identify
thresholds, and gives the threshold each group would need for the calibrated FAR. Distances are
the release's own (normalised where it has a score-normalisation cohort, encoder/score_norm.py).
UTKFace is used here to measure only (non-commercial research terms), never to train or to set a
value; where the release's cohort is one half of UTKFace, only the other half is measured.

  python bench/group_far.py [--checkpoint RELEASE.pt] [--utkface ../shared/data/faces/utkface] [--out FILE.json]
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
from encoder.score_norm import photo_part  # noqa: E402

RACES = ("white", "black", "asian", "indian", "other")      # UTKFace's labels, in its order
GENDERS = ("m", "f")


def labelled_photos(folder: Path, ages=(18, 60)) -> list[tuple[Path, str]]:
    """UTKFace's `age_gender_race_date.jpg` -> (photo, "race_gender") for adults."""
    out = []
    for f in sorted(folder.glob("*.jpg")):
        parts = f.name.split("_")
        if len(parts) < 4 or not all(p.isdigit() for p in parts[:3]):
            continue
        age, gender, race = map(int, parts[:3])
        if ages[0] <= age <= ages[1] and gender < 2 and race < len(RACES):
            out.append((f, f"{RACES[race]}_{GENDERS[gender]}"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="a release file (default: the shipped encoder)")
    ap.add_argument("--utkface", default=str(ROOT.parent / "shared/data/faces/utkface"))
    ap.add_argument("--out", default=str(ROOT / "bench/out/group_far.json"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)            # one photo at a time, as the other benchmarks: no oversubscribed cores
    emb = Embedder.from_checkpoint(a.checkpoint)
    thresholds = {"verify": emb.meta.get("threshold"), "identify": emb.meta.get("identify_threshold")}
    targets = {"verify": (emb.meta.get("threshold_info") or {}).get("target_far"),
               "identify": (emb.meta.get("identify_threshold_info") or {}).get("target_far")}
    norm_info = emb.meta["preprocessing"].get("score_norm")       # None: plain Euclidean distances
    cohort_part = norm_info["cohort"].partition(":")[2] if norm_info else ""
    if norm_info and not (norm_info["cohort"].startswith(Path(a.utkface).name + ":") and cohort_part in ("a", "b")):
        sys.exit(f"the release's cohort is {norm_info['cohort']!r}: measure on photos outside it, not {a.utkface}")
    photos = [(f, g) for f, g in labelled_photos(Path(a.utkface)) if not cohort_part or photo_part(f.name) != cohort_part]
    vectors, groups, no_face = [], [], 0
    for f, g in tqdm(photos, desc="utkface", unit="photo", file=sys.stderr):
        al = emb.align(decode_image(f))
        if al.crop is None:
            no_face += 1
            continue
        vectors.append(emb.embed_crops(al.crop[None])[0])
        groups.append(g)
    v, groups = np.stack(vectors), np.array(groups)
    out = {"encoder_version": emb.version, "thresholds": thresholds, "target_far": targets, "no_face": no_face,
           "score_norm": norm_info, "photos_measured": "utkface" + (f" outside the cohort's half {cohort_part!r}"
                                                                   if cohort_part else ""), "groups": {}}
    for g in sorted(set(groups)):
        x = v[groups == g]
        iu = np.triu_indices(len(x), 1)
        d = np.sqrt(np.maximum(0.0, 2 - 2 * x @ x.T))[iu]
        if emb.norm is not None:
            st = emb.norm.stats(x)
            d = emb.norm.normalise(d, st[iu[0]], st[iu[1]])
        row = {"photos": int(len(x)), "impostor_pairs": int(len(d))}
        for kind, t in thresholds.items():
            if t is not None:
                row[f"{kind}_far"] = round(float((d <= t).mean()), 5)
                if targets[kind]:
                    row[f"{kind}_far_over_target"] = round(row[f"{kind}_far"] / targets[kind], 1)
                    row[f"{kind}_threshold_for_target"] = round(float(np.quantile(d, targets[kind])), 4)
        out["groups"][g] = row
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
