"""LFW photos rendered as the shift sets' kind of photo, for developing on LFW what must hold beyond it.

The shift sets (faces/shift) are for evaluation only; to develop and choose on LFW for photos
like theirs, this writes every photo of a pair list as such a photo, under the same relative
paths, so that `facegate eval-pairs LIST --root OUT` scores the same pairs on them:
  tight64   the face cut from hairline to chin (MTCNN's box, enlarged 10 %, raised 5 %),
            64x64, area-averaged: a web face crop, an ID photo cut at the hairline, at a
            low resolution (faces/shift/bollywood is such a set)
A photo where MTCNN finds no face is written as it is.

  python bench/render_shift.py --pairs ../shared/data/faces/lfw/pairs_devtest.tsv \\
      --root ../shared/data/faces/lfw --kind tight64 --out bench/out/lfw_tight64
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder.align import FaceAligner, choose_face  # noqa: E402
from encoder.images import decode_image  # noqa: E402
from encoder.pair_eval import PairList  # noqa: E402

KINDS = {"tight64": {"size": 64, "enlarge": 1.1, "raise": 0.05}}


def render(img: np.ndarray, aligner: FaceAligner, kind: str) -> tuple[np.ndarray, bool]:
    """-> (the rendered photo, whether a face was found to frame it)."""
    k = KINDS[kind]
    boxes, _, _ = aligner.detect(img)
    if not len(boxes):
        return img, False
    h, w = img.shape[:2]
    x0, y0, x1, y1 = boxes[choose_face(boxes, h, w)]
    side = k["enlarge"] * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - k["raise"] * side
    X0, Y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    X1, Y1 = int(round(cx + side / 2)), int(round(cy + side / 2))
    crop = img[max(0, Y0):min(h, Y1), max(0, X0):min(w, X1)]
    return cv2.resize(crop, (k["size"], k["size"]), interpolation=cv2.INTER_AREA), True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--kind", choices=sorted(KINDS), default="tight64")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    pairs = PairList.read(a.pairs)
    photos = sorted(set(pairs.a) | set(pairs.b))
    aligner = FaceAligner()
    out, framed = Path(a.out), 0
    for p in tqdm(photos, desc=a.kind, unit="photo", file=sys.stderr):
        dest = (out / p).with_suffix(".png")        # lossless: the rendering is the only change
        img, found = render(decode_image(Path(a.root) / p), aligner, a.kind)
        framed += found
        dest.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dest), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    listed = out / Path(a.pairs).name
    listed.write_text("".join(f"{Path(x).with_suffix('.png')}\t{Path(y).with_suffix('.png')}\t{int(s)}\t{f}\n"
                              for x, y, s, f in zip(pairs.a, pairs.b, pairs.same, pairs.folds)))
    print(json.dumps({"kind": a.kind, "photos": len(photos), "framed": framed, "pairs": str(listed), "root": str(out)}))


if __name__ == "__main__":
    main()
