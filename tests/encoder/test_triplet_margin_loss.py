"""TripletMarginLoss on 2-D unit embeddings at known angles, with the distances worked out by hand.

Unit vectors at angles 0, 30, 90 and 180 degrees:
    e0 = [1, 0], e1 = [cos30, sin30], e2 = [0, 1], e3 = [-1, 0]
The chord between two unit vectors an angle t apart is 2 sin(t / 2), so
    d(e0, e1) = 2 sin 15 deg = 0.5176380902
    d(e0, e2) = sqrt(2)      = 1.4142135624
    d(e1, e2) = 2 sin 30 deg = 1.0
    d(e0, e3) = 2.0
"""
import math

import pytest
import torch

from encoder.triplet_margin_loss import TripletMarginLoss

C30, S30 = math.cos(math.radians(30)), math.sin(math.radians(30))
D01 = 2 * math.sin(math.radians(15))  # 0.5176380902...
D02 = math.sqrt(2.0)                  # 1.4142135623...
D12 = 1.0


def _emb(requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0], [C30, S30], [0.0, 1.0], [-1.0, 0.0]],
                        dtype=torch.float64, requires_grad=requires_grad)


def _idx(*triplets):
    a, p, n = zip(*triplets)
    return torch.tensor(a), torch.tensor(p), torch.tensor(n)


LABELS = torch.tensor([0, 0, 1, 2])


def test_hand_computed_distances_match_the_embeddings():
    e = _emb()
    assert (e[0] - e[1]).norm().item() == pytest.approx(0.5176380902, abs=1e-9)
    assert (e[0] - e[2]).norm().item() == pytest.approx(1.4142135624, abs=1e-9)
    assert (e[1] - e[2]).norm().item() == pytest.approx(1.0, abs=1e-12)


def test_single_triplet_with_positive_loss():
    # anchor e0, positive e2 (90 deg away), negative e1 (30 deg away): a violated triplet
    # loss = sqrt2 - 2 sin15 + 0.2 = 1.0965754721
    loss = TripletMarginLoss(margin=0.2)(_emb(), LABELS, _idx((0, 2, 1)))
    assert loss.item() == pytest.approx(1.0965754721, abs=1e-9)
    assert loss.item() == pytest.approx(D02 - D01 + 0.2, abs=1e-12)


def test_easy_triplet_has_zero_loss():
    # anchor e0, positive e1 (0.5176), negative e2 (1.4142): 0.5176 - 1.4142 + 0.2 < 0 -> 0
    loss = TripletMarginLoss(margin=0.2)(_emb(), LABELS, _idx((0, 1, 2)))
    assert loss.item() == 0.0


def test_margin_decides_whether_a_triplet_counts():
    # d_ap - d_an = 2 sin15 - sqrt2 = -0.8966: zero loss for margin 0.5, 0.1034 for margin 1.0
    e = _emb()
    assert TripletMarginLoss(margin=0.5)(e, LABELS, _idx((0, 1, 2))).item() == 0.0
    assert TripletMarginLoss(margin=1.0)(e, LABELS, _idx((0, 1, 2))).item() == pytest.approx(
        D01 - D02 + 1.0, abs=1e-12)
    assert D01 - D02 + 1.0 == pytest.approx(0.1034245279, abs=1e-9)


def test_loss_is_averaged_over_all_triplets_including_the_zero_ones():
    # (0,1,2): max(0, 0.5176 - 1.4142 + 0.2)  = 0
    # (0,2,1): max(0, 1.4142 - 0.5176 + 0.2)  = 1.0965754721
    # (1,2,0): max(0, 1.0    - 0.5176 + 0.2)  = 0.6823619098
    # (0,1,3): max(0, 0.5176 - 2.0    + 0.2)  = 0
    # mean over 4 = 1.7789373819 / 4 = 0.4447343455
    loss = TripletMarginLoss(margin=0.2)(_emb(), LABELS, _idx((0, 1, 2), (0, 2, 1), (1, 2, 0), (0, 1, 3)))
    expected = (0.0 + (D02 - D01 + 0.2) + (D12 - D01 + 0.2) + 0.0) / 4
    assert expected == pytest.approx(0.4447343455, abs=1e-9)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_float32_embeddings_give_the_same_value():
    loss = TripletMarginLoss(margin=0.2)(_emb().float(), LABELS, _idx((0, 2, 1), (1, 2, 0)))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(((D02 - D01 + 0.2) + (D12 - D01 + 0.2)) / 2, abs=1e-6)


def test_empty_indices_give_a_zero_loss_that_backpropagates():
    e = _emb(requires_grad=True)
    empty = (torch.zeros(0, dtype=torch.long),) * 3
    loss = TripletMarginLoss(margin=0.2)(e, LABELS, empty)
    assert loss.ndim == 0
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert e.grad is not None
    assert torch.equal(e.grad, torch.zeros_like(e))


def test_backward_gives_the_hand_computed_gradient():
    # For one violated triplet L = |a - p| - |a - n| + m:
    #   dL/da = (a - p)/|a - p| - (a - n)/|a - n|,  dL/dp = -(a - p)/|a - p|,  dL/dn = (a - n)/|a - n|
    # anchor e0, positive e2, negative e1:
    #   (e0 - e2)/sqrt2 = [ 0.70711, -0.70711]
    #   (e0 - e1)/D01   = [(1 - cos30)/D01, -sin30/D01] = [0.25882, -0.96593] (= [sin15, -cos15])
    e = _emb(requires_grad=True)
    loss = TripletMarginLoss(margin=0.2)(e, LABELS, _idx((0, 2, 1)))
    loss.backward()
    s15, c15 = math.sin(math.radians(15)), math.cos(math.radians(15))
    r2 = 1 / math.sqrt(2)
    expected = torch.tensor([
        [r2 - s15, -r2 + c15],   # anchor
        [s15, -c15],             # negative
        [-r2, r2],               # positive
        [0.0, 0.0],              # not in the triplet
    ], dtype=torch.float64)
    assert torch.isfinite(e.grad).all()
    assert e.grad[:3].abs().sum() > 0
    torch.testing.assert_close(e.grad, expected, atol=1e-9, rtol=0)


def test_zero_loss_triplet_gives_zero_gradient():
    e = _emb(requires_grad=True)
    TripletMarginLoss(margin=0.2)(e, LABELS, _idx((0, 1, 2))).backward()
    assert torch.equal(e.grad, torch.zeros_like(e))


def test_gradient_is_divided_by_the_number_of_triplets():
    # The same violated triplet listed twice next to a zero-loss one: mean over 3 -> 2/3 of
    # the single-triplet gradient.
    e1 = _emb(requires_grad=True)
    TripletMarginLoss(margin=0.2)(e1, LABELS, _idx((0, 2, 1))).backward()
    e3 = _emb(requires_grad=True)
    TripletMarginLoss(margin=0.2)(e3, LABELS, _idx((0, 2, 1), (0, 2, 1), (0, 1, 2))).backward()
    torch.testing.assert_close(e3.grad, e1.grad * 2 / 3, atol=1e-12, rtol=0)


@pytest.mark.parametrize("margin", [0.0, -0.2])
def test_non_positive_margin_is_refused(margin):
    with pytest.raises(ValueError, match="margin"):
        TripletMarginLoss(margin=margin)


def test_default_margin_is_facenets_0_2():
    assert TripletMarginLoss().margin == 0.2
