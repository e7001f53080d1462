"""Validation curves of successive training runs (each run's eval rows in log.jsonl), drawn end
to end on one step axis, with reference levels. Usage:
  python scripts/plot_val_curves.py OUT.png RUN_DIR[:LABEL] ... [--ref LABEL=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def eval_rows(run: Path) -> tuple[list[dict], dict | None]:
    """-> (the run's eval rows by step, its refit_head row (step 0, before and after) or None)."""
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in rows if r.get("eval")}      # a re-logged final eval counts once
    refit = next((r for r in rows if r.get("refit_head")), None)
    return [by_step[s] for s in sorted(by_step)], refit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--ref", action="append", default=[], help="LABEL=VALUE: a horizontal line on the accuracy plot")
    a = ap.parse_args()
    fig, (acc_ax, auc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0
    for spec in a.runs:
        run, _, label = spec.partition(":")
        rows, refit = eval_rows(Path(run))
        if refit:       # the head set by least squares before step 1: a jump at the run's start
            rows = [refit, *rows]
            for ax, key in ((acc_ax, "val_acc"), (auc_ax, "val_auc")):
                ax.plot([offset], [refit[f"before_{key}"]], marker="x", color="black")
        steps = [offset + r["step"] for r in rows]
        acc_ax.plot(steps, [r["val_acc"] for r in rows], marker="o", label=label or run)
        auc_ax.plot(steps, [r["val_auc"] for r in rows], marker="o", label=label or run)
        offset = steps[-1]
    for ref in a.ref:
        label, _, value = ref.partition("=")
        acc_ax.axhline(float(value), ls="--", lw=1, color="grey")
        acc_ax.text(0, float(value), f" {label}", va="bottom", fontsize=8)
    for ax, name in ((acc_ax, "validation accuracy"), (auc_ax, "validation AUC")):
        ax.set_xlabel("training step (runs end to end)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=8)
    fig.suptitle("held-out DevTrain people (1,525 pairs)")
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(json.dumps({"plot": a.out}))


if __name__ == "__main__":
    main()
