"""Refit a chip_resnet student block by block in closed form (encoder/block_refit.py), each block
fed the student's own map, then its head; write the result as a new checkpoint.

The teacher's maps are the targets: give it as a chip_resnet checkpoint of dlib's network,
written by `scripts/dlib_in_pipeline.py runs/dlib0/bf16.pt --precision bfloat16` (dlib's
downloaded weights: keep it under runs/, never ship it). Photos: the training crop cache without
its held-out identities (the list scripts/heldout_eval.py scores), a seeded draw of --photos,
each with its mirror image. About 4 min for 3,000 photos on 2 cores; ~2 GB of memory per
1,000 photos (half with --bf16-maps). --refine-epochs N: after its closed form, each block's two
convolutions are trained N passes on the same views (block_refit.refine_block; ~+70 s per 1,000
photos at N = 4). --refine-bf16 trains under bfloat16 autocast (1.3-2x faster per step where the CPU
has AMX); --no-closed-form skips the closed form, for continuing the refinement of a student refined
before (session 26). --views augment: each photo's second view is a training augmentation of it
(rotation, scale, shift, mirror, colour, grey, low resolution, darkening, noise; encoder/augment.py),
a --mixup share of them blended with another photo's (function matching), instead of its mirror;
--adversarial-steps N then moves each such view N small steps (at most --adversarial-eps levels of
255 per pixel) to where the student and the teacher disagree most (block_refit.disagreeing_views;
session 29; ~+6 min for 19,000 photos at N = 3).
  .venv/bin/python scripts/lsq_refit.py STUDENT.pt OUT.pt [--photos 3000] [--plain] [--flip]
      [--refine-epochs 4] [--bf16-maps] [--refine-bf16] [--no-closed-form]
      [--views augment [--mixup 0.5] [--adversarial-steps 3 [--adversarial-eps 2]]]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoder.augment import AugmentConfig, augment_pixels  # noqa: E402
from encoder.block_refit import disagreeing_views, refit_chain  # noqa: E402
from encoder.checkpoint import load_checkpoint, read_meta, save_checkpoint  # noqa: E402
from encoder.crop_cache import CropCache, the_only_cache  # noqa: E402
from encoder.face_encoder import pixels_to_input, preprocess  # noqa: E402
from encoder.train import UNLABELLED, _held_out, mix_extra  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("student")
    ap.add_argument("out")
    ap.add_argument("--teacher", default="runs/dlib0/bf16.pt")
    ap.add_argument("--cache", default=None, help="the training crop cache (default: the only one)")
    ap.add_argument("--share", type=float, default=0.05, help="the training configs' val_share")
    ap.add_argument("--photos", type=int, default=3000)
    ap.add_argument("--positions", type=int, default=256, help="output positions sampled per view and block")
    ap.add_argument("--ridge", type=float, default=1e-4)
    ap.add_argument("--plain", action="store_true", help="fit the teacher's negative sums too (not ReLU-aware)")
    ap.add_argument("--blocks", default="all", help="'all' or a comma list of block indices")
    ap.add_argument("--flip", action="store_true", help="write it flip-averaged whatever the student was")
    ap.add_argument("--name", default=None, help="default: the student's name + '-lsq'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refine-epochs", type=int, default=0,
                    help="after each block's closed form, train both its convolutions this many passes")
    ap.add_argument("--refine-lr", type=float, default=3e-4)
    ap.add_argument("--bf16-maps", action="store_true", help="keep the maps in bfloat16 (half the memory)")
    ap.add_argument("--refine-bf16", action="store_true",
                    help="refine under bfloat16 autocast (1.3-2x faster per step on a CPU with AMX)")
    ap.add_argument("--no-closed-form", action="store_true",
                    help="only refine (a student refined before: continue its refinement)")
    ap.add_argument("--views", choices=("flip", "augment"), default="flip",
                    help="each photo's second view: its mirror image, or a training augmentation of it "
                         "(encoder/augment.py), a --mixup share of them blended with another photo's")
    ap.add_argument("--mixup", type=float, default=0.5, help="with --views augment: the share blended")
    ap.add_argument("--adversarial-steps", type=int, default=0,
                    help="with --views augment: move each second view this many signed-gradient steps "
                         "towards where the student and the teacher disagree most (1 - cos of their "
                         "embeddings), within --adversarial-eps")
    ap.add_argument("--adversarial-eps", type=float, default=2.0,
                    help="the largest change of any pixel, in levels of 255 (the step is half of it)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    folder = Path(a.cache) if a.cache else the_only_cache(ROOT / ".cache/facegate/crops")
    cache = CropCache(folder)
    allowed = np.array([i for i, n in enumerate(cache.identities)
                        if n == UNLABELLED or not _held_out(n, a.share)], np.int64)
    rows = np.sort(np.random.default_rng(a.seed).choice(allowed, size=min(a.photos, len(allowed)), replace=False))
    student, _ = load_checkpoint(a.student)
    teacher, _ = load_checkpoint(a.teacher)
    meta = read_meta(a.student)

    gen = torch.Generator().manual_seed(a.seed)
    size = student.config.input_size

    def inputs():
        for i in range(0, len(rows), 64):
            crops = torch.from_numpy(np.ascontiguousarray(cache.crops[rows[i:i + 64]]))
            x = preprocess(crops, size)
            if a.views == "flip":
                yield torch.cat([x, x.flip(3)])
                continue
            # the teacher's function on views the photos alone do not show (function matching)
            pixels, _ = mix_extra(augment_pixels(crops, crops.shape[1], AugmentConfig(), gen), 0, a.mixup, gen)
            view = pixels_to_input(pixels, size)
            if a.adversarial_steps:   # moved to where the student still departs from the teacher near it
                view = disagreeing_views(student, teacher, view, a.adversarial_steps, a.adversarial_eps)
            yield torch.cat([x, view])

    report = refit_chain(student, teacher, inputs(), None if a.blocks == "all" else [int(b) for b in a.blocks.split(",")],
                         a.positions, a.ridge, relu_aware=not a.plain, seed=a.seed,
                         refine_epochs=a.refine_epochs, refine_lr=a.refine_lr,
                         maps_dtype=torch.bfloat16 if a.bf16_maps else torch.float32,
                         closed_form=not a.no_closed_form, refine_bf16=a.refine_bf16,
                         log=lambda s: print(s, file=sys.stderr, flush=True))
    report = {"student": a.student, "student_version": meta.get("version"), "teacher": a.teacher,
              "second_view": a.views, **({"mixup": a.mixup} if a.views == "augment" else {}),
              **({"adversarial_steps": a.adversarial_steps, "adversarial_eps": a.adversarial_eps}
                 if a.adversarial_steps > 0 else {}),
              "cache": str(folder), "photos": int(len(rows)), "seed": a.seed, **report}
    prep = meta.get("preprocessing", {})
    ck = save_checkpoint(a.out, student, name=a.name or f"{meta['name']}-lsq",
                         training={**meta.get("training", {}), "block_refit": report},
                         flip_average=a.flip or bool(prep.get("flip_average")),
                         precision=prep.get("precision", "float32"))
    report["version"] = ck["version"]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
