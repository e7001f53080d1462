"""The PostgreSQL store, shared by several `serve` replicas: templates, thresholds, site
policies, the audit lines and the audit's pseudonym key, in one database (psycopg 3).

Templates. The rows are the single source of truth (one row per template: subject, the photo's
SHA-256, the encoder version, its 128 floats, and the index version it belongs to, a column:
a reindex writes a new index version beside the one in use and then switches `current_index`
in one statement). Each replica keeps an exact FAISS index in memory, built from the rows at
start and following them:

- every write (add, remove) takes the template writers' advisory lock, bumps `generation`,
  changes the rows and NOTIFYs `facegate_templates` with {generation, index version, op, ids},
  all in one transaction, so notifications arrive in generation order and only once committed;
- a listener thread per replica (its own connection, LISTEN) applies generation g when its
  index is at g - 1, ignores one it already holds (its own writes are applied at once), and
  on a gap, on reconnect, or when the periodic generation check finds the rows ahead, re-reads
  the ids in one snapshot and adds and removes the difference (a missed NOTIFY costs a diff,
  never a wrong answer);
- a search maps its FAISS hits to subjects with a read of the rows, so a template deleted by
  another replica a moment ago is skipped, never named and never a KeyError.

Audit lines are appended under `pg_advisory_xact_lock`, so their order is the order of the
chain across replicas. The schema is created idempotently on start (under an advisory lock:
replicas may start at once) and carries its version in `facegate_meta`.
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import asdict
from typing import Callable, Iterator

import numpy as np
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from index.template_store import AddResult, Neighbour, StoreError
from index.vector_index import VectorIndex

from .errors import FacegateError, Unavailable
from .sites import SiteError, SitePolicy
from .thresholds import ThresholdStore

log = logging.getLogger("facegate.pg_store")

SCHEMA_VERSION = 1
CHANNEL = "facegate_templates"
GENESIS = "0" * 64
# advisory lock keys (one 64-bit space per database): arbitrary, fixed, facegate's own
LOCK_SCHEMA, LOCK_TEMPLATES, LOCK_AUDIT = 0x66616365_0001, 0x66616365_0002, 0x66616365_0003
INITIAL_INDEX = "initial"

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS facegate_meta (key text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS facegate_templates (
        id bigserial PRIMARY KEY,
        index_version text NOT NULL,
        subject text NOT NULL,
        photo_sha256 text NOT NULL,
        encoder_version text NOT NULL,
        vector bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (index_version, subject, photo_sha256, encoder_version))""",
    "CREATE INDEX IF NOT EXISTS facegate_templates_subject ON facegate_templates (index_version, subject)",
    """CREATE TABLE IF NOT EXISTS facegate_thresholds (
        site text NOT NULL, key text NOT NULL, entry jsonb NOT NULL, PRIMARY KEY (site, key))""",
    "CREATE TABLE IF NOT EXISTS facegate_sites (site text PRIMARY KEY, policy jsonb NOT NULL)",
    """CREATE TABLE IF NOT EXISTS facegate_audit (
        seq bigserial PRIMARY KEY, line text NOT NULL, hash text NOT NULL,
        at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS facegate_audit_key (
        id int PRIMARY KEY CHECK (id = 1), key bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now())""",
]


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        d = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    user = f"{d['user']}@" if d.get("user") else ""
    port = f":{d['port']}" if d.get("port") else ""
    return f"postgresql://{user}{d.get('host', '')}{port}/{d.get('dbname', '')}"


def is_pg_url(store: str | None) -> bool:
    return bool(store) and store.split("://", 1)[0] in ("postgresql", "postgres")


class PgDatabase:
    """A connection pool to one facegate database, its schema made sure of on open."""

    def __init__(self, url: str, max_size: int = 8, connect_timeout: float = 10.0):
        if not is_pg_url(url):
            raise StoreError(f"{url!r} is not a postgresql:// URL")
        self.url = url
        self.location = redact(url)
        self.pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False, name="facegate",
                                   check=ConnectionPool.check_connection,
                                   kwargs={"connect_timeout": max(1, int(connect_timeout))})
        try:
            self.pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            self.pool.close()
            raise Unavailable(f"cannot connect to the store {self.location} within {connect_timeout:.0f} s: "
                             f"is PostgreSQL running there, and may this user log in?") from None
        try:
            self._create_schema()
        except BaseException:
            self.pool.close()
            raise

    def _create_schema(self) -> None:
        with self.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_SCHEMA,))
            for stmt in SCHEMA:
                conn.execute(stmt)
            meta = dict(conn.execute("SELECT key, value FROM facegate_meta").fetchall())
            if not meta:
                conn.cursor().executemany("INSERT INTO facegate_meta VALUES (%s, %s)",
                                 [("schema", str(SCHEMA_VERSION)), ("generation", "0"),
                                  ("current_index", INITIAL_INDEX)])
            elif int(meta.get("schema", -1)) != SCHEMA_VERSION:
                raise StoreError(f"the store {self.location} has schema {meta.get('schema')}, this facegate "
                                 f"reads schema {SCHEMA_VERSION}")

    def connection(self):
        """A pooled connection in a transaction, committed at the end of the with-block (rolled
        back on an exception). A database that cannot be reached is Unavailable."""
        return _Connection(self)

    def close(self) -> None:
        self.pool.close()

    def current_index(self) -> str:
        with self.connection() as conn:
            return conn.execute("SELECT value FROM facegate_meta WHERE key = 'current_index'").fetchone()[0]

    def switch_index(self, name: str) -> None:
        """Make `name` the index version that replicas open from now on (in one statement)."""
        with self.connection() as conn:
            conn.execute("UPDATE facegate_meta SET value = %s WHERE key = 'current_index'", (name,))

    def index_versions(self) -> dict[str, int]:
        with self.connection() as conn:
            return dict(conn.execute("SELECT index_version, COUNT(*) FROM facegate_templates "
                                     "GROUP BY index_version ORDER BY index_version").fetchall())


class _Connection:
    def __init__(self, db: PgDatabase):
        self.db = db
        self._cm = None

    def __enter__(self) -> psycopg.Connection:
        self._cm = self.db.pool.connection(timeout=5)
        try:
            return self._cm.__enter__()
        except (psycopg.OperationalError, PoolTimeout) as e:
            raise Unavailable(f"the store {self.db.location} cannot be reached: {e}") from None

    def __exit__(self, *exc):
        try:
            return self._cm.__exit__(*exc)
        except psycopg.OperationalError as e:
            raise Unavailable(f"the store {self.db.location} cannot be reached: {e}") from None


def _op_error(db: PgDatabase):
    """Map a lost connection in the middle of a statement to Unavailable."""
    class _Guard:
        def __enter__(self):
            return self

        def __exit__(self, typ, e, tb):
            if typ is not None and issubclass(typ, psycopg.OperationalError):
                raise Unavailable(f"the store {db.location} cannot be reached: {e}") from None
            return False
    return _Guard()


# ------------------------------------------------------------------------------------ templates
class PgTemplateStore:
    """TemplateStore's methods (index/template_store.py) on the shared rows, with an in-memory
    FAISS index that follows them (see the module's docstring)."""

    def __init__(self, db: PgDatabase, dim: int = 128, index_version: str | None = None, follow: bool = True,
                 catch_up_seconds: float = 1.0, index_kind: str = "auto"):
        self.db = db
        self.dim = dim
        self.location = db.location
        self.index_version = index_version or db.current_index()
        self.catch_up_seconds = catch_up_seconds
        self._lock = threading.RLock()
        self._gen = -1                 # the generation the in-memory index holds
        self.index = VectorIndex(dim, kind=index_kind)    # flat | hnsw | auto (index/vector_index.py)
        self._resync()
        self._stop = threading.Event()
        self._listener = None
        if follow:
            self._listening = threading.Event()
            self._listener = threading.Thread(target=self._listen, name="facegate-pg-listen", daemon=True)
            self._listener.start()
            self._listening.wait(10)

    # ------------------------------------------------------------------ following the rows
    def _resync(self) -> None:
        """Bring the index to the rows of one snapshot: add what it lacks, drop what is gone."""
        with self._lock, self.db.connection() as conn, _op_error(self.db):
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            gen = int(conn.execute("SELECT value FROM facegate_meta WHERE key = 'generation'").fetchone()[0])
            if gen == self._gen:
                return
            rows = conn.execute("SELECT id FROM facegate_templates WHERE index_version = %s",
                                (self.index_version,)).fetchall()
            want = {r[0] for r in rows}
            have = set(self.index.ids().tolist())
            gone, new = have - want, sorted(want - have)
            if gone:
                self.index.remove(sorted(gone))
            if new:
                self._add_rows(conn.execute(
                    "SELECT id, encoder_version, vector FROM facegate_templates WHERE id = ANY(%s) ORDER BY id",
                    (new,)).fetchall())
            if self._gen >= 0 and (gone or new):
                log.info("index %s caught up to generation %d: %d added, %d removed", self.index_version, gen,
                         len(new), len(gone))
            self._gen = gen

    def _add_rows(self, rows) -> None:
        by_tag: dict[str, tuple[list, list]] = {}
        for tid, tag, blob in rows:
            if tid in self.index:
                continue
            v = np.frombuffer(blob, np.float32)
            if v.size != self.dim:
                raise StoreError(f"{self.location}: template {tid} has {v.size} values, {self.dim} expected")
            ids, vecs = by_tag.setdefault(tag, ([], []))
            ids.append(tid)
            vecs.append(v)
        for tag, (ids, vecs) in by_tag.items():
            self.index.add(ids, np.stack(vecs), tag)

    def _apply(self, gen: int, index_version: str, op: str, ids: list[int], rows=None) -> None:
        """Generation `gen`'s change, if it is the next one; a gap is filled by a re-read."""
        with self._lock:
            if gen <= self._gen:
                return
            if gen > self._gen + 1:
                self._resync()
                return
            if index_version == self.index_version:
                if op == "del":
                    self.index.remove(ids)
                elif rows is not None:
                    self._add_rows(rows)
                else:
                    with self.db.connection() as conn, _op_error(self.db):
                        self._add_rows(conn.execute("SELECT id, encoder_version, vector FROM facegate_templates "
                                                    "WHERE id = ANY(%s) ORDER BY id", (ids,)).fetchall())
            self._gen = gen

    def _on_notify(self, payload: str) -> None:
        try:
            n = json.loads(payload)
            self._apply(int(n["g"]), n["v"], n["op"], [int(i) for i in n["ids"]])
        except (ValueError, KeyError, TypeError) as e:
            log.warning("unreadable template notification %r (%s): re-reading the ids", payload[:200], e)
            self._resync()

    def _listen(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.db.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._resync()              # what was written while nobody listened
                    self._listening.set()
                    backoff = 0.5
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=self.catch_up_seconds):
                            self._on_notify(n.payload)
                        self._resync()          # cheap when nothing changed: one SELECT
            except (psycopg.Error, FacegateError) as e:
                if self._stop.is_set():
                    return
                log.warning("template listener of %s: %s; reconnecting in %.1f s", self.location, e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception:       # never die silently: the index would stop following
                log.exception("template listener of %s failed; restarting it", self.location)
                self._stop.wait(backoff)

    # ------------------------------------------------------------------ writes
    def _write(self, conn, op: str, ids: list[int], index_version: str | None = None) -> int:
        version = index_version or self.index_version
        gen = int(conn.execute("UPDATE facegate_meta SET value = (value::bigint + 1)::text "
                               "WHERE key = 'generation' RETURNING value").fetchone()[0])
        conn.execute("SELECT pg_notify(%s, %s)",
                     (CHANNEL, json.dumps({"g": gen, "v": version, "op": op, "ids": ids})))
        return gen

    def erase_subject(self, subject: str) -> list[tuple[str, int]]:
        """Remove a subject from every index version of the store, in one transaction ->
        [(index_version, templates removed)], the served version first. Each version's removal is
        its own generation, so a replica serving any version follows it."""
        with self.db.connection() as conn, _op_error(self.db):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_TEMPLATES,))
            by_version: dict[str, list[int]] = {}
            for tid, version in conn.execute("DELETE FROM facegate_templates WHERE subject = %s "
                                             "RETURNING id, index_version", (subject,)):
                by_version.setdefault(version, []).append(tid)
            order = sorted(by_version, key=lambda v: (v != self.index_version, v))
            gens = [(self._write(conn, "del", by_version[v], v), v) for v in order]
        for gen, v in gens:
            self._apply(gen, v, "del", by_version[v])
        return [(v, len(by_version[v])) for v in order]

    def add(self, subject: str, vector: np.ndarray, photo_sha256: str, encoder_version: str) -> AddResult:
        """Durable when it returns (committed). The same photo for the same subject is not added twice."""
        if not subject:
            raise ValueError("subject id is empty")
        v = np.asarray(vector, np.float32).reshape(1, self.dim)
        self.index._check(v)    # refuse a bad vector before anything is written
        with self.db.connection() as conn, _op_error(self.db):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_TEMPLATES,))
            row = conn.execute("SELECT id FROM facegate_templates WHERE index_version = %s AND subject = %s "
                               "AND photo_sha256 = %s AND encoder_version = %s",
                               (self.index_version, subject, photo_sha256, encoder_version)).fetchone()
            if row:
                return AddResult(row[0], True)
            tid = conn.execute("INSERT INTO facegate_templates (index_version, subject, photo_sha256, "
                               "encoder_version, vector) VALUES (%s, %s, %s, %s, %s) RETURNING id",
                               (self.index_version, subject, photo_sha256, encoder_version,
                                v.tobytes())).fetchone()[0]
            gen = self._write(conn, "add", [tid])
        self._apply(gen, self.index_version, "add", [tid], [(tid, encoder_version, v.tobytes())])
        return AddResult(int(tid), False)

    def remove_subject(self, subject: str) -> int:
        with self.db.connection() as conn, _op_error(self.db):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_TEMPLATES,))
            ids = [r[0] for r in conn.execute("DELETE FROM facegate_templates WHERE index_version = %s AND "
                                              "subject = %s RETURNING id", (self.index_version, subject))]
            if not ids:
                return 0
            gen = self._write(conn, "del", ids)
        self._apply(gen, self.index_version, "del", ids)
        return len(ids)

    # ------------------------------------------------------------------ reads
    def _rows(self, sql: str, params=()) -> list[tuple]:
        with self.db.connection() as conn, _op_error(self.db):
            return conn.execute(sql, params).fetchall()

    def has_subject(self, subject: str) -> bool:
        return bool(self._rows("SELECT 1 FROM facegate_templates WHERE index_version = %s AND subject = %s LIMIT 1",
                               (self.index_version, subject)))

    def template_counts(self, subjects: list[str] | None = None) -> dict[str, int]:
        if subjects is None:
            return dict(self._rows("SELECT subject, COUNT(*) FROM facegate_templates WHERE index_version = %s "
                                   "GROUP BY subject", (self.index_version,)))
        subjects = sorted(set(subjects))
        if not subjects:
            return {}
        return dict(self._rows("SELECT subject, COUNT(*) FROM facegate_templates WHERE index_version = %s "
                               "AND subject = ANY(%s) GROUP BY subject", (self.index_version, subjects)))

    def subject_vectors(self, subject: str, encoder_version: str) -> np.ndarray:
        rows = self._rows("SELECT vector FROM facegate_templates WHERE index_version = %s AND subject = %s "
                          "AND encoder_version = %s", (self.index_version, subject, encoder_version))
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([np.frombuffer(r[0], np.float32) for r in rows])

    def vectors(self, encoder_version: str) -> tuple[list[str], np.ndarray]:
        rows = self._rows("SELECT subject, vector FROM facegate_templates WHERE index_version = %s AND "
                          "encoder_version = %s ORDER BY id", (self.index_version, encoder_version))
        if not rows:
            return [], np.zeros((0, self.dim), np.float32)
        return [r[0] for r in rows], np.stack([np.frombuffer(r[1], np.float32) for r in rows])

    def search(self, vector: np.ndarray, k: int, encoder_version: str) -> list[Neighbour]:
        """The k nearest templates that still exist: a hit whose row another replica has just
        deleted (its notification not yet applied here) is skipped."""
        with self._lock:
            dist, ids = self.index.search(np.asarray(vector, np.float32).reshape(1, -1), k, tag=encoder_version)
        found = [(int(i), float(d)) for i, d in zip(ids[0], dist[0]) if i >= 0]
        if not found:
            return []
        rows = {r[0]: r[1:] for r in self._rows("SELECT id, subject, vector FROM facegate_templates WHERE id = ANY(%s)",
                                                ([i for i, _ in found],))}
        return [Neighbour(i, rows[i][0], d, np.frombuffer(rows[i][1], np.float32)) for i, d in found if i in rows]

    def encoder_versions(self) -> set[str]:
        return {r[0] for r in self._rows("SELECT DISTINCT encoder_version FROM facegate_templates "
                                         "WHERE index_version = %s", (self.index_version,))}

    def status(self) -> dict:
        with self.db.connection() as conn, _op_error(self.db):
            subjects, templates = conn.execute(
                "SELECT COUNT(DISTINCT subject), COUNT(*) FROM facegate_templates WHERE index_version = %s",
                (self.index_version,)).fetchone()
            gen = int(conn.execute("SELECT value FROM facegate_meta WHERE key = 'generation'").fetchone()[0])
        return {"subjects": subjects, "templates": templates, "index_version": self.index_version,
                "generation": gen, "encoder_versions": sorted(self.encoder_versions()), "in_index": len(self.index)}

    def check(self) -> None:
        """Index and rows agree (after catching up): the same ids, and the same vectors."""
        self._resync()
        with self._lock:
            rows = dict(self._rows("SELECT id, vector FROM facegate_templates WHERE index_version = %s",
                                   (self.index_version,)))
            if set(rows) != set(self.index.ids().tolist()):
                raise StoreError(f"{self.location}: the index and the template rows hold different ids")
            for tid, blob in rows.items():
                if not np.array_equal(self.index.reconstruct(tid), np.frombuffer(blob, np.float32)):
                    raise StoreError(f"{self.location}: template {tid} differs between the index and the rows")

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=self.catch_up_seconds + 5)


# ------------------------------------------------------------------------------------ thresholds
class PgThresholdStore(ThresholdStore):
    """ThresholdStore's methods (service/thresholds.py) on a table: one row per site and key."""

    def __init__(self, db: PgDatabase):
        self.db = db
        self.path = db.location       # named in messages, as the file store names its file

    def _read(self) -> dict:
        with self.db.connection() as conn, _op_error(self.db):
            rows = conn.execute("SELECT site, key, entry FROM facegate_thresholds").fetchall()
        data: dict = {}
        for site, key, entry in rows:
            data.setdefault(site, {})[key] = entry
        return data

    def put(self, site: str, profile: str, threshold: float, encoder_version: str, kind: str = "verify",
            **info) -> dict:
        key = self._key(profile, kind)
        entry = {"threshold": float(threshold), "encoder_version": encoder_version,
                 "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info}
        with self.db.connection() as conn, _op_error(self.db):
            conn.execute("INSERT INTO facegate_thresholds VALUES (%s, %s, %s) ON CONFLICT (site, key) "
                         "DO UPDATE SET entry = EXCLUDED.entry", (site, key, Jsonb(entry)))
        return entry

    def entry(self, site: str, profile: str, kind: str = "verify") -> dict | None:
        with self.db.connection() as conn, _op_error(self.db):
            row = conn.execute("SELECT entry FROM facegate_thresholds WHERE site = %s AND key = %s",
                               (site, self._key(profile, kind))).fetchone()
        return row[0] if row else None

    def store_option(self) -> str:
        return "--store URL"


# ------------------------------------------------------------------------------------ sites
class PgSiteStore:
    """SiteStore's methods (service/sites.py) on a table: one row per site."""

    def __init__(self, db: PgDatabase):
        self.db = db
        self.path = db.location

    def get(self, site: str) -> SitePolicy:
        with self.db.connection() as conn, _op_error(self.db):
            row = conn.execute("SELECT policy FROM facegate_sites WHERE site = %s", (site,)).fetchone()
        try:
            return SitePolicy(**(row[0] if row else {}))
        except TypeError as e:
            raise SiteError(f"{self.path}: site {site!r} has an unknown setting: {e}") from None

    def put(self, site: str, **changes) -> SitePolicy:
        with self.db.connection() as conn, _op_error(self.db):
            row = conn.execute("SELECT policy FROM facegate_sites WHERE site = %s FOR UPDATE", (site,)).fetchone()
            policy = SitePolicy(**{**(row[0] if row else {}), **changes})
            conn.execute("INSERT INTO facegate_sites VALUES (%s, %s) ON CONFLICT (site) "
                         "DO UPDATE SET policy = EXCLUDED.policy", (site, Jsonb(asdict(policy))))
        return policy

    def sites(self) -> list[str]:
        with self.db.connection() as conn, _op_error(self.db):
            return [r[0] for r in conn.execute("SELECT site FROM facegate_sites ORDER BY site")]

    own = sites

    def in_force(self, site: str, default_site: str) -> tuple[SitePolicy, str | None]:
        """As SiteStore.in_force: the site's own policy, else the default site's, else the defaults."""
        with self.db.connection() as conn, _op_error(self.db):
            rows = dict(conn.execute("SELECT site, policy FROM facegate_sites WHERE site = ANY(%s)",
                                     ([site, default_site],)).fetchall())
        source = site if site in rows else default_site if default_site in rows else None
        if source is None:
            return SitePolicy(), None
        try:
            return SitePolicy(**rows[source]), source
        except TypeError as e:
            raise SiteError(f"{self.path}: site {source!r} has an unknown setting: {e}") from None


# ------------------------------------------------------------------------------------ audit
def line_hash(line: str) -> str:
    """The hash a line's successor carries as its `prev`: the line's own `hash` (service/audit.py:
    SHA-256 of its canonical JSON without `hash`), recomputed when the line carries none."""
    import json

    from .audit import line_hash as entry_hash

    entry = json.loads(line)
    return entry.get("hash") or entry_hash(entry)


class PgAuditLines:
    """The audit's AuditLines (service/audit.py) on a table: append under the audit's advisory
    lock (one appender at a time across every replica), lines oldest first."""

    def __init__(self, db: PgDatabase, owns_db: bool = False):
        self.db = db
        self.location = db.location
        self._owns_db = owns_db

    @classmethod
    def from_url(cls, url: str) -> "PgAuditLines":
        """For `facegate audit verify --store URL`: its own small pool, closed by close()."""
        return cls(PgDatabase(url, max_size=2), owns_db=True)

    def append(self, build: Callable[[str], str]) -> None:
        """Durable (committed) when it returns. build(prev_hash) -> one JSON line, no newline."""
        with self.db.connection() as conn, _op_error(self.db):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_AUDIT,))
            row = conn.execute("SELECT hash FROM facegate_audit ORDER BY seq DESC LIMIT 1").fetchone()
            line = build(row[0] if row else GENESIS)
            if "\n" in line or "\r" in line:
                raise ValueError("an audit line must be one line (no newline)")
            conn.execute("INSERT INTO facegate_audit (line, hash) VALUES (%s, %s)", (line, line_hash(line)))

    def lines(self) -> Iterator[str]:
        """Every line, oldest first, read in batches (a server-side cursor: any length)."""
        with self.db.connection() as conn, _op_error(self.db):
            with conn.cursor(name="facegate_audit_lines") as cur:
                cur.itersize = 2000
                cur.execute("SELECT line FROM facegate_audit ORDER BY seq")
                for (line,) in cur:
                    yield line

    def key(self) -> bytes:
        """The HMAC key of the audit's pseudonyms, in its own table (made on first use)."""
        return audit_key(self.db)

    def close(self) -> None:
        if self._owns_db:
            self.db.close()


def audit_key(db: PgDatabase) -> bytes:
    """The audit's pseudonym key: 32 random bytes, made once by whichever replica asks first."""
    with db.connection() as conn, _op_error(db):
        conn.execute("INSERT INTO facegate_audit_key (id, key) VALUES (1, %s) ON CONFLICT (id) DO NOTHING",
                     (secrets.token_bytes(32),))
        return bytes(conn.execute("SELECT key FROM facegate_audit_key WHERE id = 1").fetchone()[0])
