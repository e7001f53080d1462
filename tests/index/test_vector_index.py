"""VectorIndex: exact search in facegate's distance unit, stable ids, tags, save/load checks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from index.vector_index import IndexFileError, VectorIndex, ip_to_distance


def unit(*angles_deg, dim=4):
    v = np.zeros((len(angles_deg), dim), np.float32)
    a = np.deg2rad(angles_deg)
    v[:, 0], v[:, 1] = np.cos(a), np.sin(a)
    return v


def test_distances_are_euclidean_between_unit_vectors():
    idx = VectorIndex(4)
    idx.add([10, 20, 30], unit(0, 60, 180), tag="enc-a")
    d, ids = idx.search(unit(0), k=3)
    assert ids.tolist() == [[10, 20, 30]]
    np.testing.assert_allclose(d[0], [0.0, 1.0, 2.0], atol=1e-3)   # 60 degrees apart -> chord 1
    assert ip_to_distance(np.array([0.5]))[0] == pytest.approx(1.0)


def test_fewer_vectors_than_k_pad_with_minus_one():
    idx = VectorIndex(4)
    idx.add([1], unit(0), tag="t")
    d, ids = idx.search(unit(10), k=3)
    assert ids[0, 0] == 1 and ids[0, 1:].tolist() == [-1, -1] and np.isinf(d[0, 1:]).all()
    d, ids = VectorIndex(4).search(unit(10), k=2)
    assert ids.tolist() == [[-1, -1]]


def test_remove_keeps_other_ids_stable():
    idx = VectorIndex(4)
    idx.add([5, 6, 7], unit(0, 30, 90), tag="t")
    assert idx.remove([6, 99]) == 1
    assert len(idx) == 2 and 6 not in idx and 7 in idx
    d, ids = idx.search(unit(30), k=2)
    assert ids[0].tolist() == [5, 7]


def test_vectors_of_another_encoder_version_are_never_returned():
    idx = VectorIndex(4)
    idx.add([1], unit(0), tag="old")
    idx.add([2], unit(90), tag="new")
    d, ids = idx.search(unit(0), k=2, tag="new")
    assert ids[0].tolist() == [2, -1]


def test_bad_input_is_refused():
    idx = VectorIndex(4)
    with pytest.raises(ValueError, match="normalised"):
        idx.add([1], np.ones((1, 4), np.float32), tag="t")
    idx.add([1], unit(0), tag="t")
    with pytest.raises(ValueError, match="already present"):
        idx.add([1], unit(5), tag="t")
    with pytest.raises(ValueError, match="k must be"):
        idx.search(unit(0), k=0)


def test_save_load_round_trip_gives_identical_results(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 128)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    idx = VectorIndex(128)
    idx.add(np.arange(100, 150), v, tag="enc-1")
    idx.remove([110, 120])
    idx.save(tmp_path / "snap")
    back = VectorIndex.load(tmp_path / "snap", dim=128)
    q = v[:5]
    for a, b in zip(idx.search(q, 7), back.search(q, 7)):
        np.testing.assert_array_equal(a, b)
    assert back.tag(149) == "enc-1" and 110 not in back and len(back) == 48


def test_truncated_or_inconsistent_files_name_the_file(tmp_path):
    idx = VectorIndex(4)
    idx.add([1, 2], unit(0, 90), tag="t")
    idx.save(tmp_path / "snap")
    fi, fj = tmp_path / "snap.faiss", tmp_path / "snap.json"
    data = fi.read_bytes()
    fi.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFileError, match="snap.faiss is truncated or corrupt"):
        VectorIndex.load(tmp_path / "snap")
    fi.write_bytes(data)
    meta = json.loads(fj.read_text())
    with pytest.raises(IndexFileError, match="8-d expected"):
        VectorIndex.load(tmp_path / "snap", dim=8)
    fj.write_text(json.dumps({**meta, "count": 3}))
    with pytest.raises(IndexFileError, match="says 3"):
        VectorIndex.load(tmp_path / "snap")
    fj.unlink()
    with pytest.raises(IndexFileError, match="snap.json is missing"):
        VectorIndex.load(tmp_path / "snap")


# ------------------------------------------------------------------ HNSW and "auto"
def faces(n, seed=0, dim=32, per=4):
    """Clustered unit vectors (people: `per` templates around each centre), as face embeddings are."""
    rng = np.random.default_rng(seed)
    c = np.repeat(rng.normal(size=(-(-n // per), dim)), per, axis=0)[:n] + 0.35 * rng.normal(size=(n, dim))
    return (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)


def probes(v, seed=1):
    q = v + 0.1 * np.random.default_rng(seed).normal(size=v.shape)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def test_hnsw_gives_the_flat_top_1_on_a_small_set():
    v = faces(1200)
    flat, hnsw = VectorIndex(32, kind="flat"), VectorIndex(32, kind="hnsw")
    for idx in (flat, hnsw):
        idx.add(np.arange(1200) + 7, v, tag="t")
    assert (flat.kind, hnsw.kind) == ("flat", "hnsw")
    q = probes(v[::10])
    df, idf = flat.search(q, 5)
    dh, idh = hnsw.search(q, 5)
    assert (idh[:, 0] == idf[:, 0]).all()
    np.testing.assert_allclose(dh[:, 0], df[:, 0], atol=1e-5)


def test_hnsw_never_returns_a_removed_id_and_rebuilds_past_the_tombstone_share():
    v = faces(600)
    idx = VectorIndex(32, kind="hnsw")
    idx.add(np.arange(600), v, tag="t")
    gone = np.arange(0, 600, 7)                       # 86 of 600: below the rebuild share, tombstones
    assert idx.remove(np.concatenate([gone, [9999]])) == len(gone)
    assert idx.tombstones == len(gone) and len(idx) == 600 - len(gone) and 0 not in idx
    d, ids = idx.search(probes(v[gone]), 20)          # probes right at the removed vectors
    assert not np.isin(ids, gone).any() and (ids >= 0).all()
    with pytest.raises(KeyError):
        idx.reconstruct(int(gone[0]))
    more = np.setdiff1d(np.arange(0, 600, 3), gone)   # past the share: the graph is rebuilt without them
    idx.remove(more)
    assert idx.tombstones == 0 and idx._index.ntotal == len(idx) == 600 - len(gone) - len(more)
    d, ids = idx.search(probes(v), 10)
    assert not np.isin(ids, np.concatenate([gone, more])).any()
    idx.add([0], v[:1], tag="t")                      # an id may come back after its removal
    assert idx.search(v[:1], 1)[1][0, 0] == 0


def test_hnsw_tag_filter_returns_only_that_encoder_version():
    v = faces(600)
    tags = np.where(np.arange(600) % 2 == 0, "new", "old").astype(object)
    rare = np.arange(0, 600, 30)                      # 3%: searched exactly over its few vectors
    tags[rare] = "rare"
    for kind in ("flat", "hnsw"):
        idx = VectorIndex(32, kind=kind)
        for t in ("new", "old", "rare"):
            idx.add(np.flatnonzero(tags == t), v[tags == t], tag=t)
        q = probes(v[::9])
        for t in ("new", "old", "rare"):
            d, ids = idx.search(q, 5, tag=t)
            assert (tags[ids[ids >= 0]] == t).all()
        d, ids = idx.search(q, 5, tag="rare")
        exact = rare[np.argsort(-(q @ v[rare].T), axis=1)[:, :5]]
        np.testing.assert_array_equal(ids, exact)
        assert idx.search(q, 3, tag="none such")[1].max() == -1


def test_hnsw_save_load_round_trip_keeps_tombstones(tmp_path):
    v = faces(400)
    idx = VectorIndex(32, kind="hnsw")
    idx.add(np.arange(100, 500), v, tag="enc-1")
    idx.remove([110, 120, 130])
    idx.save(tmp_path / "snap")
    back = VectorIndex.load(tmp_path / "snap", dim=32)
    assert back.kind == "hnsw" and back.tombstones == 3 and len(back) == 397 and 110 not in back
    q = probes(v[:40])
    for a, b in zip(idx.search(q, 7), back.search(q, 7)):
        np.testing.assert_array_equal(a, b)
    assert not np.isin(back.search(q, 7)[1], [110, 120, 130]).any()


def test_auto_is_flat_up_to_the_crossover_and_hnsw_above():
    v = faces(300)
    idx = VectorIndex(32, kind="auto", hnsw_above=200)
    idx.add(np.arange(200), v[:200], tag="t")
    assert idx.kind == "flat"
    idx.add([200], v[200:201], tag="t")
    assert idx.kind == "hnsw" and len(idx) == 201
    assert idx.search(v[:50], 1)[1][:, 0].tolist() == list(range(50))
    idx.remove(np.arange(150))                        # never back to flat while open
    assert idx.kind == "hnsw" and len(idx) == 51
    assert VectorIndex(32, kind="auto", hnsw_above=200).kind == "flat"


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="choose from auto, flat, hnsw"):
        VectorIndex(4, kind="ivf")
