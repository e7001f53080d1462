"""Would a second MTCNN pass give the encoder better-placed landmarks? (session 28)

For every photo of pairs_devtest.tsv and pairs_devtest_far.tsv (2,741 photos) the face is found
and chosen as the service does (`FaceAligner.detect`, `choose_face`; the centre crop when none is
found). Its five landmarks L1 then place the photo, upright and at the template's scale, in the
middle of an S x S frame (S = 160: the 112-px template with a 24-px margin), MTCNN runs again on
that frame, and the landmarks of the face nearest the template's centre, L2, are mapped back to
the photo. Three crops per photo are embedded with the checkpoint (face and mirror image
averaged, as eval-pairs does):

  L1    the service's crop
  L2    the crop from the second pass's landmarks
  mean  the crop from the average of L1 and L2

and two more, which average views of two alignments:

  L1+mirror(L2)  the L1 crop and the mirror image of the L2 crop (2 network runs, as now)
  L1+L2          both crops and both mirror images (4 network runs)

and eval-pairs' metrics are printed for each; with --heldout, also scripts/heldout_eval.py's
metrics on the held-out DevTrain people's photos (506, the training crop cache's held-out rows),
each aligned the three ways here, which is the list that chooses. The crops are kept in
runs/tta/second_pass_S[_heldout].npz. Run from the repository root:
  .venv/bin/python scripts/second_pass_landmarks.py [--size S] [--checkpoint CK] [--heldout] [--out F.json]
"""
import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoder.align import (TEMPLATE_112, AlignConfig, FaceAligner, centre_crop, choose_face,  # noqa: E402
                           similarity_transform, warp_to_template)
from encoder.embedder import Embedder  # noqa: E402
from encoder.images import decode_image  # noqa: E402
from encoder.pair_eval import PairList  # noqa: E402
from scripts.tta_eval import LISTS, embed_in_batches, list_metrics, write_report  # noqa: E402


def second_pass(aligner: FaceAligner, img: np.ndarray, first: np.ndarray, size: int) -> np.ndarray | None:
    """The landmarks MTCNN finds on the face placed upright in the middle of a size x size frame,
    in the photo's pixels; None when it finds no face there."""
    centred = TEMPLATE_112 + (size - 112) / 2
    m = similarity_transform(first, centred)
    frame = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    _, _, points = aligner._detect(frame)
    if len(points) == 0:
        return None
    j = int(np.argmin(np.linalg.norm(points.mean(1) - centred.mean(0), axis=1)))
    back = cv2.invertAffineTransform(m)
    return (points[j] @ back[:, :2].T + back[:, 2]).astype(np.float32)


def crops(root: Path, paths: list[str], size: int, cache: Path) -> dict[str, np.ndarray]:
    if cache.exists():
        z = np.load(cache)
        if list(z["paths"]) == paths:
            return {k: z[k] for k in ("L1", "L2", "mean")}
    aligner = FaceAligner(AlignConfig())
    out = {"L1": [], "L2": [], "mean": []}
    refound = 0
    for n, p in enumerate(paths):
        img = decode_image(root / p)
        boxes, _, points = aligner.detect(img)
        if len(boxes) == 0:
            for v in out.values():
                v.append(centre_crop(img, 112))
            continue
        first = points[choose_face(boxes, *img.shape[:2])]
        second = second_pass(aligner, img, first, size)
        refound += second is not None
        second = first if second is None else second
        out["L1"].append(warp_to_template(img, first))
        out["L2"].append(warp_to_template(img, second))
        out["mean"].append(warp_to_template(img, (first + second) / 2))
        if n % 250 == 0:
            print(f"aligned {n}/{len(paths)}, second pass found {refound}", file=sys.stderr, flush=True)
    out = {k: np.stack(v) for k, v in out.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.array(paths), **out)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=160, help="the second pass's frame, px")
    ap.add_argument("--checkpoint", default=None, help="default: the shipped encoder")
    ap.add_argument("--lfw", default=str(ROOT.parent / "shared/data/faces/lfw"))
    ap.add_argument("--heldout", action="store_true", help="also the held-out list (scripts/heldout_eval.py)")
    ap.add_argument("--out", default=None, help="JSON file (default: stdout only)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    lfw = Path(a.lfw)
    lists = {k: PairList.read(lfw / f"{k}.tsv") for k in LISTS}
    paths = sorted({p for pl in lists.values() for p in pl.a + pl.b})
    index = {p: i for i, p in enumerate(paths)}
    variants = crops(lfw, paths, a.size, ROOT / f"runs/tta/second_pass_{a.size}.npz")
    emb = Embedder.from_checkpoint(a.checkpoint)
    emb.flip = False                       # both views are run here, as flip_average does

    def embeddings(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        view = {k: embed_in_batches(emb, v) for k, v in c.items()}
        mirror = {k: embed_in_batches(emb, v[:, :, ::-1]) for k, v in c.items()}
        out = {k: view[k] + mirror[k] for k in c}
        out["L1+mirror(L2)"] = view["L1"] + mirror["L2"]
        out["L1+L2"] = view["L1"] + mirror["L1"] + view["L2"] + mirror["L2"]
        return {k: e / np.linalg.norm(e, axis=1, keepdims=True) for k, e in out.items()}

    results = {}
    for name, e in embeddings(variants).items():
        for ln, r in list_metrics(e, lists, index).items():
            results[f"{name}/{ln}"] = r
            print(name, ln, r, file=sys.stderr, flush=True)
    if a.heldout:
        from scripts.heldout_eval import report as heldout_report
        from encoder.crop_cache import CropCache, the_only_cache
        from encoder.train import heldout_pairs
        cache = CropCache(the_only_cache(ROOT / ".cache/facegate/crops"))
        rows, pa, pb, same = heldout_pairs(cache.identities, 0.05, 15, 0)
        held = crops(ROOT, [cache.paths[r] for r in rows], a.size, ROOT / f"runs/tta/second_pass_{a.size}_heldout.npz")
        for name, e in embeddings(held).items():
            results[f"{name}/heldout"] = heldout_report(e, pa, pb, same)
            print(name, "heldout", results[f"{name}/heldout"], file=sys.stderr, flush=True)
    write_report({"checkpoint_version": emb.version, "arithmetic": emb.arithmetic, "size": a.size,
                  "photos": len(paths), "results": results}, a.out)


if __name__ == "__main__":
    main()
