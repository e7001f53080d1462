"""The open-set k-NN vote of Identify."""
import pytest

from index.knn_vote import knn_vote


def test_majority_within_threshold_wins():
    v = knn_vote([("ann", 0.3), ("ann", 0.4), ("bob", 0.45), ("ann", 0.5)], 0.6, {"ann": 3, "bob": 1})
    assert (v.subject, v.votes, v.needed, v.outcome) == ("ann", 3, 2, "IDENTIFIED")


def test_neighbours_beyond_the_threshold_do_not_vote():
    v = knn_vote([("ann", 0.3), ("bob", 0.7), ("bob", 0.8)], 0.6, {"ann": 1, "bob": 5})
    assert v.subject == "ann" and v.votes == 1 and v.needed == 1   # ann has one template


def test_too_few_votes_for_a_subject_with_many_templates_is_unknown():
    v = knn_vote([("ann", 0.3), ("cat", 0.9)], 0.6, {"ann": 4}, min_votes=2)
    assert v.subject is None and v.outcome == "TOO_FEW_VOTES" and (v.votes, v.needed) == (1, 2)


def test_nobody_close_is_unknown():
    v = knn_vote([("ann", 0.9), ("bob", 1.1)], 0.6, {"ann": 1, "bob": 1})
    assert v.subject is None and v.outcome == "NONE_WITHIN" and v.votes == 0
    assert knn_vote([], 0.6, {}).subject is None


def test_a_tie_between_two_people_is_no_answer():
    v = knn_vote([("ann", 0.3), ("bob", 0.35)], 0.6, {"ann": 1, "bob": 1})
    assert v.subject is None and v.outcome == "AMBIGUOUS"


def test_min_votes_must_be_positive():
    with pytest.raises(ValueError):
        knn_vote([], 0.6, {}, min_votes=0)
