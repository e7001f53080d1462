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
