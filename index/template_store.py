"""Subjects and their templates, durable across a crash, with a FAISS index in memory
(exact up to a campus's size, HNSW beyond: vector_index.py).

Durability design: SQLite is the write-ahead journal and the single source of truth. Every
template (its 128 floats, subject, encoder-version tag and the photo's SHA-256, never the
photo) is one row, committed in WAL mode with synchronous=FULL before `add` returns; an
acknowledged template therefore survives SIGKILL and power loss. The FAISS index is derived
state: at open it is rebuilt from the rows (a flat index of tens of thousands of templates takes
well under a second; an HNSW graph takes longer: ~26 s for 50k on two busy cores, see
bench/index_scale.py), so index and metadata cannot disagree after a restart; every write
changes the rows first and the in-memory index second, under one lock. A snapshot of the
FAISS index (`VectorIndex.save`) is for replicas, not for recovery.

The store's `index_version` names this set of templates (a new one is made when re-enrolling
for a new encoder); `generation` counts committed writes.
"""
from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .vector_index import KINDS, VectorIndex

SCHEMA_VERSION = 1
DB_NAME = "templates.sqlite"


class StoreError(ValueError):
    pass


@dataclass(frozen=True)
class Neighbour:
    template_id: int
    subject: str
    distance: float                 # Euclidean, as the index measures it
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)   # the template's


@dataclass(frozen=True)
class AddResult:
    template_id: int
    already_enrolled: bool


class TemplateStore:
    def __init__(self, folder: str | Path, dim: int = 128, index_kind: str = "auto"):
        """`index_kind`: VectorIndex's kind: "flat" (exact), "hnsw", or "auto" (flat up to
        vector_index.AUTO_HNSW_ABOVE templates, HNSW beyond)."""
        if index_kind not in KINDS:
            raise ValueError(f"unknown index kind {index_kind!r}: choose from {', '.join(KINDS)}")
        self.index_kind = index_kind
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / DB_NAME
        self.dim = dim
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._init_schema()
            self.index_version = self._meta("index_version")
            self._gen = int(self._meta("generation"))     # the generation the index holds
            self.index = self._rebuild()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is not a usable template database: {e}") from None

    # ---------------------------------------------------------------------------- set-up
    def _init_schema(self):
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute("""CREATE TABLE IF NOT EXISTS templates (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                subject TEXT NOT NULL,
                photo_sha256 TEXT NOT NULL,
                encoder_version TEXT NOT NULL,
                vector BLOB NOT NULL,
                created_at REAL NOT NULL,
                UNIQUE (subject, photo_sha256, encoder_version))""")
            self._db.execute("CREATE INDEX IF NOT EXISTS templates_subject ON templates (subject)")
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                for k, v in {"schema": str(SCHEMA_VERSION), "dim": str(self.dim),
                             "index_version": uuid.uuid4().hex[:12], "generation": "0"}.items():
                    self._db.execute("INSERT INTO meta VALUES (?, ?)", (k, v))
            else:
                if int(meta.get("schema", -1)) != SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: schema {meta.get('schema')}, this facegate reads {SCHEMA_VERSION}")
                if int(meta["dim"]) != self.dim:
                    raise StoreError(f"{self.path} holds {meta['dim']}-d templates, {self.dim}-d expected")

    def _rebuild(self) -> VectorIndex:
        index = VectorIndex(self.dim, kind=self.index_kind)
        by_tag: dict[str, tuple[list, list]] = {}
        for tid, tag, blob in self._db.execute("SELECT id, encoder_version, vector FROM templates ORDER BY id"):
            v = np.frombuffer(blob, np.float32)
            if v.size != self.dim:
                raise StoreError(f"{self.path}: template {tid} has {v.size} values, {self.dim} expected")
            ids, vecs = by_tag.setdefault(tag, ([], []))
            ids.append(tid)
            vecs.append(v)
        for tag, (ids, vecs) in by_tag.items():
            index.add(ids, np.stack(vecs), tag)
        return index

    def _meta(self, key: str) -> str:
        return self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def _bump(self):
        """Count a write; the index holds it once applied, unless another process wrote before
        (then `follow` diffs the ids at the next search)."""
        gen = int(self._meta("generation"))
        self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        if gen == self._gen:
            self._gen = gen + 1

    # ---------------------------------------------------------------------------- writes
    def add(self, subject: str, vector: np.ndarray, photo_sha256: str, encoder_version: str) -> AddResult:
        """Durable when it returns. The same photo (bytes) for the same subject is not added twice."""
        if not subject:
            raise ValueError("subject id is empty")
        v = np.asarray(vector, np.float32).reshape(1, self.dim)
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM templates WHERE subject = ? AND photo_sha256 = ? AND encoder_version = ?",
                (subject, photo_sha256, encoder_version)).fetchone()
            if row:
                return AddResult(row[0], True)
            self.index._check(v)  # refuse a bad vector before anything is written
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT INTO templates (subject, photo_sha256, encoder_version, vector, created_at) "
                    "VALUES (?, ?, ?, ?, ?)", (subject, photo_sha256, encoder_version, v.tobytes(), time.time()))
                self._bump()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            tid = int(cur.lastrowid)
            self.index.add([tid], v, encoder_version)
            return AddResult(tid, False)

    def remove_subject(self, subject: str) -> int:
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM templates WHERE subject = ?", (subject,))]
            if not ids:
                return 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM templates WHERE subject = ?", (subject,))
                self._bump()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.index.remove(ids)
            return len(ids)

    # ---------------------------------------------------------------------------- reads
    # One connection serves every thread; the lock keeps a reader out of a writer's open transaction.
    def has_subject(self, subject: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM templates WHERE subject = ? LIMIT 1",
                                    (subject,)).fetchone() is not None

    def template_counts(self, subjects: list[str] | None = None) -> dict[str, int]:
        """Templates per subject: of the given ones (an Identify asks for its k neighbours' only,
        an indexed lookup, not a scan of every subject), or of all."""
        with self._lock:
            if subjects is None:
                return dict(self._db.execute("SELECT subject, COUNT(*) FROM templates GROUP BY subject").fetchall())
            subjects = sorted(set(subjects))
            if not subjects:
                return {}
            marks = ",".join("?" * len(subjects))
            return dict(self._db.execute(f"SELECT subject, COUNT(*) FROM templates WHERE subject IN ({marks}) "
                                         f"GROUP BY subject", subjects).fetchall())

    def subject_vectors(self, subject: str, encoder_version: str) -> np.ndarray:
        """The subject's templates of this encoder version (n x dim; n = 0: none)."""
        with self._lock:
            rows = self._db.execute("SELECT vector FROM templates WHERE subject = ? AND encoder_version = ?",
                                    (subject, encoder_version)).fetchall()
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([np.frombuffer(r[0], np.float32) for r in rows])

    def vectors(self, encoder_version: str) -> tuple[list[str], np.ndarray]:
        """Every template of this encoder version, in the order they were enrolled: the subject of
        each (one per row) and the vectors (n x dim), read from the rows in one statement."""
        with self._lock:
            rows = self._db.execute("SELECT subject, vector FROM templates WHERE encoder_version = ? ORDER BY id",
                                    (encoder_version,)).fetchall()
        if not rows:
            return [], np.zeros((0, self.dim), np.float32)
        return [r[0] for r in rows], np.stack([np.frombuffer(r[1], np.float32) for r in rows])

    def search(self, vector: np.ndarray, k: int, encoder_version: str) -> list[Neighbour]:
        """The k nearest templates. Another process on this folder may have written since this
        one built its index: the index first catches up with the rows (`follow`), and a hit whose
        row is gone all the same is skipped, never a KeyError."""
        with self._lock:
            self.follow()
            dist, ids = self.index.search(np.asarray(vector, np.float32).reshape(1, -1), k, tag=encoder_version)
            found = [(int(i), float(d)) for i, d in zip(ids[0], dist[0]) if i >= 0]
            if not found:
                return []
            q = ",".join("?" * len(found))
            rows = {r[0]: r[1:] for r in self._db.execute(f"SELECT id, subject, vector FROM templates WHERE id IN ({q})",
                                                          [i for i, _ in found]).fetchall()}
            return [Neighbour(i, rows[i][0], d, np.frombuffer(rows[i][1], np.float32)) for i, d in found if i in rows]

    def follow(self) -> None:
        """Catch the index up with rows another process wrote (one SELECT when none did): the
        ids are diffed in one read transaction, what is new is added, what is gone removed."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                gen = int(self._meta("generation"))
                if gen != self._gen:
                    want = {r[0] for r in self._db.execute("SELECT id FROM templates")}
                    have = set(self.index.ids().tolist())
                    if have - want:
                        self.index.remove(sorted(have - want))
                    new = sorted(want - have)
                    for i in range(0, len(new), 500):
                        chunk = new[i:i + 500]
                        for tid, tag, blob in self._db.execute(
                                f"SELECT id, encoder_version, vector FROM templates WHERE id IN "
                                f"({','.join('?' * len(chunk))})", chunk).fetchall():
                            self.index.add([tid], np.frombuffer(blob, np.float32).reshape(1, -1), tag)
                    self._gen = gen
            finally:
                self._db.execute("COMMIT")

    def encoder_versions(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT DISTINCT encoder_version FROM templates")}

    def status(self) -> dict:
        with self._lock:
            subjects, templates = self._db.execute(
                "SELECT COUNT(DISTINCT subject), COUNT(*) FROM templates").fetchone()
            return {"subjects": subjects, "templates": templates, "index_version": self._meta("index_version"),
                    "generation": int(self._meta("generation")), "encoder_versions": sorted(self.encoder_versions()),
                    "in_index": len(self.index), "index_kind": self.index.kind}

    def check(self) -> None:
        """Index and metadata agree: the same ids, and the vectors are the rows' vectors."""
        with self._lock:
            rows = dict(self._db.execute("SELECT id, vector FROM templates").fetchall())
            if set(rows) != set(self.index.ids().tolist()):
                raise StoreError(f"{self.path}: the index and the template rows hold different ids")
            for tid, blob in rows.items():
                if not np.array_equal(self.index.reconstruct(tid), np.frombuffer(blob, np.float32)):
                    raise StoreError(f"{self.path}: template {tid} differs between the index and the rows")

    def close(self):
        with self._lock:
            self._db.close()


def remove_subject_at(folder: str | Path, subject: str, timeout: float = 30.0) -> tuple[str, int]:
    """Remove a subject's templates from the store in `folder` without opening it as a TemplateStore
    (no index is built; any dimension): for an index version that is not being served.
    -> (its index_version, templates removed). A server that has this folder open rebuilds its
    index at the next start; the rows are the truth."""
    path = Path(folder) / DB_NAME
    if not path.is_file():
        raise StoreError(f"{path} does not exist")
    try:
        db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    except sqlite3.Error as e:
        raise StoreError(f"{path} is not a usable template database: {e}") from None
    try:
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("SELECT value FROM meta WHERE key = 'index_version'").fetchone()[0]
            n = db.execute("DELETE FROM templates WHERE subject = ?", (subject,)).rowcount
            if n:
                db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return version, n
    except (sqlite3.Error, TypeError) as e:
        raise StoreError(f"{path} is not a usable template database: {e}") from None
    finally:
        db.close()
