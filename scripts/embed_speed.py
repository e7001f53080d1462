"""How the Embedder runs the shipped network, and what each way costs (session 14).

The shipped checkpoint through the Embedder as the service runs it (one aligned DevTest crop per
call, 1 thread, batch 1), each way in one run: eager (bfloat16 autocast, channels_last, the path
before session 14) and frozen (the same under TorchScript, traced and frozen once: the default),
plus the face_recognition peer's encoding of the same photos for scale. Median over the photos
after 5 warm-up calls, interleaved photo by photo so that a busy machine slows each way alike.
Also the largest difference between the two ways' embeddings and distances.
Run from the repository root: .venv/bin/python scripts/embed_speed.py [--photos 60] (~1 min).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoder.embedder import Embedder  # noqa: E402
from encoder.images import decode_image  # noqa: E402
from encoder.precision import machine_info  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", default=str(ROOT.parent / "shared/data/faces/lfw"))
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--no-peer", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    lfw = Path(a.lfw)
    paths = sorted({p for line in (lfw / "pairs_devtest.tsv").read_text().splitlines()
                    for p in line.split("\t")[:2]})[:a.photos]
    frozen = Embedder.from_checkpoint(None)
    declared = None
    if frozen.declared == "bfloat16" and not frozen.bf16:
        # bfloat16 is not native here, so the Embedder computes in float32: time the checkpoint's
        # own arithmetic too, to show what the choice saves (encoder/precision.py)
        declared = Embedder.from_checkpoint(None, precision="bfloat16")
    os.environ["FACEGATE_FROZEN"] = "0"
    eager = Embedder.from_checkpoint(None)
    peer = None
    if not a.no_peer:
        try:
            import face_recognition as peer
        except ImportError:
            pass
    imgs = [decode_image(lfw / p) for p in paths]
    crops = [c for c in (frozen.align(i).crop for i in imgs) if c is not None]
    ways = {"eager": eager.embed_crops, "frozen": frozen.embed_crops}
    if declared is not None:
        ways["frozen_emulated_bfloat16"] = declared.embed_crops
    for f in ways.values():
        for c in crops[:5]:
            f(c[None])
    times = {k: [] for k in ways}
    vecs = {k: [] for k in ways}
    for c in crops:
        for k, f in ways.items():
            t0 = time.perf_counter()
            v = f(c[None])[0]
            times[k].append(time.perf_counter() - t0)
            vecs[k].append(v)
    out = {"checkpoint_version": frozen.version, "precision": "bfloat16" if frozen.bf16 else "float32",
           "arithmetic": {k: e.arithmetic for k, e in (("frozen", frozen), ("eager", eager))
                          + ((("frozen_emulated_bfloat16", declared),) if declared else ())},
           "machine": machine_info(), "photos": len(crops), "threads": 1}
    out |= {f"ms_per_face_{k}": round(1000 * float(np.median(t)), 2) for k, t in times.items()}
    if peer is not None:
        pt = []
        for img in imgs[:20]:
            locs = peer.face_locations(img)
            if locs:
                t0 = time.perf_counter()
                peer.face_encodings(img, known_face_locations=locs)
                pt.append(time.perf_counter() - t0)
        out["ms_per_face_peer_encoding"] = round(1000 * float(np.median(pt)), 2)
    e, f = np.stack(vecs["eager"]), np.stack(vecs["frozen"])
    de = np.linalg.norm(e[:, None] - e[None], axis=2)
    df = np.linalg.norm(f[:, None] - f[None], axis=2)
    out["min_cos_frozen_vs_eager"] = round(float((e * f).sum(1).min()), 6)
    out["max_distance_change"] = round(float(np.abs(de - df).max()), 4)
    out["speedup_frozen_over_eager"] = round(out["ms_per_face_eager"] / out["ms_per_face_frozen"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
