"""A FAISS inner-product index over L2-normalised vectors, with stable int64 ids and an opaque
encoder-version tag per vector: exact (flat) for a campus, HNSW for millions.

Small surface: add, remove, search, save, load. Distances come back in facegate's unit,
Euclidean between unit vectors: d = sqrt(2 - 2 * ip).

The kind ("flat", "hnsw", or "auto": flat up to AUTO_HNSW_ABOVE vectors, HNSW beyond; the
measured crossover, see below). HNSW (faiss IndexHNSWFlat) cannot remove a vector from its
graph, so a removed vector becomes a tombstone: it stays in the graph, is never returned (a
search excludes it through FAISS's ID selector), and the graph is rebuilt from the live vectors
once tombstones pass TOMBSTONE_REBUILD_FRACTION of it. Tag filtering is a selector too; when it
leaves only part of an HNSW graph eligible, efSearch grows in proportion, and when it leaves
under EXACT_FILTER_FRACTION the eligible vectors are searched exactly instead. Under "auto" a
flat index becomes HNSW when an add takes it past the crossover (that add waits for the build);
it never turns back to flat while open.

Not thread-safe on its own: its owner (TemplateStore) serialises calls.

The snapshot is two files written atomically (tmp, fsync, rename): `NAME.faiss` (FAISS's own
format) and `NAME.json` (dimension, kind, count, ids' tags, tombstones, a checksum of the .faiss
file). Loading checks one against the other and names the file that is wrong.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import faiss
import numpy as np

FORMAT = "facegate-vector-index/1"
KINDS = ("auto", "flat", "hnsw")

# HNSW's parameters, from bench/index_scale.py (synthetic face-like templates; one probe per
# search; 2 shared, busy cores, so latencies are noisy; docs/index/index_scale.json): M 32 and
# efConstruction 80 build 1M templates in 709 s (784 bytes per template; flat: 512). At 1M,
# efSearch 128 gave recall@1 0.992 against exact (p50 0.78 ms, p99 5.2 ms), too close to 0.99 for
# a graph built in parallel (it differs from build to build); 256 gave 0.999 (p50 1.44 ms, p99
# 9.1 ms on the busy machine); flat took p50 113 ms on one thread, 248 ms on two.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 256
HNSW_MAX_EF_SEARCH = 2048        # the most a filtered search raises efSearch to
# "auto": flat up to this many vectors, HNSW above: the measured crossover. bench/index_scale.py
# --sizes 2000,5000,10000,20000,50000 (docs/index/index_crossover.json): one query's p50, flat
# 0.16 / 0.22 / 0.48 ms at 5k / 10k / 20k on one thread (on 2 OpenMP threads 0.16 / 0.33 / 24 ms:
# past ~10k FAISS splits one query's scan over the threads and waits for a busy core); HNSW at
# efSearch 256 0.19 / 0.26 / 0.36 ms at recall@1 1.0. HNSW is the faster from ~7k (2 threads) to
# ~13k (1 thread) templates.
AUTO_HNSW_ABOVE = 10_000
TOMBSTONE_REBUILD_FRACTION = 0.2   # rebuild an HNSW graph when this share of it is removed vectors
EXACT_FILTER_FRACTION = 0.05       # a filter leaving less of an HNSW graph than this: exact search

log = logging.getLogger(__name__)


class IndexFileError(ValueError):
    pass


def ip_to_distance(ip: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(2.0 - 2.0 * np.asarray(ip, np.float64), 0.0, 4.0))


def make_faiss_index(kind: str, dim: int, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION,
                     ef_search: int = HNSW_EF_SEARCH) -> faiss.Index:
    """The bare FAISS index of a kind (without ids): "flat" or "hnsw", inner product."""
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        return index
    raise ValueError(f"unknown index kind {kind!r}: choose from flat, hnsw")


class VectorIndex:
    def __init__(self, dim: int = 128, kind: str = "auto", hnsw_above: int | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}: choose from {', '.join(KINDS)}")
        self.dim = dim
        self.requested_kind = kind
        self.hnsw_above = AUTO_HNSW_ABOVE if hnsw_above is None else hnsw_above
        self.kind = "hnsw" if kind == "hnsw" else "flat"     # what the index is now
        self._index = faiss.IndexIDMap2(make_faiss_index(self.kind, dim))
        self._tags: dict[int, str] = {}
        self._by_tag: dict[str, set[int]] = {}
        self._dead: set[int] = set()          # tombstones: removed, still in the HNSW graph
        self._filters: dict[str | None, tuple] = {}   # per tag: (selector and what it holds on to)

    def __len__(self) -> int:
        return len(self._tags)

    def __contains__(self, vid: int) -> bool:
        return int(vid) in self._tags

    def tag(self, vid: int) -> str:
        return self._tags[int(vid)]

    def ids(self) -> np.ndarray:
        return np.array(sorted(self._tags), np.int64)

    @property
    def tombstones(self) -> int:
        return len(self._dead)

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        v = np.ascontiguousarray(np.asarray(vectors, np.float32).reshape(-1, self.dim))
        if not np.all(np.isfinite(v)):
            raise ValueError("vectors contain NaN or infinity")
        norms = np.linalg.norm(v, axis=1)
        if len(v) and np.abs(norms - 1).max() > 1e-3:
            raise ValueError(f"vectors must be L2-normalised (norms {norms.min():.4f}..{norms.max():.4f})")
        return v

    # ------------------------------------------------------------------ writes
    def add(self, ids, vectors: np.ndarray, tag: str) -> None:
        ids = np.asarray(ids, np.int64).reshape(-1)
        v = self._check(vectors)
        if len(ids) != len(v):
            raise ValueError(f"{len(ids)} ids for {len(v)} vectors")
        dup = [int(i) for i in ids if int(i) in self._tags]
        if dup or len(set(ids.tolist())) != len(ids):
            raise ValueError(f"ids already present: {dup[:5]}")
        if self.requested_kind == "auto" and self.kind == "flat" and len(self) + len(ids) > self.hnsw_above:
            self._rebuild("hnsw")
        elif self._dead and not self._dead.isdisjoint(ids.tolist()):
            self._rebuild(self.kind)           # an id coming back must not meet its own tombstone
        self._index.add_with_ids(v, ids)
        members = self._by_tag.setdefault(tag, set())
        for i in ids.tolist():
            self._tags[i] = tag
            members.add(i)
        self._filters.clear()

    def remove(self, ids) -> int:
        ids = np.asarray(ids, np.int64).reshape(-1)
        present = sorted({int(i) for i in ids if int(i) in self._tags})
        if not present:
            return 0
        if self.kind == "flat":
            self._index.remove_ids(faiss.IDSelectorBatch(np.array(present, np.int64)))
        else:
            self._dead.update(present)
        for i in present:
            t = self._tags.pop(i)
            self._by_tag[t].discard(i)
            if not self._by_tag[t]:
                del self._by_tag[t]
        self._filters.clear()
        if len(self._dead) > TOMBSTONE_REBUILD_FRACTION * self._index.ntotal:
            self._rebuild(self.kind)
        return len(present)

    def _rebuild(self, kind: str) -> None:
        """A fresh index of `kind` holding the live vectors (tombstones dropped), same ids."""
        log.info("building a %s index of %d vectors (was %s, %d tombstones)", kind, len(self), self.kind,
                 len(self._dead))
        ids = faiss.vector_to_array(self._index.id_map)
        dead = np.fromiter(self._dead, np.int64, len(self._dead))
        fresh = faiss.IndexIDMap2(make_faiss_index(kind, self.dim))
        for s in range(0, len(ids), 65536):
            chunk = ids[s:s + 65536]
            live = ~np.isin(chunk, dead)
            fresh.add_with_ids(self._index.index.reconstruct_n(s, len(chunk))[live], chunk[live])
        self._index, self.kind = fresh, kind
        self._dead.clear()
        self._filters.clear()

    # ------------------------------------------------------------------ search
    def _filter(self, tag: str | None) -> tuple:
        """(selector over external ids or None, share of the index it lets through, refs)."""
        if tag in self._filters:
            return self._filters[tag]
        ntotal = self._index.ntotal
        allowed = len(self._tags) if tag is None else len(self._by_tag.get(tag, ()))
        if allowed == ntotal:
            out = (None, 1.0, ())
        else:
            if tag is None:
                inner = faiss.IDSelectorBatch(np.fromiter(self._dead, np.int64, len(self._dead)))
                sel = faiss.IDSelectorNot(inner)
            elif 2 * allowed <= ntotal:
                inner = sel = faiss.IDSelectorBatch(np.fromiter(self._by_tag.get(tag, ()), np.int64, allowed))
            else:
                excluded = [i for t, s in self._by_tag.items() if t != tag for i in s]
                excluded.extend(self._dead)
                inner = faiss.IDSelectorBatch(np.array(excluded, np.int64))
                sel = faiss.IDSelectorNot(inner)
            out = (sel, allowed / max(ntotal, 1), (inner,))
        self._filters[tag] = out
        return out

    def search(self, queries: np.ndarray, k: int, tag: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """-> (distances, ids), each len(queries) x k, nearest first; id -1 where fewer exist.
        With `tag`, vectors of another encoder version are never returned (never compared)."""
        q = self._check(queries)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if len(self) == 0:
            return np.full((len(q), k), np.inf), np.full((len(q), k), -1, np.int64)
        sel, share, _refs = self._filter(tag)
        if self.kind == "flat":
            params = None if sel is None else faiss.SearchParameters(sel=sel)
            ip, ids = self._index.search(q, k, params=params)
        elif share < EXACT_FILTER_FRACTION:
            ip, ids = self._exact_filtered(q, k, sel)
        else:
            ef = min(HNSW_MAX_EF_SEARCH, math.ceil(max(HNSW_EF_SEARCH, k) / share))
            ip, ids = self._index.search(q, k, params=faiss.SearchParametersHNSW(efSearch=ef, sel=sel))
        dist = np.where(ids >= 0, ip_to_distance(ip), np.inf)
        return dist, ids

    def _exact_filtered(self, q: np.ndarray, k: int, sel) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the few vectors a filter lets through (the graph's own flat storage)."""
        id_map = self._index.id_map
        storage = faiss.downcast_index(faiss.downcast_index(self._index.index).storage)
        translated = faiss.IDSelectorTranslated(id_map, sel)
        ip, rows = storage.search(q, k, params=faiss.SearchParameters(sel=translated))
        ids = faiss.vector_to_array(id_map)
        return ip, np.where(rows >= 0, ids[np.clip(rows, 0, None)], -1)

    def reconstruct(self, vid: int) -> np.ndarray:
        if int(vid) not in self._tags:
            raise KeyError(f"no vector with id {vid}")
        return self._index.reconstruct(int(vid))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = faiss.serialize_index(self._index).tobytes()
        meta = {"format": FORMAT, "dim": self.dim, "kind": self.kind, "requested_kind": self.requested_kind,
                "hnsw_above": self.hnsw_above, "count": len(self), "sha256": hashlib.sha256(data).hexdigest(),
                "tags": {str(i): t for i, t in sorted(self._tags.items())}, "tombstones": sorted(self._dead)}
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
        dead = meta.get("tombstones", [])
        if (index.d != meta["dim"] or index.ntotal != meta["count"] + len(dead)
                or len(meta["tags"]) != meta["count"]):
            raise IndexFileError(f"{fi}: {index.ntotal} vectors of dimension {index.d}, but {fj.name} "
                                 f"says {meta['count']} (and {len(dead)} removed) of dimension {meta['dim']}")
        kind = meta.get("kind", "flat")
        base = faiss.downcast_index(index.index if isinstance(index, faiss.IndexIDMap2) else index)
        if not isinstance(base, {"flat": faiss.IndexFlat, "hnsw": faiss.IndexHNSWFlat}.get(kind, type(None))):
            raise IndexFileError(f"{fi} holds a {type(base).__name__}, but {fj.name} says {kind!r}")
        out = cls(meta["dim"], kind=meta.get("requested_kind", kind), hnsw_above=meta.get("hnsw_above"))
        out.kind = kind
        out._index = faiss.IndexIDMap2(index) if not isinstance(index, faiss.IndexIDMap2) else index
        out._tags = {int(i): t for i, t in meta["tags"].items()}
        for i, t in out._tags.items():
            out._by_tag.setdefault(t, set()).add(i)
        out._dead = {int(i) for i in dead}
        ids = set(faiss.vector_to_array(out._index.id_map).tolist())
        if ids != set(out._tags) | out._dead:
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
