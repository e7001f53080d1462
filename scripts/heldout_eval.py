"""Checkpoints scored on a strict list of people that neither training nor the DevTest lists see.

The DevTest lists are the issue's acceptance lists, and they have also decided which candidate
ships; choosing on the lists that then report the choice biases what they report. This list is
a third one, for choosing: the training data's held-out identities (`val_share` of the labelled
identities, chosen by a hash of the name, never trained on: encoder/train.py::_held_out), with
every genuine pair (at most --per-identity per person, drawn with the seed) and *every* impostor
pair among their photos, so TAR at FAR 1e-3 rests on ~10^5 impostor pairs, not on the 1,220
random impostors of the training-time validation. The crops are the training cache's (the
same MTCNN alignment as eval-pairs); each checkpoint embeds them as the service does (its own
flip_average and arithmetic). For the teacher's reference figures, pass the checkpoint that
scripts/dlib_in_pipeline.py writes (dlib's own weights in this pipeline; never shipped).
Run from the repository root, after a training run has built the cache:
  .venv/bin/python scripts/heldout_eval.py CK [CK ...] [--out runs/heldout.json] [--teacher runs/dlib0/bf16.pt]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoder.crop_cache import CropCache, the_only_cache  # noqa: E402
from encoder.embedder import Embedder  # noqa: E402
from encoder.pair_metrics import auc, eer, roc, tar_at_far  # noqa: E402
from encoder.train import heldout_pairs  # noqa: E402


def report(e: np.ndarray, pa, pb, same) -> dict:
    d = np.linalg.norm(e[pa] - e[pb], axis=1)
    _, far, tar = roc(d, same)
    return {"auc": round(auc(far, tar), 4), "eer": round(eer(far, tar), 4),
            "tar@far=1e-2": round(tar_at_far(far, tar, 1e-2), 4),
            "tar@far=1e-3": round(tar_at_far(far, tar, 1e-3), 4),
            "tar@far=1e-4": round(tar_at_far(far, tar, 1e-4), 4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--cache", default=None, help="the training crop cache (default: the only one "
                    "under .cache/facegate/crops)")
    ap.add_argument("--share", type=float, default=0.05, help="the training configs' val_share")
    ap.add_argument("--per-identity", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON file (default: stdout only)")
    ap.add_argument("--teacher", default=None,
                    help="also report each checkpoint's closeness to this one (dlib's network in this "
                         "pipeline, runs/dlib0/bf16.pt): the cosine of the two embeddings of each photo")
    a = ap.parse_args()
    torch.set_num_threads(1)
    folder = Path(a.cache) if a.cache else the_only_cache(ROOT / ".cache/facegate/crops")
    cache = CropCache(folder)
    rows, pa, pb, same = heldout_pairs(cache.identities, a.share, a.per_identity, a.seed)
    crops = np.ascontiguousarray(cache.crops[rows])
    out = {"cache": str(folder), "photos": int(len(rows)),
           "identities": len({cache.identities[r] for r in rows}),
           "genuine_pairs": int(same.sum()), "impostor_pairs": int((~same).sum()),
           "per_identity": a.per_identity, "seed": a.seed, "results": {}}
    def embed(ck, flip=None):
        emb = Embedder.from_checkpoint(ck)
        emb.flip = emb.flip if flip is None else flip
        return emb, np.concatenate([emb.embed_crops(crops[i:i + 64]) for i in range(0, len(crops), 64)])

    teacher = None
    if a.teacher:   # flip-averaged, as the students are served
        out["teacher"] = {"checkpoint": a.teacher, "flip": True}
        teacher = embed(a.teacher, flip=True)[1]
    for ck in a.checkpoints:
        emb, e = embed(ck)
        out["results"][ck] = {"version": emb.version, "flip": emb.flip, "arithmetic": emb.arithmetic,
                              **report(e, pa, pb, same)}
        if teacher is not None:
            # a continuous measure of the distillation, free of the few pairs near the threshold
            cos = (e * teacher).sum(1)
            out["results"][ck]["cos_to_teacher"] = {"mean": round(float(cos.mean()), 5),
                                                    "p5": round(float(np.percentile(cos, 5)), 5)}
        print(ck, out["results"][ck], file=sys.stderr, flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
