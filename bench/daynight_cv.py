"""Day/night: 5-fold cross-validated accuracy of the CNN and of a brightness-threshold baseline
on the same folds, on scenes (daynight/training) and on door frames (LFW DevTrain photos as
taken = day, darkened like a night camera = night). JSON on stdout and beside the PNG of the
confusion matrices and per-fold accuracies.

  python bench/daynight_cv.py [--out docs/gates/daynight_cv]           # about 10 CPU-minutes
  python bench/daynight_cv.py --replot docs/gates/daynight_cv.json      # the PNG of a saved result
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cv = result["cross_validation"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (name, r) in zip(axes[:2], cv.items()):
        m = np.array(r["confusion_day_night"])
        ax.imshow(m, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
        ax.set_xticks([0, 1], ["day", "night"])
        ax.set_yticks([0, 1], ["day", "night"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name}: CNN {r['cnn_acc']:.3f} (baseline {r['baseline_acc']:.3f})")
    ax = axes[2]
    for i, (name, r) in enumerate(cv.items()):
        folds = np.arange(len(r["cnn_folds"]))
        ax.plot(folds, r["cnn_folds"], "o-", color=f"C{i}", label=f"{name}: CNN")
        ax.plot(folds, r["baseline_folds"], "s--", color=f"C{i}", label=f"{name}: brightness")
    ax.axhline(0.97, color="grey", lw=0.8, label="target 0.97")
    ax.set_xlabel("fold")
    ax.set_ylabel("accuracy")
    ax.set_xticks(range(5))
    ax.legend(fontsize=7)
    ax.set_title("per fold (same folds for both)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--out", default=str(ROOT / "bench/out/daynight_cv"), help="writes OUT.json and OUT.png")
    ap.add_argument("--replot", help="a saved result (JSON): draw its PNG beside it, run nothing")
    a = ap.parse_args()
    if a.replot:
        path = Path(a.replot)
        plot(json.loads(path.read_text()), path.with_suffix(".png"))
        return
    from gates.train_daynight import DayNightConfig, cross_validate, load_samples, read_people

    t0 = time.time()
    cfg = DayNightConfig()
    data = Path(a.data)
    samples = load_samples(data, read_people(data / "faces/lfw/peopleDevTrain.txt"), cfg)
    out = {"config": asdict(cfg), "samples": len(samples),
           "cross_validation": cross_validate(samples, cfg, log=lambda m: print(m, file=sys.stderr))}
    cv = out["cross_validation"]
    out["targets"] = {f"{k}: cnn>=0.97 and > baseline": r["cnn_acc"] >= 0.97 and r["cnn_acc"] > r["baseline_acc"]
                      for k, r in cv.items()}
    out["seconds"] = round(time.time() - t0, 1)
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    plot(out, path.with_suffix(".png"))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
