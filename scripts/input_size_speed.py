"""What a 112-px input would cost at serving time, before training one (session 9).

The shipped encoder and the same network read at 112 px (face_encoder.resized_from), each in
float32 and under bfloat16 autocast, through the Embedder as the service runs it (one aligned
crop, both flips, 1 thread, batch 1): median of 60 after 10 warm-up calls. Absolute times on a
busy machine are noisy; compare the four in one run.
Run from the repository root: .venv/bin/python scripts/input_size_speed.py (~1 min).
"""
import dataclasses
import json
import time

import numpy as np
import torch

from encoder.checkpoint import load_checkpoint
from encoder.embedder import Embedder
from encoder.face_encoder import resized_from

torch.set_num_threads(1)

m96, meta = load_checkpoint("encoder/weights/default.pt")
cfg = m96.config
c112 = dataclasses.replace(cfg, input_size=112)
m112 = resized_from(m96, c112)
crop = np.random.default_rng(0).integers(0, 255, (1, 112, 112, 3), dtype=np.uint8)
res = {}
for name, m in (("s96", m96), ("s112", m112)):
    for prec in ("float32", "bfloat16"):
        e = Embedder(m, {**meta, "preprocessing": {**meta["preprocessing"], "precision": prec}})
        for _ in range(10): e.embed_crops(crop)
        ts = []
        for _ in range(60):
            t = time.perf_counter(); e.embed_crops(crop); ts.append(time.perf_counter() - t)
        res[f"{name}_{prec}_ms"] = round(1000 * float(np.median(ts)), 2)
print(json.dumps(res))
