"""Training speed on this machine: one step (augmentation excluded) of the encoder in a config,
forward + triplet-free loss + backward + AdamW, for each numeric mode, in one run.

Modes: float32; float32 in channels_last (NHWC); bfloat16 autocast; bfloat16 autocast in
channels_last. The bfloat16 modes run only where the CPU computes it natively (AVX512-BF16 or
AMX); without it PyTorch emulates bfloat16, slower than float32. Prints JSON: median seconds
per step over the steps after the warm-up, photos per second, and the speed-up over float32;
a bar chart goes beside it. Also how far the bfloat16 embeddings are from float32's, same weights.

  python bench/train_speed.py --config configs/s96_ft.json --steps 6 --out bench/out/train_speed.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoder.face_encoder import FaceEncoder  # noqa: E402
from encoder.train import TrainConfig, cpu_has_bf16  # noqa: E402

MODES = {"float32": (False, False), "float32_channels_last": (False, True),
         "bfloat16": (True, False), "bfloat16_channels_last": (True, True)}


def time_mode(cfg: TrainConfig, bf16: bool, channels_last: bool, steps: int, batch: int) -> list[float]:
    torch.manual_seed(0)
    model = FaceEncoder(cfg.encoder)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, cfg.encoder.input_size, cfg.encoder.input_size).contiguous(memory_format=fmt)
    target = F.normalize(torch.randn(batch, cfg.encoder.embedding_dim), dim=1)
    times = []
    for _ in range(steps + 1):                      # the first step is the warm-up
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            e = model(x)
        loss = (1 - (e.float() * target).sum(1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return times[1:]


def bf16_embedding_error(cfg: TrainConfig) -> float:
    torch.manual_seed(0)
    model = FaceEncoder(cfg.encoder).eval()
    x = torch.randn(64, 3, cfg.encoder.input_size, cfg.encoder.input_size)
    with torch.no_grad():
        e32 = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            e16 = model(x).float()
    return float((e32 - e16).norm(dim=1).max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs/s96_ft.json"))
    ap.add_argument("--steps", type=int, default=6, help="timed steps per mode (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    ap.add_argument("--out", default=str(ROOT / "bench/out/train_speed.json"))
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = TrainConfig.from_dict(json.loads(Path(a.config).read_text()))
    batch = cfg.p * cfg.k + cfg.extra
    native = cpu_has_bf16()
    rows = {}
    for name, (bf16, cl) in MODES.items():
        if bf16 and not native:
            rows[name] = {"skipped": "no native bfloat16 on this CPU"}
            continue
        t = sorted(time_mode(cfg, bf16, cl, a.steps, batch))
        med = t[len(t) // 2]
        rows[name] = {"sec_per_step": round(med, 3), "photos_per_sec": round(batch / med, 1)}
        print(name, rows[name], file=sys.stderr)
    base = rows["float32"]["sec_per_step"]
    for r in rows.values():
        if "sec_per_step" in r:
            r["speedup"] = round(base / r["sec_per_step"], 2)
    report = {"config": a.config, "batch": batch, "input_size": cfg.encoder.input_size,
              "threads": torch.get_num_threads(), "native_bf16": native, "steps_timed": a.steps, "modes": rows}
    if native:
        report["bf16_max_embedding_distance"] = round(bf16_embedding_error(cfg), 4)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = {k: v for k, v in rows.items() if "photos_per_sec" in v}
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(list(timed), [v["photos_per_sec"] for v in timed.values()])
    for i, v in enumerate(timed.values()):
        ax.text(v["photos_per_sec"], i, f" {v['speedup']}x", va="center")
    ax.set_xlim(0, 1.18 * max(v["photos_per_sec"] for v in timed.values()))
    ax.set_xlabel("training photos per second")
    ax.set_title(f"{Path(a.config).name}: batch {batch}, {report['threads']} threads")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
