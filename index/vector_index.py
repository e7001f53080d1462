"""An exact FAISS inner-product index over L2-normalised vectors, with stable int64 ids and
an opaque encoder-version tag per vector.

Small surface: add, remove, search, save, load. Distances come back in facegate's unit,
Euclidean between unit vectors: d = sqrt(2 - 2 * ip).

The snapshot is two files written atomically (tmp, fsync, rename): `NAME.faiss` (FAISS's own
format) and `NAME.json` (dimension, count, ids' tags, a checksum of the .faiss file). Loading
checks one against the other and names the file that is wrong.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import faiss
import numpy as np

FORMAT = "facegate-vector-index/1"


class IndexFileError(ValueError):
    pass


def ip_to_distance(ip: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(2.0 - 2.0 * np.asarray(ip, np.float64), 0.0, 4.0))


class VectorIndex:
    def __init__(self, dim: int = 128):
        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._tags: dict[int, str] = {}

    def __len__(self) -> int:
        return self._index.ntotal

    def __contains__(self, vid: int) -> bool:
        return int(vid) in self._tags

    def tag(self, vid: int) -> str:
        return self._tags[int(vid)]

    def ids(self) -> np.ndarray:
        return np.array(sorted(self._tags), np.int64)

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        v = np.ascontiguousarray(np.asarray(vectors, np.float32).reshape(-1, self.dim))
        if not np.all(np.isfinite(v)):
            raise ValueError("vectors contain NaN or infinity")
        norms = np.linalg.norm(v, axis=1)
        if len(v) and np.abs(norms - 1).max() > 1e-3:
            raise ValueError(f"vectors must be L2-normalised (norms {norms.min():.4f}..{norms.max():.4f})")
        return v

    def add(self, ids, vectors: np.ndarray, tag: str) -> None:
        ids = np.asarray(ids, np.int64).reshape(-1)
        v = self._check(vectors)
        if len(ids) != len(v):
            raise ValueError(f"{len(ids)} ids for {len(v)} vectors")
        dup = [int(i) for i in ids if int(i) in self._tags]
        if dup or len(set(ids.tolist())) != len(ids):
            raise ValueError(f"ids already present: {dup[:5]}")
        self._index.add_with_ids(v, ids)
        for i in ids:
            self._tags[int(i)] = tag

    def remove(self, ids) -> int:
        ids = np.asarray(ids, np.int64).reshape(-1)
        present = np.array([i for i in ids if int(i) in self._tags], np.int64)
        if len(present) == 0:
            return 0
        n = int(self._index.remove_ids(faiss.IDSelectorBatch(present)))
        for i in present:
            self._tags.pop(int(i), None)
        return n

    def search(self, queries: np.ndarray, k: int, tag: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """-> (distances, ids), each len(queries) x k, nearest first; id -1 where fewer exist.
        With `tag`, vectors of another encoder version are never returned (never compared)."""
        q = self._check(queries)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if len(self) == 0:
            return np.full((len(q), k), np.inf), np.full((len(q), k), -1, np.int64)
        params = None
        if tag is not None and any(t != tag for t in self._tags.values()):
            allowed = np.array([i for i, t in self._tags.items() if t == tag], np.int64)
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
        ip, ids = self._index.search(q, k, params=params)
        dist = np.where(ids >= 0, ip_to_distance(ip), np.inf)
        return dist, ids

    def reconstruct(self, vid: int) -> np.ndarray:
        return self._index.reconstruct(int(vid))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = faiss.serialize_index(self._index).tobytes()
        meta = {"format": FORMAT, "dim": self.dim, "count": len(self),
                "sha256": hashlib.sha256(data).hexdigest(),
                "tags": {str(i): t for i, t in sorted(self._tags.items())}}
        _atomic_write(path.with_suffix(".faiss"), data)
        _atomic_write(path.with_suffix(".json"), json.dumps(meta).encode())

    @classmethod
    def load(cls, path: str | Path, dim: int | None = None) -> "VectorIndex":
        path = Path(path)
        fi, fj = path.with_suffix(".faiss"), path.with_suffix(".json")
        for f in (fi, fj):
            if not f.exists():
                raise IndexFileError(f"{f} is missing")
        try:
            meta = json.loads(fj.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise IndexFileError(f"{fj} is not valid JSON: {e}") from None
        if meta.get("format") != FORMAT:
            raise IndexFileError(f"{fj} is not a {FORMAT} file")
        data = fi.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise IndexFileError(f"{fi} is truncated or corrupt: its checksum does not match {fj.name}")
        try:
            index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
        except RuntimeError as e:
            raise IndexFileError(f"{fi} cannot be read by FAISS: {e}") from None
        if dim is not None and meta["dim"] != dim:
            raise IndexFileError(f"{fi} holds {meta['dim']}-d vectors, {dim}-d expected")
        if index.d != meta["dim"] or index.ntotal != meta["count"] or len(meta["tags"]) != meta["count"]:
            raise IndexFileError(f"{fi}: {index.ntotal} vectors of dimension {index.d}, but {fj.name} "
                                 f"says {meta['count']} of dimension {meta['dim']}")
        out = cls(meta["dim"])
        out._index = faiss.IndexIDMap2(index) if not isinstance(index, faiss.IndexIDMap2) else index
        out._tags = {int(i): t for i, t in meta["tags"].items()}
        ids = set(faiss.vector_to_array(out._index.id_map).tolist())
        if ids != set(out._tags):
            raise IndexFileError(f"{fi}: the ids in the index and in {fj.name} differ")
        return out


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
