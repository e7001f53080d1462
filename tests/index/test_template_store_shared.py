"""Two TemplateStores on one data folder (as two `serve` processes): each follows the other's
writes at its next search, and a template the other deleted is never a KeyError."""
from __future__ import annotations

import numpy as np

from index.template_store import TemplateStore


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


def test_a_second_store_on_the_folder_sees_enrollments_and_deletions(tmp_path):
    a, b = TemplateStore(tmp_path), TemplateStore(tmp_path)
    try:
        v, w = unit(1), unit(2)
        a.add("alice", v, "sha-a", "enc")
        assert [n.subject for n in b.search(v, 3, "enc")] == ["alice"]      # b never saw the add itself
        b.add("bob", w, "sha-b", "enc")
        assert {n.subject for n in a.search(w, 3, "enc")} == {"alice", "bob"}
        a.remove_subject("alice")
        assert [n.subject for n in b.search(v, 3, "enc")] == ["bob"]
        a.check()
        b.check()
    finally:
        a.close()
        b.close()


def test_a_hit_whose_row_vanished_is_skipped(tmp_path):
    a = TemplateStore(tmp_path)
    v = unit(3)
    a.add("alice", v, "sha-a", "enc")
    b = TemplateStore(tmp_path)                         # b's index holds alice
    try:
        b.follow = lambda: None                         # b has not caught up yet: its index is stale...
        a.remove_subject("alice")
        assert b.search(v, 3, "enc") == []              # ...and the vanished row is skipped
    finally:
        a.close()
        b.close()
