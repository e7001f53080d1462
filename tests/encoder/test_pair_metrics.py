"""Pair verification metrics on hand-made distances; every expected number is worked out below."""
import numpy as np
import pytest

from encoder.pair_metrics import (accuracy, auc, best_accuracy_threshold, eer, kfold_accuracy, kfold_correct,
                                  mcnemar, pair_report, roc, tar_at_far, threshold_at_far)

# Eight pairs, four genuine (T) and four impostors (F):
#   dist  .1 .2 .3 .4 .5 .6 .7 .8
#   same   T  T  T  F  T  F  F  F
# cumulative tp 1 2 3 3 4 4 4 4, fp 0 0 0 1 1 2 3 4 (n_pos = n_neg = 4)
#   thr  -inf .1   .2  .3   .4   .5  .6  .7   .8
#   far    0   0    0   0  .25  .25  .5 .75    1
#   tar    0  .25  .5 .75  .75   1    1   1    1
D8 = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
S8 = np.array([1, 1, 1, 0, 1, 0, 0, 0], bool)
THR8 = [-np.inf, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
FAR8 = [0, 0, 0, 0, 0.25, 0.25, 0.5, 0.75, 1]
TAR8 = [0, 0.25, 0.5, 0.75, 0.75, 1, 1, 1, 1]


def test_roc_eight_pairs():
    thr, far, tar = roc(D8, S8)
    np.testing.assert_array_equal(thr, THR8)
    np.testing.assert_allclose(far, FAR8)
    np.testing.assert_allclose(tar, TAR8)


def test_roc_does_not_depend_on_input_order():
    perm = np.array([5, 2, 7, 0, 3, 6, 1, 4])
    thr, far, tar = roc(D8[perm], S8[perm])
    np.testing.assert_array_equal(thr, THR8)
    np.testing.assert_allclose(far, FAR8)
    np.testing.assert_allclose(tar, TAR8)


def test_roc_ties_are_one_point():
    # dist .1 T, .2 T, .2 F, .5 F: the two .2's are one threshold, admitting both at once
    thr, far, tar = roc([0.1, 0.2, 0.2, 0.5], [True, True, False, False])
    np.testing.assert_array_equal(thr, [-np.inf, 0.1, 0.2, 0.5])
    np.testing.assert_allclose(far, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tar, [0, 0.5, 1, 1])


def test_auc_perfect_separation_is_one():
    _, far, tar = roc([0.1, 0.2, 0.3, 0.4], [True, True, False, False])
    # far 0 0 0 .5 1, tar 0 .5 1 1 1
    assert auc(far, tar) == 1.0


def test_auc_reversed_is_zero():
    _, far, tar = roc([0.1, 0.2, 0.3, 0.4], [False, False, True, True])
    assert auc(far, tar) == 0.0


def test_auc_eight_pairs():
    # Mann-Whitney: genuine .1 .2 .3 beat all 4 impostors (12); .5 beats .6 .7 .8 (3): 15/16
    _, far, tar = roc(D8, S8)
    assert auc(far, tar) == pytest.approx(0.9375, abs=1e-12)


def test_auc_interleaved():
    # .1 T, .2 F, .3 T, .4 F: genuine .1 beats both impostors, .3 beats one: 3/4
    _, far, tar = roc([0.1, 0.2, 0.3, 0.4], [True, False, True, False])
    assert auc(far, tar) == pytest.approx(0.75, abs=1e-12)


def test_eer_eight_pairs():
    # frr = 1 - tar = 1 .75 .5 .25 .25 0 0 0 0; |far - frr| smallest (0) at the point far = frr = .25
    _, far, tar = roc(D8, S8)
    assert eer(far, tar) == pytest.approx(0.25, abs=1e-12)


def test_eer_perfect_separation_is_zero():
    _, far, tar = roc([0.1, 0.2, 0.3, 0.4], [True, True, False, False])
    assert eer(far, tar) == 0.0


def test_tar_at_far():
    _, far, tar = roc(D8, S8)
    assert tar_at_far(far, tar, 0.0) == 0.75
    assert tar_at_far(far, tar, 0.2) == 0.75     # far .25 not admitted
    assert tar_at_far(far, tar, 0.25) == 1.0
    assert tar_at_far(far, tar, 1.0) == 1.0
    assert tar_at_far(far, tar, -1.0) == 0.0      # nothing admitted


def test_best_accuracy_threshold_eight_pairs():
    # accuracy per ROC point, (4 tar + 4 (1 - far)) / 8:
    #   .5 .625 .75 .875 .75 .875 .75 .625 .5  -> first best at thr .3; midway to .4 -> .35
    t, acc = best_accuracy_threshold(D8, S8)
    assert t == pytest.approx(0.35, abs=1e-12)
    assert acc == 0.875
    assert accuracy(D8, S8, t) == 0.875


def test_best_accuracy_threshold_perfect_separation():
    t, acc = best_accuracy_threshold([0.1, 0.2, 0.3, 0.4], [True, True, False, False])
    assert t == pytest.approx(0.25, abs=1e-12)
    assert acc == 1.0


def test_best_accuracy_threshold_all_impostors_sits_below_the_smallest():
    t, acc = best_accuracy_threshold([0.1, 0.2], [False, False])
    assert t == pytest.approx(0.1 - 1e-6, abs=1e-12)
    assert acc == 1.0


def test_best_accuracy_threshold_all_genuine_sits_above_the_largest():
    t, acc = best_accuracy_threshold([0.1, 0.2], [True, True])
    assert t == pytest.approx(0.2 + 1e-6, abs=1e-12)
    assert acc == 1.0


def test_accuracy_counts_equal_distance_as_same():
    assert accuracy([0.5, 0.5], [True, False], 0.5) == 0.5
    assert accuracy([0.5, 0.7], [True, False], 0.5) == 1.0


def test_kfold_accuracy_uses_the_other_folds_threshold():
    # fold A: .1 T, .2 T, .25 F, .6 F -> its own best threshold (.2 + .25)/2 = .225
    # fold B: .3 T, .4 F, .7 T, .8 F  -> accuracies .5 .75 .5 .75 .5: first best at .3 -> (.3 + .4)/2 = .35
    # A judged with B's .35: .1 ok, .2 ok, .25 F accepted (wrong), .6 ok          -> .75
    # B judged with A's .225: .3 T refused (wrong), .4 ok, .7 T refused (wrong), .8 ok -> .5
    # mean .625, std .125   (with each fold's own threshold it would be 1.0 and .75)
    dist = np.array([0.3, 0.1, 0.4, 0.2, 0.7, 0.25, 0.8, 0.6])
    same = np.array([1, 1, 0, 1, 1, 0, 0, 0], bool)
    folds = np.array([7, 3, 7, 3, 7, 3, 7, 3])
    mean, std = kfold_accuracy(dist, same, folds)
    assert mean == pytest.approx(0.625, abs=1e-12)
    assert std == pytest.approx(0.125, abs=1e-12)


def test_threshold_at_far_eight_pairs():
    # target .25 of 4 impostors: one impostor (.4) may pass. Last point with far <= .25 is thr .5;
    # midway to the next distance .6 -> .55, far .25, tar 1
    t, far, tar = threshold_at_far(D8, S8, 0.25)
    assert t == pytest.approx(0.55, abs=1e-12)
    assert (far, tar) == (0.25, 1.0)
    # target .1: no impostor may pass -> last point thr .3, midway to .4 -> .35, far 0, tar .75
    t, far, tar = threshold_at_far(D8, S8, 0.1)
    assert t == pytest.approx(0.35, abs=1e-12)
    assert (far, tar) == (0.0, 0.75)


def test_threshold_at_far_everything_admitted_is_the_largest_distance():
    t, far, tar = threshold_at_far(D8, S8, 1.0)
    assert (t, far, tar) == (0.8, 1.0, 1.0)


def test_threshold_at_far_impostor_first_sits_below_it():
    # the closest pair is an impostor: with target 0 nothing may be admitted
    t, far, tar = threshold_at_far([0.1, 0.2, 0.3], [False, True, True], 0.0)
    assert t == pytest.approx(0.1 - 1e-6, abs=1e-12)
    assert (far, tar) == (0.0, 0.0)


def test_threshold_at_far_admits_no_more_impostors_than_target_times_n():
    # 1000 impostors at .500, .501, ..., 1.499 and five genuine pairs. Target 1e-2 -> at most
    # 10 impostors (.500 ... .509). The largest such ROC point is .509, the next distance .510:
    # threshold .5095. Genuine .2, .3, .5055 pass; .6 and .9 do not: tar 3/5.
    impostors = 0.5 + np.arange(1000) / 1000
    genuine = np.array([0.2, 0.3, 0.5055, 0.6, 0.9])
    dist = np.r_[impostors, genuine]
    same = np.r_[np.zeros(1000, bool), np.ones(5, bool)]
    t, far, tar = threshold_at_far(dist, same, 1e-2)
    assert t == pytest.approx(0.5095, abs=1e-9)
    assert far == pytest.approx(0.01, abs=1e-12)
    assert tar == pytest.approx(0.6, abs=1e-12)
    admitted = int((impostors <= t).sum())
    assert admitted == 10 <= 1e-2 * len(impostors)
    assert int((genuine <= t).sum()) == 3


def test_pair_report():
    # folds: {.1 T, .2 T, .5 T, .6 F} and {.3 T, .4 F, .7 F, .8 F}
    #   fold 0 with fold 1's threshold (.3 + .4)/2 = .35: .5 T refused -> .75
    #   fold 1 with fold 0's threshold (.5 + .6)/2 = .55: .4 F accepted -> .75
    folds = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    r = pair_report(D8, S8, folds)
    assert set(r) == {"pairs", "acc", "acc_std", "auc", "eer", "tar@far=1e-2", "tar@far=1e-3", "threshold"}
    assert r == {
        "pairs": 8, "acc": 0.75, "acc_std": 0.0, "auc": 0.9375, "eer": 0.25,
        "tar@far=1e-2": 0.75, "tar@far=1e-3": 0.75, "threshold": 0.35,
    }
    assert isinstance(r["pairs"], int)


def test_kfold_correct_is_kfold_accuracy_pair_by_pair():
    rng = np.random.default_rng(0)
    same = np.repeat([True, False], 100)
    dist = np.where(same, rng.normal(0.8, 0.2, 200), rng.normal(1.2, 0.2, 200))
    folds = np.tile(np.arange(10), 20)                   # 20 pairs per fold, as LFW's equal folds
    right = kfold_correct(dist, same, folds)
    assert right.mean() == pytest.approx(kfold_accuracy(dist, same, folds)[0])
    assert 0 < (~right).sum() < 200                      # the overlap costs some pairs, not all


def test_mcnemar_counts_and_exact_p():
    a = np.array([1, 1, 1, 1, 1, 0, 1, 0], bool)
    b = np.array([1, 0, 0, 0, 0, 0, 1, 0], bool)
    m = mcnemar(a, b)
    assert (m["only_a_right"], m["only_b_right"], m["both_wrong"]) == (4, 0, 2)
    assert m["mcnemar_p"] == pytest.approx(2 / 16)       # 4 of 4 discordant pairs one way: 2 * 0.5**4
    assert mcnemar(a, a)["mcnemar_p"] == 1.0             # no discordant pair: no evidence either way
    # 7 against 5 discordant pairs: 2 * P(X <= 5), X ~ Bin(12, 0.5) = 2 * 1586 / 4096
    x = np.array([1] * 7 + [0] * 5, bool)
    assert mcnemar(x, ~x)["mcnemar_p"] == pytest.approx(2 * 1586 / 4096, abs=1e-4)
