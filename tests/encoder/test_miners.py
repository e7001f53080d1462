"""SemiHardMiner and BatchHardMiner on points placed on the x axis, so every distance is a
difference of x coordinates and every expected triplet can be checked by hand."""
import pytest
import torch

from encoder.miners import BatchHardMiner, SemiHardMiner, create_miner, pairwise_distances


def _points(xs):
    return torch.tensor([[x, 0.0] for x in xs], dtype=torch.float32)


def _triplets(result):
    a, p, n = result
    assert len(a) == len(p) == len(n)
    for t in (a, p, n):
        assert t.dtype == torch.long
    return set(zip(a.tolist(), p.tolist(), n.tolist()))


# Semi-hard batch:          idx:  0     1     2     3     4      5
SEMI_X = [0.0, 0.1, 0.25, 0.6, 0.2, 0.22]
SEMI_Y = torch.tensor([0, 0, 1, 1, -1, -1])
# distances:  d01 .10  d02 .25  d03 .60  d04 .20  d05 .22
#             d12 .15  d13 .50  d14 .10  d15 .12
#             d23 .35  d24 .05  d25 .03
#             d34 .40  d35 .38
# ordered positive pairs: (0,1) (1,0) (2,3) (3,2); negatives must have a known, other label.
# margin 0.2, keep 0 < d(a,n) - d(a,p) < 0.2:
#   (0,1) d_ap .10: n=2 gap .15 yes; n=3 gap .50 no              -> (0,1,2)
#   (1,0) d_ap .10: n=2 gap .05 yes; n=3 gap .40 no              -> (1,0,2)
#   (2,3) d_ap .35: n=0 gap -.10; n=1 gap -.20                   -> none
#   (3,2) d_ap .35: n=0 gap .25 no;  n=1 gap .15 yes             -> (3,2,1)
# The unlabelled 4 and 5 would be semi-hard for (0,1) (gaps .10, .12) and (3,2) (.05, .03),
# and 4, 5 share the label -1: none of that may show up.
SEMI_EXPECTED = {(0, 1, 2), (1, 0, 2), (3, 2, 1)}


def test_pairwise_distances_are_euclidean():
    d = pairwise_distances(_points([0.0, 0.3, 1.0]))
    expected = torch.tensor([[0.0, 0.3, 1.0], [0.3, 0.0, 0.7], [1.0, 0.7, 0.0]])
    torch.testing.assert_close(d, expected, atol=1e-6, rtol=0)


def test_semihard_exact_triplets():
    got = _triplets(SemiHardMiner(margin=0.2)(_points(SEMI_X), SEMI_Y))
    assert got == SEMI_EXPECTED


def test_semihard_larger_margin_admits_more():
    # margin 0.3: (3,2) now also keeps n=0 (gap .25)
    got = _triplets(SemiHardMiner(margin=0.3)(_points(SEMI_X), SEMI_Y))
    assert got == SEMI_EXPECTED | {(3, 2, 0)}


def test_semihard_smaller_margin_admits_fewer():
    # margin 0.1: (0,1,2) gap .15 and (3,2,1) gap .15 drop out; (1,0,2) gap .05 stays
    got = _triplets(SemiHardMiner(margin=0.1)(_points(SEMI_X), SEMI_Y))
    assert got == {(1, 0, 2)}


def test_semihard_excludes_negatives_closer_than_the_positive():
    # anchor 0, positive 2 (d .5), negative 1 (d .1): a hard negative, not semi-hard
    got = _triplets(SemiHardMiner(margin=0.2)(_points([0.0, 0.1, 0.5]), torch.tensor([0, 1, 0])))
    # (0,2): n=1 gap -.4 no.  (2,0): d_ap .5, n=1 d .4 gap -.1 no.
    assert got == set()


def test_semihard_unlabelled_never_appear():
    a, p, n = SemiHardMiner(margin=0.2)(_points(SEMI_X), SEMI_Y)
    used = set(a.tolist()) | set(p.tolist()) | set(n.tolist())
    assert used.isdisjoint({4, 5})


# Batch-hard batch:   idx:  0    1    2    3    4    5     6
HARD_X = [0.0, 0.1, 0.4, 0.5, 0.9, 0.45, 0.05]
HARD_Y = torch.tensor([0, 0, 0, 1, 1, -1, 2])
# label 2 (idx 6) has no positive: never an anchor, but a valid negative; idx 5 is unlabelled.
#   anchor 0: positives 1 (.10) 2 (.40) -> 2;  negatives 3 (.50) 4 (.90) 6 (.05) -> 6
#   anchor 1: positives 0 (.10) 2 (.30) -> 2;  negatives 3 (.40) 4 (.80) 6 (.05) -> 6
#   anchor 2: positives 0 (.40) 1 (.30) -> 0;  negatives 3 (.10) 4 (.50) 6 (.35) -> 3  (5 at .05)
#   anchor 3: positive  4 (.40)         -> 4;  negatives 0 .50 1 .40 2 .10 6 .45   -> 2  (5 at .05)
#   anchor 4: positive  3 (.40)         -> 3;  negatives 0 .90 1 .80 2 .50 6 .85   -> 2  (5 at .45)
HARD_EXPECTED = {(0, 2, 6), (1, 2, 6), (2, 0, 3), (3, 4, 2), (4, 3, 2)}


def test_batchhard_exact_triplets():
    got = _triplets(BatchHardMiner()(_points(HARD_X), HARD_Y))
    assert got == HARD_EXPECTED


def test_batchhard_one_triplet_per_anchor():
    a, _, _ = BatchHardMiner()(_points(HARD_X), HARD_Y)
    assert sorted(a.tolist()) == [0, 1, 2, 3, 4]


def test_batchhard_unlabelled_never_appear():
    a, p, n = BatchHardMiner()(_points(HARD_X), HARD_Y)
    used = set(a.tolist()) | set(p.tolist()) | set(n.tolist())
    assert 5 not in used


def test_batchhard_two_unlabelled_are_not_a_positive_pair():
    # 2 and 3 share the label -1: they must not become a positive pair (nor anchors).
    got = _triplets(BatchHardMiner()(_points([0.0, 0.2, 5.0, 5.1, 0.3]), torch.tensor([0, 0, -1, -1, 1])))
    # anchor 0: positive 1, negative 4 (.3);  anchor 1: positive 0, negative 4 (.1)
    assert got == {(0, 1, 4), (1, 0, 4)}


@pytest.mark.parametrize("miner", [SemiHardMiner(0.2), BatchHardMiner()], ids=["semihard", "batchhard"])
@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [-1, -1, -1, -1], [0, 1, -1, -1]],
                         ids=["distinct", "unlabelled", "mixed"])
def test_no_positive_pair_gives_empty_tensors(miner, labels):
    result = miner(_points([0.0, 0.1, 0.2, 0.3]), torch.tensor(labels))
    assert len(result) == 3
    for t in result:
        assert isinstance(t, torch.Tensor)
        assert t.numel() == 0


def test_batchhard_without_negatives_gives_empty_tensors():
    a, p, n = BatchHardMiner()(_points([0.0, 0.1, 0.2]), torch.tensor([7, 7, 7]))
    assert a.numel() == p.numel() == n.numel() == 0


def test_miners_do_not_track_gradients():
    e = _points(SEMI_X).requires_grad_(True)
    for t in SemiHardMiner(0.2)(e, SEMI_Y) + BatchHardMiner()(e, SEMI_Y):
        assert not t.requires_grad


def test_create_miner():
    m = create_miner("semihard", margin=0.35)
    assert isinstance(m, SemiHardMiner) and m.margin == 0.35
    assert isinstance(create_miner("batchhard"), BatchHardMiner)


def test_create_miner_unknown_name():
    with pytest.raises(ValueError, match="unknown miner 'hardest'") as e:
        create_miner("hardest")
    assert "batchhard" in str(e.value) and "semihard" in str(e.value)
