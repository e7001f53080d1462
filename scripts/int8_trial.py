"""Would an int8 network make the embedding cheaper than float32, or than native bfloat16? (sessions 18-19)

A feasibility trial, not a shipped path. The shipped chip_resnet's convolutions in int8 (eager-mode
static quantization, PyTorch's "x86" engine: fbgemm / oneDNN, per-channel weights, activation
ranges observed on 300 DevTrain photos and their mirror images: training people only); the chip
resample before them and the pooled head after them stay in float32. Against the Embedder in
float32 (frozen), and where this CPU computes bfloat16 natively also against the Embedder in
bfloat16 (frozen, as the service runs it there):
  - time per face, both views, 1 thread, batch 1, interleaved face by face, median after warm-up;
  - agreement of the embeddings (cosine) on every photo of both DevTest lists;
  - the pair metrics of eval-pairs on pairs_devtest.tsv and pairs_devtest_far.tsv, each
    embedding scored from the same aligned crop (the evaluation rule: the chosen face or the
    centre crop).
Run from the repository root: .venv/bin/python scripts/int8_trial.py [--out JSON] (~10 min on 2 cores).
"""
import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.nn.intrinsic import ConvReLU2d
from torch.ao.nn.quantized import FloatFunctional
from torch.ao.quantization import DeQuantStub, QuantStub, convert, get_default_qconfig, prepare

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoder.align import centre_crop  # noqa: E402
from encoder.backbones import dlib_common_size  # noqa: E402
from encoder.embedder import Embedder  # noqa: E402
from encoder.face_encoder import preprocess  # noqa: E402
from encoder.images import decode_image  # noqa: E402
from encoder.pair_eval import PairList  # noqa: E402
from encoder.pair_metrics import pair_report  # noqa: E402
from encoder.precision import machine_info  # noqa: E402


class QuantizedChipBody(nn.Module):
    """ChipResNet after its chip resample, as a quantizable module: each block's first
    convolution fused with its ReLU, the residual sum (dlib's: backbones.dlib_common_size) and
    its ReLU one quantized add_relu."""

    def __init__(self, bb):
        super().__init__()
        self.downsamples = bb.block_downsamples
        n = len(self.downsamples)
        self.stem = ConvReLU2d(bb.convs[0], nn.ReLU())
        self.c1 = nn.ModuleList(ConvReLU2d(bb.convs[1 + 2 * j], nn.ReLU()) for j in range(n))
        self.c2 = nn.ModuleList(bb.convs[2 + 2 * j] for j in range(n))
        self.adds = nn.ModuleList(FloatFunctional() for _ in range(n))
        self.quant, self.dequant = QuantStub(), DeQuantStub()

    def forward(self, chip):
        x = F.max_pool2d(self.stem(self.quant(chip)), 3, 2)
        for j, down in enumerate(self.downsamples):
            y = self.c2[j](self.c1[j](x))
            y, s = dlib_common_size(y, F.avg_pool2d(x, 2, 2) if down else x)
            x = self.adds[j].add_relu(y, s)
        return self.dequant(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", default=str(ROOT.parent / "shared/data/faces/lfw"))
    ap.add_argument("--out", default=str(ROOT / "docs/encoder/experiments/int8_trial.json"))
    ap.add_argument("--calibration-people", type=int, default=300)
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.backends.quantized.engine = "x86"
    torch.set_num_threads(1)
    lfw = Path(a.lfw)
    emb = Embedder.from_checkpoint(None, precision="float32")
    bf16 = (Embedder.from_checkpoint(None, precision="bfloat16")
            if emb.declared == "bfloat16" and machine_info()["bf16_native"] else None)
    model = emb.model
    bb = model.backbone
    if not hasattr(bb, "block_downsamples"):
        sys.exit("this trial knows the chip_resnet backbone only")
    # activation ranges from training people's photos (peopleDevTrain.txt: a count, then name<TAB>n)
    people = [line.split("\t")[0] for line in (lfw / "peopleDevTrain.txt").read_text().splitlines()[1:] if line]
    cal = []
    for n in people[:a.calibration_people]:
        c = emb.align(decode_image(sorted((lfw / "images" / n).glob("*.jpg"))[0])).crop
        if c is not None:
            cal.append(c)
    body = QuantizedChipBody(copy.deepcopy(bb)).float().eval()   # a copy: the float32 way stays untouched
    body.qconfig = get_default_qconfig("x86")
    prepare(body, inplace=True)

    def views(crops):
        x = preprocess(crops, model.config.input_size).contiguous()
        return torch.cat([x, x.flip(3)])

    with torch.no_grad():
        for i in range(0, len(cal), 32):
            body(bb.chips(views(np.stack(cal[i:i + 32]))))
    convert(body, inplace=True)
    frozen_body = {}

    @torch.no_grad()
    def int8_embed(crops):
        chips = bb.chips(views(crops))
        if len(chips) not in frozen_body:
            frozen_body[len(chips)] = torch.jit.freeze(torch.jit.trace(body, chips))
        f = frozen_body[len(chips)](chips)
        e = F.normalize(model.head_fc(f.float().mean((2, 3))), dim=1)
        return F.normalize(e[:len(e) // 2] + e[len(e) // 2:], dim=1).numpy()

    pairs = {name: PairList.read(str(lfw / f"{name}.tsv")) for name in ("pairs_devtest", "pairs_devtest_far")}
    photos = sorted({p for pl in pairs.values() for p in set(pl.a) | set(pl.b)})
    ways = {"float32": emb.embed_crops, "int8": int8_embed} | ({"bfloat16": bf16.embed_crops} if bf16 else {})
    vecs = {k: {} for k in ways}
    times = {k: [] for k in ways}
    for i, p in enumerate(photos):
        img = decode_image(lfw / p)
        al = emb.align(img)
        crop = (al.crop if al.crop is not None else centre_crop(img, emb.aligner.config.crop_size))[None]
        for k, f in ways.items():
            t0 = time.perf_counter()
            vecs[k][p] = f(crop)[0]
            times[k].append(time.perf_counter() - t0)
        if i % 250 == 0:
            print(f"{i}/{len(photos)} photos", file=sys.stderr)
    out = {"encoder_version": emb.version, "ways": {k: k if k == "int8" else e.arithmetic
                                                     for k, e in (("float32", emb), ("bfloat16", bf16), ("int8", None)) if k in ways},
           "machine": machine_info(), "quantized_engine": torch.backends.quantized.engine,
           "calibration_photos": len(cal), "photos": len(photos), "threads": 1,
           "ms_per_face": {k: round(1000 * float(np.median(t[10:])), 2) for k, t in times.items()}}
    for k in ways:
        if k != "float32":
            cos = np.array([vecs[k][p] @ vecs["float32"][p] for p in photos])
            out[f"cos_{k}_vs_float32"] = {"min": round(float(cos.min()), 5), "median": round(float(np.median(cos)), 5)}
    for k in ways:
        if k != "int8":
            out[f"speedup_int8_over_{k}"] = round(out["ms_per_face"][k] / out["ms_per_face"]["int8"], 2)
    for name, pl in pairs.items():
        for k, v in vecs.items():
            d = np.linalg.norm(np.stack([v[p] for p in pl.a]) - np.stack([v[p] for p in pl.b]), axis=1)
            out[f"{k}/{name}"] = pair_report(d, pl.same, pl.folds)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
