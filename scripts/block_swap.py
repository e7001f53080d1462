"""Where does the student lose to its teacher? Swap parts between them and score the hybrids.

A chip_resnet student has its teacher's topology (encoder/backbones.py::ChipResNet), so any part
of it - the stem, one of the 14 residual blocks, the head - can be replaced by the teacher's own
(runs/dlib0/bf16.pt, written by scripts/dlib_in_pipeline.py: dlib's weights in this pipeline;
measuring only, never shipped). Each hybrid is scored on the held-out list of
scripts/heldout_eval.py (TAR at FAR 1e-3 over ~10^5 impostor pairs), flip-averaged in the
student's arithmetic, so the gain from each teacher part says how much of the gap that part of
the student holds:
  single  the student with one part replaced by the teacher's;
  prefix  the teacher up to and including a part, the student after it (where the error
          the student adds downstream starts to matter);
Run from the repository root, after a training run has built the crop cache:
  .venv/bin/python scripts/block_swap.py [--student CK] [--teacher runs/dlib0/bf16.pt] [--out F]
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoder.checkpoint import load_checkpoint  # noqa: E402
from encoder.crop_cache import CropCache, the_only_cache  # noqa: E402
from encoder.embedder import Embedder  # noqa: E402
from encoder.train import heldout_pairs  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from heldout_eval import report  # noqa: E402


def parts_of(model) -> list[tuple[str, list[str]]]:
    """[(part name, its parameter names)] in order from the input: stem, block0..block13, head."""
    n_blocks = len(model.backbone.block_downsamples)
    names = [("stem", [0])] + [(f"block{j}", [1 + 2 * j, 2 + 2 * j]) for j in range(n_blocks)]
    out = [(name, [f"backbone.convs.{i}.{w}" for i in idx for w in ("weight", "bias")]) for name, idx in names]
    return out + [("head", ["head_fc.weight", "head_fc.bias"])]


def hybrid(student, teacher, keys: list[str]):
    m = copy.deepcopy(student)
    sd = m.state_dict()
    tsd = teacher.state_dict()
    for k in keys:
        sd[k] = tsd[k].clone()
    m.load_state_dict(sd)
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default=None, help="default: the shipped encoder/weights/default.pt")
    ap.add_argument("--teacher", default="runs/dlib0/bf16.pt")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--modes", default="single,prefix")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    folder = Path(a.cache) if a.cache else the_only_cache(ROOT / ".cache/facegate/crops")
    cache = CropCache(folder)
    rows, pa, pb, same = heldout_pairs(cache.identities, 0.05, 15, 0)
    crops = np.ascontiguousarray(cache.crops[rows])
    student, meta = load_checkpoint(a.student)
    teacher, _ = load_checkpoint(a.teacher)
    if student.state_dict().keys() != teacher.state_dict().keys():
        sys.exit("student and teacher differ in topology")

    def score(model) -> dict:
        emb = Embedder(model, meta)           # the student's flip averaging and arithmetic for every hybrid
        e = np.concatenate([emb.embed_crops(crops[i:i + 64]) for i in range(0, len(crops), 64)])
        return report(e, pa, pb, same)

    parts = parts_of(student)
    out = {"student": a.student or "encoder/weights/default.pt", "student_version": meta.get("version"),
           "teacher": a.teacher, "list": {"photos": int(len(rows)), "genuine_pairs": int(same.sum()),
                                           "impostor_pairs": int((~same).sum())}}
    t0 = time.time()
    out["student_alone"] = score(student)
    out["teacher_alone"] = score(hybrid(student, teacher, [k for _, ks in parts for k in ks]))
    print("student", out["student_alone"], "\nteacher", out["teacher_alone"], file=sys.stderr, flush=True)
    for mode in a.modes.split(","):
        out[mode] = {}
        for i, (name, _) in enumerate(parts):
            chosen = [parts[i]] if mode == "single" else parts[:i + 1]
            r = score(hybrid(student, teacher, [k for _, ks in chosen for k in ks]))
            out[mode][name] = r
            print(f"{mode:6s} {name:8s} TAR@1e-3 {r['tar@far=1e-3']:.4f}  EER {r['eer']:.4f}  "
                  f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
