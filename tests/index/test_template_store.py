"""TemplateStore: durable templates, idempotent re-sends, index and rows in agreement,
and an acknowledged template surviving SIGKILL."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from index.template_store import StoreError, TemplateStore

ROOT = Path(__file__).resolve().parents[2]


def vec(seed, dim=128):
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_add_search_and_resend(tmp_path):
    s = TemplateStore(tmp_path)
    a = s.add("ann", vec(1), "h1", "enc-1")
    s.add("bob", vec(2), "h2", "enc-1")
    again = s.add("ann", vec(1), "h1", "enc-1")
    assert not a.already_enrolled and again.already_enrolled and again.template_id == a.template_id
    n = s.search(vec(1), k=2, encoder_version="enc-1")
    assert [x.subject for x in n] == ["ann", "bob"] and n[0].distance == pytest.approx(0, abs=1e-3)
    assert s.status()["templates"] == 2 and s.status()["subjects"] == 2 and s.status()["generation"] == 2
    assert s.template_counts() == {"ann": 1, "bob": 1}
    s.add("ann", vec(3), "h3", "enc-1")
    assert s.template_counts(["ann", "ann", "carl"]) == {"ann": 2}      # only those asked for, once each
    assert s.template_counts([]) == {}
    s.remove_subject("ann")
    s.add("ann", vec(1), "h1", "enc-1")
    np.testing.assert_allclose(np.linalg.norm(s.subject_vectors("ann", "enc-1") - vec(1), axis=1), [0], atol=1e-3)
    s.check()


def test_templates_of_another_encoder_are_not_searched(tmp_path):
    s = TemplateStore(tmp_path)
    s.add("ann", vec(1), "h1", "enc-old")
    assert s.search(vec(1), k=3, encoder_version="enc-new") == []
    assert s.subject_vectors("ann", "enc-new").size == 0


def test_reopen_restores_everything_and_delete_is_durable(tmp_path):
    s = TemplateStore(tmp_path)
    for i in range(5):
        s.add(f"p{i % 2}", vec(i), f"h{i}", "enc-1")
    assert s.remove_subject("p0") == 3 and s.remove_subject("nobody") == 0
    version = s.status()["index_version"]
    s.close()
    r = TemplateStore(tmp_path)
    assert r.status()["templates"] == 2 and r.status()["index_version"] == version
    assert not r.has_subject("p0") and r.has_subject("p1")
    r.check()


def test_a_corrupt_database_names_the_file(tmp_path):
    (tmp_path / "templates.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="templates.sqlite"):
        TemplateStore(tmp_path)


def test_a_row_of_the_wrong_size_is_found_at_open(tmp_path):
    s = TemplateStore(tmp_path)
    s.add("ann", vec(1), "h1", "enc-1")
    s.close()
    db = sqlite3.connect(tmp_path / "templates.sqlite")
    db.execute("UPDATE templates SET vector = ?", (b"\0" * 16,))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="4 values, 128 expected"):
        TemplateStore(tmp_path)


def test_dimension_mismatch_is_refused(tmp_path):
    TemplateStore(tmp_path).close()
    with pytest.raises(StoreError, match="128-d templates, 64-d expected"):
        TemplateStore(tmp_path, dim=64)


WRITER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, sys.argv[2])
    from index.template_store import TemplateStore
    s = TemplateStore(sys.argv[1])
    i = 0
    while True:
        v = np.random.default_rng(i).normal(size=128).astype(np.float32)
        r = s.add(f"s{i}", v / np.linalg.norm(v), f"h{i}", "enc-1")
        print("ack", r.template_id, flush=True)   # acknowledged only after add() returned
        i += 1
""")


def test_acknowledged_templates_survive_sigkill(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(ROOT)], stdout=subprocess.PIPE, text=True)
    acked = []
    try:
        while len(acked) < 25:
            line = p.stdout.readline()
            assert line.startswith("ack"), line
            acked.append(int(line.split()[1]))
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    s = TemplateStore(tmp_path)
    st = s.status()
    assert st["templates"] >= len(acked) and st["in_index"] == st["templates"]
    assert set(acked) <= set(s.index.ids().tolist())
    s.check()


def test_auto_opens_flat_below_the_crossover_and_hnsw_above(tmp_path, monkeypatch):
    monkeypatch.setattr("index.vector_index.AUTO_HNSW_ABOVE", 6)
    s = TemplateStore(tmp_path)
    for i in range(6):
        s.add(f"p{i}", vec(i), f"h{i}", "enc-1")
    assert s.status()["index_kind"] == "flat"
    s.add("p6", vec(6), "h6", "enc-1")                  # the seventh template crosses it
    assert s.status()["index_kind"] == "hnsw"
    s.close()
    r = TemplateStore(tmp_path)                         # reopened above it: HNSW from the start
    assert r.index.kind == "hnsw" and [n.subject for n in r.search(vec(3), 1, "enc-1")] == ["p3"]
    r.remove_subject("p3")                              # a tombstone in the graph, never returned
    assert all(n.subject != "p3" for n in r.search(vec(3), 7, "enc-1"))
    r.check()
    r.close()
    assert TemplateStore(tmp_path, index_kind="flat").index.kind == "flat"


def test_an_unknown_index_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown index kind 'annoy'"):
        TemplateStore(tmp_path, index_kind="annoy")
