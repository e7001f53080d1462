"""Test-time views of the aligned face: is averaging several worth its cost? (session 15)

Every photo of pairs_devtest.tsv and pairs_devtest_far.tsv (2,741 photos) is aligned once, as
eval-pairs aligns it (the chosen face, or the centre crop when none is found), and the crops
are kept in runs/tta/crops.npz, so that another checkpoint is scored in about a minute. Each
crop is then embedded under several views and the views' embeddings averaged:

  base        the crop as the service embeds it (the network computed as the Embedder does)
  flip        + its mirror image (the checkpoint option flip_average: 2 network runs per face)
  flip+zoom   + the crop scaled by 1.06 and 0.94 about its centre, each also mirrored (6 runs)
  flip+shift  + the crop moved 2 px left, right, up, down, each also mirrored (10 runs)

and the pair metrics of eval-pairs are reported for each (10-fold accuracy, AUC, EER, TAR at FAR
1e-2 and 1e-3). The checkpoint's own flip_average setting is ignored: the views are chosen here.
Run from the repository root:
  .venv/bin/python scripts/tta_eval.py [--checkpoint CK] [--out runs/tta/NAME.json] [--quick]
"""
import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoder.embedder import Embedder  # noqa: E402
from encoder.images import decode_image  # noqa: E402
from encoder.pair_eval import PairList  # noqa: E402
from encoder.pair_metrics import pair_report  # noqa: E402

LISTS = ("pairs_devtest", "pairs_devtest_far")
VIEWS = {"zoom": [dict(s=1.06), dict(s=0.94)],
         "shift": [dict(dx=2), dict(dx=-2), dict(dy=2), dict(dy=-2)]}


def aligned_crops(emb: Embedder, lfw: Path, paths: list[str], cache: Path) -> np.ndarray:
    if cache.exists():
        z = np.load(cache)
        if list(z["paths"]) == paths and z["crops"].shape[1] == emb.aligner.config.crop_size:
            return z["crops"]
    out = []
    for n, p in enumerate(paths):
        out.append(emb.crop_for_evaluation(decode_image(lfw / p))[0])
        if n % 250 == 0:
            print(f"aligned {n}/{len(paths)}", file=sys.stderr, flush=True)
    crops = np.stack(out)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.array(paths), crops=crops)
    return crops


def embed_in_batches(emb: Embedder, crops: np.ndarray) -> np.ndarray:
    return np.concatenate([emb.embed_crops(np.ascontiguousarray(crops[i:i + 64])) for i in range(0, len(crops), 64)])


def list_metrics(e: np.ndarray, lists: dict[str, PairList], index: dict[str, int]) -> dict[str, dict]:
    """eval-pairs' metrics of unit embeddings e (rows named by index) on each pair list."""
    out = {}
    for ln, pl in lists.items():
        d = np.linalg.norm(e[[index[p] for p in pl.a]] - e[[index[p] for p in pl.b]], axis=1)
        r = pair_report(d, pl.same, pl.folds)
        out[ln] = {k: r[k] for k in ("acc", "auc", "eer", "tar@far=1e-2", "tar@far=1e-3")}
    return out


def write_report(report: dict, out: str | None) -> None:
    """The JSON report to out (if given) and to stdout."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))


def warp(c: np.ndarray, s: float = 1.0, dx: float = 0, dy: float = 0) -> np.ndarray:
    size = c.shape[0]
    m = np.float32([[s, 0, (1 - s) * size / 2 + dx], [0, s, (1 - s) * size / 2 + dy]])
    return cv2.warpAffine(c, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="default: the shipped encoder")
    ap.add_argument("--lfw", default=str(ROOT.parent / "shared/data/faces/lfw"))
    ap.add_argument("--cache", default=str(ROOT / "runs/tta/crops.npz"))
    ap.add_argument("--out", default=None, help="JSON file (default: stdout only)")
    ap.add_argument("--quick", action="store_true", help="base and flip only (2 network runs per face)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    lfw = Path(a.lfw)
    lists = {k: PairList.read(lfw / f"{k}.tsv") for k in LISTS}
    paths = sorted({p for pl in lists.values() for p in pl.a + pl.b})
    emb = Embedder.from_checkpoint(a.checkpoint)
    emb.flip = False                  # the views are chosen here
    crops = aligned_crops(emb, lfw, paths, Path(a.cache))
    index = {p: i for i, p in enumerate(paths)}

    def run(view) -> np.ndarray:
        return embed_in_batches(emb, view(crops))

    base = run(lambda c: c)
    mirror = run(lambda c: c[:, :, ::-1])
    variants = {"base": [base], "flip": [base, mirror]}
    for name, moves in ({} if a.quick else VIEWS).items():
        extra = []
        for m in moves:
            def moved(c, m=m):
                return np.stack([warp(x, **m) for x in c])
            extra += [run(moved), run(lambda c, moved=moved: moved(c)[:, :, ::-1])]
        variants[f"flip+{name}"] = [base, mirror] + extra
    results = {}
    for name, vecs in variants.items():
        e = sum(vecs)
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        for ln, r in list_metrics(e, lists, index).items():
            results[f"{name}/{ln}"] = {"network_runs_per_face": len(vecs), **r}
            print(name, ln, results[f"{name}/{ln}"], file=sys.stderr, flush=True)
    write_report({"checkpoint_version": emb.version, "arithmetic": emb.arithmetic, "photos": len(paths),
                  "results": results}, a.out)


if __name__ == "__main__":
    main()
