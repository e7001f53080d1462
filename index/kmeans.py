"""Seeded k-means over unit vectors (FAISS), and documented ways to choose k.

Choosing k (k = 0), by a distance (`choose_k_by_distance`, used when the encoder checkpoint
carries a clustering cut calibrated on people apart from any test, bench/cluster_tune.py):
agglomerative clustering with average linkage, cut where the mean distance between two groups
exceeds that distance; k is the number of groups, and each photo keeps its group. Deterministic.

Choosing k by silhouette (`choose_k`, when no cut is calibrated): run k-means for every k in 2..k_max and keep the k of highest mean
silhouette (Rousseeuw 1987), with distances in facegate's unit. The silhouette of a photo
is (b - a) / max(a, b), a = mean distance to its own cluster, b = to the nearest other one;
it needs two clusters, so k = 1 is chosen instead when every pair of photos lies within
`same_distance` (one person). Every run is seeded, so the same photos give the same answer.
"""
from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

SEED = 1234


@dataclass
class Clustering:
    k: int
    labels: np.ndarray        # n, in 0..k-1
    centroids: np.ndarray     # k x d, unit length
    silhouette: float | None  # None when k == 1 or k == n


def _pairwise(x: np.ndarray) -> np.ndarray:
    g = np.clip(x @ x.T, -1.0, 1.0)
    return np.sqrt(np.clip(2.0 - 2.0 * g, 0.0, 4.0))


def _farthest_pair(x: np.ndarray, measure=None) -> float:
    if measure is None:
        return float(_pairwise(x).max())
    i, j = np.triu_indices(len(x), 1)
    return float(np.max(measure(x[i], x[j])))


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    d = _pairwise(x)
    ks = np.unique(labels)
    if len(ks) < 2 or len(ks) == len(x):
        raise ValueError(f"silhouette needs 2..n-1 clusters, got {len(ks)} for {len(x)} points")
    s = np.zeros(len(x))
    for i in range(len(x)):
        own = labels == labels[i]
        if own.sum() == 1:
            continue  # a singleton's silhouette is 0 by convention
        a = d[i, own].sum() / (own.sum() - 1)
        b = min(d[i, labels == c].mean() for c in ks if c != labels[i])
        s[i] = (b - a) / max(a, b, 1e-12)
    return float(s.mean())


def kmeans(x: np.ndarray, k: int, seed: int = SEED, niter: int = 50, nredo: int = 5) -> Clustering:
    x = np.ascontiguousarray(x, np.float32)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in 1..{n} for {n} photos, got {k}")
    if k == n:
        labels = np.arange(n)
        return Clustering(k, labels, x.copy(), None)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=nredo, seed=seed, spherical=True,
                      min_points_per_centroid=1, max_points_per_centroid=1_000_000, verbose=False)
    km.train(x)
    _, labels = km.index.search(x, 1)
    labels = labels[:, 0].astype(np.int64)
    # relabel in order of first appearance, so the answer does not depend on FAISS's numbering
    order = {c: i for i, c in enumerate(dict.fromkeys(labels.tolist()))}
    labels = np.array([order[c] for c in labels], np.int64)
    cents = np.stack([x[labels == c].mean(0) for c in range(len(order))])
    cents /= np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
    sil = silhouette(x, labels) if 1 < len(order) < n else None
    return Clustering(len(order), labels, cents.astype(np.float32), sil)


def choose_k(x: np.ndarray, k_max: int = 50, same_distance: float | None = None, seed: int = SEED,
             measure=None) -> Clustering:
    """k by the best silhouette, or 1 where every pair lies within `same_distance` (a Verify
    threshold: one person). `measure`: (a, b) -> row-wise distances in the threshold's own unit
    (encoder.score_norm.scorer: normalised for a release with a cohort); default Euclidean."""
    x = np.ascontiguousarray(x, np.float32)
    n = len(x)
    if n == 0:
        raise ValueError("no photos to cluster")
    if n == 1 or (same_distance is not None and _farthest_pair(x, measure) <= same_distance):
        return kmeans(x, 1, seed)
    best = None
    for k in range(2, min(k_max, n - 1) + 1):
        c = kmeans(x, k, seed)
        if c.silhouette is not None and (best is None or c.silhouette > best.silhouette + 1e-9):
            best = c
    return best if best is not None else kmeans(x, min(2, n), seed)


def choose_k_by_distance(x: np.ndarray, cut: float, method: str = "average") -> Clustering:
    """Agglomerative clustering (scipy, `method` linkage over facegate distances), cut at `cut`."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    x = np.ascontiguousarray(x, np.float32)
    n = len(x)
    if n == 0:
        raise ValueError("no photos to cluster")
    if n == 1:
        return kmeans(x, 1)
    d = _pairwise(x).astype(np.float64)
    np.fill_diagonal(d, 0.0)
    raw = fcluster(linkage(squareform(d, checks=False), method=method), t=cut, criterion="distance")
    order = {c: i for i, c in enumerate(dict.fromkeys(raw.tolist()))}
    labels = np.array([order[c] for c in raw], np.int64)
    k = len(order)
    cents = np.stack([x[labels == c].mean(0) for c in range(k)])
    cents /= np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
    sil = silhouette(x, labels) if 1 < k < n else None
    return Clustering(k, labels, cents.astype(np.float32), sil)
