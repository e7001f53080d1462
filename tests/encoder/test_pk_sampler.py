"""PKSampler: P distinct identities x K photos, seeded per epoch."""
from collections import Counter

import numpy as np
import pytest

from encoder.pk_sampler import PKSampler

#          idx: 0  1  2  3   4  5  6   7  8   9   10  11  12   13 14 15 16 17
LABELS = [0, 0, 0, 0, 1, 1, 1, 2, 2, 3, -1, -1, -1, 4, 4, 4, 4, 4]
# identity 3 has one photo, -1 is unlabelled (three photos: it would qualify if counted).
ELIGIBLE = {0: {0, 1, 2, 3}, 1: {4, 5, 6}, 2: {7, 8}, 4: {13, 14, 15, 16, 17}}
NEVER = {9, 10, 11, 12}


def _chunks(batch, k):
    return [batch[i:i + k] for i in range(0, len(batch), k)]


def _label_of(chunk):
    labels = {LABELS[i] for i in chunk}
    assert len(labels) == 1, f"a K-chunk mixes identities: {chunk}"
    return labels.pop()


def test_groups_are_the_identities_with_two_or_more_photos():
    s = PKSampler(LABELS, p=2, k=2, batches=1)
    assert [set(g.tolist()) for g in s.groups] == [ELIGIBLE[y] for y in sorted(ELIGIBLE)]


def test_each_batch_is_p_distinct_identities_times_k():
    p, k = 3, 3
    s = PKSampler(LABELS, p=p, k=k, batches=40, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 40
    seen = Counter()
    for batch in batches:
        assert len(batch) == p * k
        ids = [_label_of(c) for c in _chunks(batch, k)]
        assert len(ids) == p and len(set(ids)) == p
        seen.update(ids)
        for c in _chunks(batch, k):
            assert set(c) <= ELIGIBLE[_label_of(c)]
    # all four eligible identities are drawn over 40 batches, and nothing else
    assert set(seen) == set(ELIGIBLE)


def test_single_photo_identities_and_unlabelled_are_never_drawn():
    s = PKSampler(LABELS, p=4, k=2, batches=30, seed=3)
    drawn = {i for batch in s for i in batch}
    assert drawn.isdisjoint(NEVER)
    assert drawn <= set().union(*ELIGIBLE.values())


def test_p_equal_to_available_identities_uses_each_once_per_batch():
    s = PKSampler(LABELS, p=4, k=2, batches=5, seed=0)
    for batch in s:
        assert sorted(_label_of(c) for c in _chunks(batch, 2)) == [0, 1, 2, 4]


def test_with_replacement_only_when_identity_has_fewer_than_k_photos():
    k = 3
    s = PKSampler(LABELS, p=4, k=k, batches=20, seed=5)   # every identity in every batch
    for batch in s:
        for c in _chunks(batch, k):
            y = _label_of(c)
            if y == 2:   # 2 photos < K=3: drawn with replacement, so a photo repeats
                assert len(c) == k and len(set(c)) < k
                assert set(c) <= {7, 8}
            else:        # >= K photos: no repeats
                assert len(set(c)) == k, f"identity {y} repeated a photo: {c}"


def test_identity_with_exactly_k_photos_gives_all_of_them():
    # identity 1 has exactly 3 photos: without replacement, K=3 draws all of them
    s = PKSampler(LABELS, p=4, k=3, batches=5, seed=2)
    for batch in s:
        for c in _chunks(batch, 3):
            if _label_of(c) == 1:
                assert sorted(c) == [4, 5, 6]


def test_same_seed_and_epoch_give_the_same_batches():
    a = PKSampler(LABELS, p=3, k=2, batches=10, seed=7)
    b = PKSampler(LABELS, p=3, k=2, batches=10, seed=7)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    assert list(a) == list(a)   # iterating again replays the epoch


def test_different_epoch_gives_different_batches():
    s = PKSampler(LABELS, p=3, k=2, batches=10, seed=7)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1
    s.set_epoch(0)
    assert list(s) == e0


def test_different_seed_gives_different_batches():
    assert list(PKSampler(LABELS, p=3, k=2, batches=10, seed=0)) != \
        list(PKSampler(LABELS, p=3, k=2, batches=10, seed=1))


def test_accepts_numpy_labels():
    s = PKSampler(np.array(LABELS), p=2, k=2, batches=3)
    assert all(len(b) == 4 for b in s)


def test_p_larger_than_available_identities_raises():
    with pytest.raises(ValueError, match="only 4"):
        PKSampler(LABELS, p=5, k=2, batches=1)


def test_unlabelled_and_singletons_do_not_count_towards_p():
    # 3 unlabelled photos and 3 singletons: no identity qualifies
    with pytest.raises(ValueError, match="only 0"):
        PKSampler([-1, -1, -1, 5, 6, 7], p=1, k=2, batches=1)


@pytest.mark.parametrize("k", [1, 0])
def test_k_below_two_raises(k):
    with pytest.raises(ValueError, match="K must be >= 2"):
        PKSampler(LABELS, p=2, k=k, batches=1)
