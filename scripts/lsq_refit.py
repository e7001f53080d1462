"""The shipped recipe's last step: refit a chip_resnet student block by block in closed form
(encoder/block_refit.py), each block fed the student's own map, each block's two convolutions
then trained --refine-epochs passes on its output error, then the head; write a new checkpoint.

The teacher's maps are the targets: give it as a chip_resnet checkpoint of dlib's network,
written by `scripts/dlib_in_pipeline.py runs/dlib0/bf16.pt --precision bfloat16` (dlib's
downloaded weights: keep it under runs/, never ship it). Photos: the training crop cache without
its held-out identities (encoder.train's val_share), a seeded draw of --photos, each with its
mirror image. About 4 min for 3,000 photos on 2 cores without refinement; ~2 GB of memory per
1,000 photos (half with --bf16-maps); each refinement pass adds ~20 s per 1,000 photos.
  .venv/bin/python scripts/lsq_refit.py STUDENT.pt OUT.pt [--photos 3000] [--flip]
      [--refine-epochs 8] [--bf16-maps] [--cache CACHE_FOLDER | --cache-root ROOT]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoder.block_refit import refit_chain  # noqa: E402
from encoder.checkpoint import load_checkpoint, read_meta, save_checkpoint  # noqa: E402
from encoder.crop_cache import CropCache, the_only_cache  # noqa: E402
from encoder.face_encoder import preprocess  # noqa: E402
from encoder.train import UNLABELLED, _held_out  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("student")
    ap.add_argument("out")
    ap.add_argument("--teacher", default="runs/dlib0/bf16.pt")
    ap.add_argument("--cache", default=None, help="the training crop cache's folder (default: the only one "
                                                  "under --cache-root)")
    ap.add_argument("--cache-root", default=str(ROOT / ".cache/facegate/crops"), help="facegate train's --cache-dir")
    ap.add_argument("--share", type=float, default=0.05, help="the training configs' val_share")
    ap.add_argument("--photos", type=int, default=3000)
    ap.add_argument("--positions", type=int, default=256, help="output positions sampled per view and block")
    ap.add_argument("--ridge", type=float, default=1e-4)
    ap.add_argument("--flip", action="store_true", help="write it flip-averaged whatever the student was")
    ap.add_argument("--name", default=None, help="default: the student's name + '-lsq'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--refine-epochs", type=int, default=0,
                    help="after each block's closed form, train both its convolutions this many passes")
    ap.add_argument("--refine-lr", type=float, default=3e-4)
    ap.add_argument("--bf16-maps", action="store_true", help="keep the maps in bfloat16 (half the memory)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    folder = Path(a.cache) if a.cache else the_only_cache(a.cache_root)
    cache = CropCache(folder)
    allowed = np.array([i for i, n in enumerate(cache.identities)
                        if n == UNLABELLED or not _held_out(n, a.share)], np.int64)
    rows = np.sort(np.random.default_rng(a.seed).choice(allowed, size=min(a.photos, len(allowed)), replace=False))
    student, _ = load_checkpoint(a.student)
    teacher, _ = load_checkpoint(a.teacher)
    meta = read_meta(a.student)

    size = student.config.input_size

    def inputs():
        for i in range(0, len(rows), 64):
            x = preprocess(torch.from_numpy(np.ascontiguousarray(cache.crops[rows[i:i + 64]])), size)
            yield torch.cat([x, x.flip(3)])

    report = refit_chain(student, teacher, inputs(), None, a.positions, a.ridge, seed=a.seed,
                         refine_epochs=a.refine_epochs, refine_lr=a.refine_lr,
                         maps_dtype=torch.bfloat16 if a.bf16_maps else torch.float32,
                         log=lambda s: print(s, file=sys.stderr, flush=True))
    report = {"student": a.student, "student_version": meta.get("version"), "teacher": a.teacher,
              "second_view": "flip", "cache": str(folder), "photos": int(len(rows)), "seed": a.seed, **report}
    prep = meta.get("preprocessing", {})
    ck = save_checkpoint(a.out, student, name=a.name or f"{meta['name']}-lsq",
                         training={**meta.get("training", {}), "block_refit": report},
                         flip_average=a.flip or bool(prep.get("flip_average")),
                         precision=prep.get("precision", "float32"))
    report["version"] = ck["version"]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
