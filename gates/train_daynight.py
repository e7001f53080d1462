"""Training and cross-validating the day/night classifier, against a brightness baseline.

Two kinds of data, always together: outdoor webcam scenes (../shared/data/daynight/training)
and door-like frames made from LFW DevTrain photos, as taken (day) or darkened the way a night
camera darkens them (gates.daynight.darken). k-fold cross-validation (there is no test split
on purpose): scenes stratified at random, door frames by person, so no person is on both sides.
The baseline is the best mean-brightness threshold of the training folds.
"""
from __future__ import annotations

import json
import sys
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .daynight import DayNightNet, darken, light_level, save_daynight, to_input, to_tensor


@dataclass(frozen=True)
class DayNightConfig:
    folds: int = 5
    epochs: int = 30
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 16
    door_frames: int = 1200
    seed: int = 0


@dataclass
class Sample:
    small: np.ndarray      # 64 x 64 x 3 uint8
    night: int
    kind: str              # "scene" or "door"
    fold: int


def _read(path: Path) -> np.ndarray:
    im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    return np.asarray(im)


def load_samples(data_dir: Path, people: list[str], cfg: DayNightConfig) -> list[Sample]:
    rng = np.random.default_rng(cfg.seed)
    out = []
    for label, night in (("day", 0), ("night", 1)):
        files = sorted((data_dir / "daynight/training" / label).glob("*.jpg"))
        folds = rng.permutation(len(files)) % cfg.folds          # stratified: each label spread over the folds
        for f, k in zip(files, folds):
            out.append(Sample(to_input(_read(f)), night, "scene", int(k)))
    lfw = data_dir / "faces/lfw/images"
    photos = [p for name in people for p in sorted((lfw / name).glob("*.jpg"))]
    for i in rng.choice(len(photos), min(cfg.door_frames, len(photos)), replace=False):
        p = photos[i]
        img = _read(p)
        night = int(rng.integers(2))
        frame = darken(img, rng) if night else img
        fold = zlib.crc32(p.parent.name.encode()) % cfg.folds   # by person
        out.append(Sample(to_input(frame), night, "door", int(fold)))
    return out


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    gain = 1 + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.3       # +-15 %: light is the signal, keep it
    x = x * gain + torch.randn(x.shape, generator=gen) * 0.01
    shift = torch.randint(-4, 5, (2,), generator=gen)
    x = torch.roll(x, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
    return x.clamp(0, 1)


def train_model(samples: list[Sample], cfg: DayNightConfig) -> DayNightNet:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x = to_tensor(np.stack([s.small for s in samples]))
    y = torch.tensor([s.night for s in samples], dtype=torch.float32)
    model = DayNightNet(cfg.width)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * -(-len(x) // cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg.batch):
            idx = order[i:i + cfg.batch]
            loss = F.binary_cross_entropy_with_logits(model(_augment(x[idx], gen)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def predict(model: DayNightNet, samples: list[Sample]) -> np.ndarray:
    return torch.sigmoid(model(to_tensor(np.stack([s.small for s in samples])))).numpy()


def brightness_threshold(samples: list[Sample]) -> float:
    """The mean-luminance threshold (night when below) of best accuracy on these samples."""
    light = np.array([light_level(s.small) for s in samples])
    night = np.array([s.night for s in samples], bool)
    cands = np.unique(light)
    accs = [np.mean((light < t) == night) for t in cands]
    return float(cands[int(np.argmax(accs))])


def cross_validate(samples: list[Sample], cfg: DayNightConfig, log=print) -> dict:
    res = {kind: {"cnn": [], "baseline": [], "n": []} for kind in ("scene", "door")}
    confusion = {kind: np.zeros((2, 2), int) for kind in ("scene", "door")}
    for k in range(cfg.folds):
        train = [s for s in samples if s.fold != k]
        test = [s for s in samples if s.fold == k]
        model = train_model(train, cfg)
        t = brightness_threshold(train)
        p = predict(model, test)
        for kind in ("scene", "door"):
            sel = [i for i, s in enumerate(test) if s.kind == kind]
            y = np.array([test[i].night for i in sel])
            pred = (p[sel] >= 0.5).astype(int)
            base = np.array([light_level(test[i].small) < t for i in sel]).astype(int)
            res[kind]["cnn"].append(float(np.mean(pred == y)))
            res[kind]["baseline"].append(float(np.mean(base == y)))
            res[kind]["n"].append(len(sel))
            np.add.at(confusion[kind], (y, pred), 1)
        log(json.dumps({"fold": k, **{f"{kind}_{m}": round(res[kind][m][-1], 4) for kind in res
                                      for m in ("cnn", "baseline")}}))
    out = {}
    for kind, r in res.items():
        w = np.array(r["n"], float)
        out["scenes" if kind == "scene" else "door_frames"] = {
            "cnn_acc": round(float(np.average(r["cnn"], weights=w)), 4),
            "baseline_acc": round(float(np.average(r["baseline"], weights=w)), 4),
            "cnn_folds": [round(v, 4) for v in r["cnn"]], "baseline_folds": [round(v, 4) for v in r["baseline"]],
            "samples": int(w.sum()), "confusion_day_night": confusion[kind].tolist()}
    return out


def read_people(path: Path) -> list[str]:
    """LFW's peopleDevTrain.txt: a count line, then `name<TAB>n_photos`."""
    return [line.split()[0] for line in path.read_text().splitlines()
            if line.strip() and not line.strip().isdigit()]


def main(argv=None):
    import argparse
    import time

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    ap.add_argument("--export", help="also train on everything and write the checkpoint here")
    ap.add_argument("--no-cv", action="store_true")
    a = ap.parse_args(argv)
    cfg = DayNightConfig()
    data = Path(a.data)
    t0 = time.time()
    samples = load_samples(data, read_people(data / "faces/lfw/peopleDevTrain.txt"), cfg)
    out = {"config": asdict(cfg), "samples": len(samples)}
    if not a.no_cv:
        out["cross_validation"] = cross_validate(samples, cfg, log=lambda m: print(m, file=sys.stderr))
    if a.export:
        model = train_model(samples, cfg)
        save_daynight(a.export, model, threshold=0.5, too_dark_light=0.0, config=asdict(cfg),
                      metrics=out.get("cross_validation", {}),
                      training_data="daynight/training scenes + LFW DevTrain door frames (as taken / darkened)")
        out["checkpoint"] = a.export
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
