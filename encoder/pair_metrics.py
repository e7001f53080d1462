"""Verification metrics on pairs, in facegate's distance unit (Euclidean between unit vectors).

A pair is judged "same" when distance <= threshold. Pure numpy, deterministic.
"""
from __future__ import annotations

import numpy as np


def roc(dist: np.ndarray, same: np.ndarray):
    """Thresholds (ascending, each an observed distance) with the FAR and TAR each gives."""
    dist = np.asarray(dist, np.float64)
    same = np.asarray(same, bool)
    order = np.argsort(dist, kind="mergesort")
    d, s = dist[order], same[order]
    last = np.r_[d[1:] != d[:-1], True]           # one point per distinct distance
    tp = np.cumsum(s)[last]
    fp = np.cumsum(~s)[last]
    n_pos, n_neg = max(s.sum(), 1), max((~s).sum(), 1)
    thr = d[last]
    return np.r_[-np.inf, thr], np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def auc(far: np.ndarray, tar: np.ndarray) -> float:
    return float(np.trapezoid(np.r_[tar, 1.0], np.r_[far, 1.0]))


def eer(far: np.ndarray, tar: np.ndarray) -> float:
    frr = 1.0 - tar
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2)


def tar_at_far(far: np.ndarray, tar: np.ndarray, target: float) -> float:
    ok = far <= target
    return float(tar[ok].max()) if ok.any() else 0.0


def best_accuracy_threshold(dist: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold of highest accuracy, placed midway between neighbouring distances."""
    thr, far, tar = roc(dist, same)
    same = np.asarray(same, bool)
    n_pos, n_neg = same.sum(), (~same).sum()
    acc = (tar * n_pos + (1 - far) * n_neg) / len(same)
    i = int(np.argmax(acc))
    if i == 0:
        t = float(thr[1]) - 1e-6 if len(thr) > 1 else 0.0
    elif i + 1 < len(thr):
        t = float((thr[i] + thr[i + 1]) / 2)
    else:
        t = float(thr[i]) + 1e-6
    return t, float(acc[i])


def accuracy(dist, same, threshold) -> float:
    return float(np.mean((np.asarray(dist) <= threshold) == np.asarray(same, bool)))


def kfold_correct(dist: np.ndarray, same: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Whether the LFW protocol judges each pair right: the pair's fold is judged with the best
    threshold of the other folds (as kfold_accuracy does)."""
    dist, same, folds = np.asarray(dist), np.asarray(same, bool), np.asarray(folds)
    right = np.zeros(len(dist), bool)
    for f in np.unique(folds):
        test = folds == f
        t, _ = best_accuracy_threshold(dist[~test], same[~test])
        right[test] = (dist[test] <= t) == same[test]
    return right


def mcnemar(right_a: np.ndarray, right_b: np.ndarray) -> dict:
    """Two systems judged on the same pairs: how many only A gets right, how many only B, and
    the exact two-sided McNemar p-value (a binomial test on those discordant pairs)."""
    from math import comb

    a, b = np.asarray(right_a, bool), np.asarray(right_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "both_wrong": int((~a & ~b).sum()),
            "mcnemar_p": round(p, 4)}


def kfold_accuracy(dist: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    """LFW protocol: each fold judged with the best threshold of the other folds; mean and std."""
    dist, same, folds = np.asarray(dist), np.asarray(same, bool), np.asarray(folds)
    accs = []
    for f in np.unique(folds):
        test = folds == f
        t, _ = best_accuracy_threshold(dist[~test], same[~test])
        accs.append(accuracy(dist[test], same[test], t))
    return float(np.mean(accs)), float(np.std(accs))


def threshold_at_far(dist: np.ndarray, same: np.ndarray, target_far: float) -> tuple[float, float, float]:
    """The largest threshold whose false-accept rate is <= target; returns (threshold, far, tar).

    The threshold sits midway between the last admitted impostor-free distance and the next
    distance, so a tiny shift in a distance does not flip a decision at the boundary."""
    thr, far, tar = roc(dist, same)
    ok = np.nonzero(far <= target_far)[0]
    i = int(ok.max())
    t = float(thr[i]) if i > 0 else float(thr[1]) - 1e-6
    if 0 < i < len(thr) - 1:
        t = float((thr[i] + thr[i + 1]) / 2)
    return t, float(far[i]), float(tar[i])


def pair_report(dist, same, folds) -> dict:
    thr, far, tar = roc(dist, same)
    acc, acc_std = kfold_accuracy(dist, same, folds)
    t, _ = best_accuracy_threshold(dist, same)
    return {
        "pairs": int(len(dist)),
        "acc": round(acc, 4), "acc_std": round(acc_std, 4),
        "auc": round(auc(far, tar), 4), "eer": round(eer(far, tar), 4),
        "tar@far=1e-2": round(tar_at_far(far, tar, 1e-2), 4),
        "tar@far=1e-3": round(tar_at_far(far, tar, 1e-3), 4),
        "threshold": round(t, 4),
    }


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str, title: str = "ROC"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for name, (far, tar) in curves.items():
        ax.plot(np.maximum(far, 1e-5), tar, label=f"{name} (AUC {auc(far, tar):.4f})")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
