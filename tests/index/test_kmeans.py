"""Seeded k-means and the silhouette choice of k, on points whose clusters are known."""
from __future__ import annotations

import numpy as np
import pytest

from index.kmeans import choose_k, kmeans, silhouette


def blobs(k=4, per=6, spread=0.08, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:k]          # orthogonal unit centres
    x = np.repeat(centres, per, 0) + rng.normal(scale=spread, size=(k * per, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(k), per)


def same_partition(a, b):
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(a)) for j in range(len(a)))


def test_kmeans_finds_well_separated_clusters_and_is_seeded():
    x, truth = blobs()
    c = kmeans(x, 4)
    assert c.k == 4 and same_partition(c.labels, truth)
    np.testing.assert_allclose(np.linalg.norm(c.centroids, axis=1), 1, atol=1e-5)
    assert np.array_equal(kmeans(x, 4).labels, c.labels)
    assert c.labels[0] == 0   # numbered by first appearance


def test_choose_k_picks_the_true_number_of_people():
    for k in (2, 3, 5):
        x, truth = blobs(k=k, seed=k)
        c = choose_k(x, k_max=10)
        assert c.k == k and same_partition(c.labels, truth)


def test_one_person_is_one_cluster_with_a_same_distance():
    x, _ = blobs(k=1, per=8, spread=0.05)
    assert choose_k(x, same_distance=0.6).k == 1


def test_the_same_distance_is_judged_in_its_own_unit():
    """A threshold in normalised units (a release with a cohort) is compared with pairs measured
    the same way, not with Euclidean distances."""
    x, _ = blobs(k=1, per=8, spread=0.05)
    farthest = max(np.linalg.norm(a - b) for a in x for b in x)
    t = farthest * 1.5
    assert choose_k(x, same_distance=t).k == 1
    assert choose_k(x, same_distance=t, measure=lambda a, b: 2 * np.linalg.norm(a - b, axis=1)).k > 1


def test_silhouette_by_hand():
    # 1-D on the unit circle: two tight pairs far apart
    a = np.deg2rad([0, 2, 90, 92])
    x = np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)
    s = silhouette(x, np.array([0, 0, 1, 1]))
    d_in = 2 * np.sin(np.deg2rad(1))
    d_out = np.mean([2 * np.sin(np.deg2rad(g / 2)) for g in (90, 92)])   # from point 0 to 90 and 92
    assert s == pytest.approx((d_out - d_in) / d_out, abs=2e-3)


def test_bad_k_is_refused():
    x, _ = blobs(k=2, per=2)
    with pytest.raises(ValueError, match="k must lie"):
        kmeans(x, 0)
    with pytest.raises(ValueError, match="no photos"):
        choose_k(x[:0])


def test_choose_k_by_distance_cuts_the_tree_at_the_calibrated_distance():
    from index.kmeans import choose_k_by_distance

    x, truth = blobs(k=5, per=4, spread=0.08, seed=7)       # within a person ~0.3 apart, between ~1.41
    for method in ("average", "complete"):
        c = choose_k_by_distance(x, 1.0, method)
        assert c.k == 5 and same_partition(c.labels, truth) and c.labels[0] == 0
        np.testing.assert_allclose(np.linalg.norm(c.centroids, axis=1), 1, atol=1e-5)
    assert choose_k_by_distance(x, 1.9).k == 1               # a cut above every distance: one group
    assert choose_k_by_distance(x, 0.01).k == len(x)         # below every distance: each photo alone
    assert choose_k_by_distance(x[:1], 1.0).k == 1
