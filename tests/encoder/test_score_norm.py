"""Score normalisation (encoder/score_norm.py): the arithmetic, and a release that carries its cohort."""
from __future__ import annotations

import numpy as np
import pytest

from encoder.score_norm import ScoreNorm, claim_distance, cohort_photos, euclidean, photo_part


def unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def crowded_cohort(rng, n=600, dim=16):
    """Half the cohort packed round one direction (a crowded kind of face), half spread out."""
    centre = unit(np.eye(dim)[0])
    tight = unit(centre + 0.15 * rng.standard_normal((n // 2, dim)))
    loose = unit(rng.standard_normal((n // 2, dim)))
    return centre, np.concatenate([tight, loose])


def test_stats_are_the_mean_and_sd_of_the_k_nearest_cohort_distances():
    rng = np.random.default_rng(0)
    cohort = unit(rng.standard_normal((50, 8)))
    norm = ScoreNorm(cohort, 5, 1.0, 0.1)
    v = unit(rng.standard_normal((3, 8)))
    d = np.sort(np.linalg.norm(v[:, None] - cohort[None], axis=2), axis=1)[:, :5]
    np.testing.assert_allclose(norm.stats(v), np.stack([d.mean(1), d.std(1)], 1), atol=1e-5)
    own = norm.stats(cohort[:3], leave_self_out=True)              # a member's zero distance is skipped
    d = np.sort(np.linalg.norm(cohort[:3, None] - cohort[None], axis=2), axis=1)[:, 1:6]
    np.testing.assert_allclose(own, np.stack([d.mean(1), d.std(1)], 1), atol=1e-5)


def test_a_photo_of_typical_neighbourhood_keeps_its_euclidean_distance():
    norm = ScoreNorm(unit(np.random.default_rng(1).standard_normal((20, 4))), 3, 0.9, 0.05)
    typical = np.array([[0.9, 0.05]], np.float32)
    d = np.array([0.2, 0.6, 1.1], np.float32)
    np.testing.assert_allclose(norm.normalise(d, typical, typical), d, atol=1e-6)
    assert norm.normalise(np.array([0.0]), np.array([[1.0, 0.05]]), np.array([[1.0, 0.05]]))[0] == 0.0   # clipped


def test_the_same_distance_counts_for_less_in_a_crowd():
    rng = np.random.default_rng(2)
    centre, cohort = crowded_cohort(rng)
    norm = ScoreNorm.build(cohort, 20, "synthetic")
    crowded = unit(centre + 0.1 * rng.standard_normal((2, 16)))
    lonely = unit(-centre + 0.1 * rng.standard_normal((2, 16)))
    # rescale each pair to the same Euclidean distance, then compare their normalised distances
    assert norm.stats(crowded)[:, 0].max() < norm.stats(lonely)[:, 0].min()
    d = np.array([0.5], np.float32)
    near = norm.normalise(d, norm.stats(crowded[:1]), norm.stats(crowded[1:]))
    far = norm.normalise(d, norm.stats(lonely[:1]), norm.stats(lonely[1:]))
    assert near[0] > far[0]


def test_one_against_many_equals_the_pairs_one_by_one():
    rng = np.random.default_rng(3)
    norm = ScoreNorm.build(unit(rng.standard_normal((300, 16))), 10, "synthetic")
    probe, templates = unit(rng.standard_normal(16)), unit(rng.standard_normal((4, 16)))
    many = norm.distances(probe, templates)
    pairs = norm.pair_distances(np.repeat(probe[None], 4, 0), templates)
    np.testing.assert_allclose(many, pairs, rtol=1e-5)
    assert np.allclose(euclidean(templates, probe[None]), np.linalg.norm(templates - probe, axis=1))


def test_a_cohort_must_outnumber_k_and_the_unit_must_be_positive():
    c = unit(np.random.default_rng(4).standard_normal((10, 4)))
    with pytest.raises(ValueError, match="more than k"):
        ScoreNorm(c, 10, 1.0, 0.1)
    with pytest.raises(ValueError, match="ref_sd"):
        ScoreNorm(c, 3, 1.0, 0.0)


def test_the_halves_of_a_cohort_folder_are_fixed_by_name_and_disjoint(tmp_path):
    for i in range(40):
        (tmp_path / f"{i}_0_0_x.jpg").write_bytes(b"")
    a, b = cohort_photos(tmp_path, "a"), cohort_photos(tmp_path, "b")
    assert a and b and not set(a) & set(b) and len(a) + len(b) == 40
    assert all(photo_part(f.name) == "a" for f in a)
    assert photo_part("1_0_0_x.jpg") == photo_part("1_0_0_x.jpg")


def test_a_release_carries_its_cohort_and_its_own_version(tmp_path):
    """Recording a cohort changes the version and drops the thresholds (they were calibrated on other
    distances); the cohort comes back bit for bit; removing it gives the version without one."""
    from encoder.checkpoint import DEFAULT_CHECKPOINT, read_meta, record_in_checkpoint, release_copy

    rel = release_copy(DEFAULT_CHECKPOINT, tmp_path / "rel.pt")
    if ScoreNorm.from_meta(read_meta(rel)) is not None:
        record_in_checkpoint(rel, score_norm=False)
    plain = read_meta(rel)
    assert plain.get("score_norm_cohort") is None and "score_norm" not in plain["preprocessing"]
    record_in_checkpoint(rel, threshold=0.5, threshold_info={"target_far": 1e-3})
    norm = ScoreNorm.build(unit(np.random.default_rng(5).standard_normal((100, 128))), 10, "synthetic:a")
    version = record_in_checkpoint(rel, score_norm=norm)
    meta = read_meta(rel)
    assert version == meta["version"] != plain["version"]
    assert meta["threshold"] is None and meta["preprocessing"]["score_norm"]["cohort_sha256"] == norm.digest
    back = ScoreNorm.from_meta(meta)
    assert np.array_equal(back.cohort, norm.cohort) and (back.k, back.ref_mean) == (10, pytest.approx(norm.ref_mean))
    meta["preprocessing"]["score_norm"]["cohort_sha256"] = "0" * 12
    with pytest.raises(ValueError, match="digest"):
        ScoreNorm.from_meta(meta)
    assert record_in_checkpoint(rel, score_norm=False) == plain["version"]


def test_a_claim_against_several_templates_is_their_mean_distance():
    """One try per claim, not one per template (bench/claim_rule.py measures the FAR it keeps)."""
    assert claim_distance(np.array([0.3])) == pytest.approx(0.3)
    assert claim_distance(np.array([0.1, 0.5, 0.6])) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="at least one template"):
        claim_distance(np.array([]))
