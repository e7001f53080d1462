"""The k-nearest-neighbour vote of Identify, for an open set (most people at a door are not
enrolled).

Only neighbours within the identify threshold vote. The subject with the most votes wins
(a tie in votes between two subjects is no answer: two
enrolled people both close to one face is a reason to fall back to the card, not to guess).
A subject needs `min_votes` votes, or as many as it has templates if that is fewer: a student
enrolled from one ID photo can only ever get one vote.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Vote:
    subject: str | None      # None = unknown
    votes: int
    needed: int
    outcome: str             # IDENTIFIED, NONE_WITHIN (nobody close), TOO_FEW_VOTES, AMBIGUOUS


def knn_vote(neighbours: list[tuple[str, float]], threshold: float, templates: dict[str, int],
             min_votes: int = 2) -> Vote:
    """`neighbours`: (subject, distance), nearest first; `templates`: subject -> template count."""
    if min_votes < 1:
        raise ValueError(f"min_votes must be >= 1, got {min_votes}")
    within = [(s, d) for s, d in neighbours if d <= threshold]
    if not within:
        return Vote(None, 0, min_votes, "NONE_WITHIN")
    counts = Counter(s for s, _ in within)
    nearest: dict[str, float] = {}
    for s, d in within:
        nearest[s] = min(d, nearest.get(s, d))
    ranked = sorted(counts, key=lambda s: (-counts[s], nearest[s]))
    best = ranked[0]
    needed = max(1, min(min_votes, templates.get(best, 1)))
    if len(ranked) > 1 and counts[ranked[1]] == counts[best]:
        return Vote(None, counts[best], needed, "AMBIGUOUS")
    if counts[best] < needed:
        return Vote(None, counts[best], needed, "TOO_FEW_VOTES")
    return Vote(best, counts[best], needed, "IDENTIFIED")
