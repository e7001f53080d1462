"""The PostgreSQL store (service/pg_store.py) against a real PostgreSQL (pgtest.py): the schema,
templates and the FAISS index each replica keeps following the rows, thresholds, site policies,
and the audit lines appended under one lock by many writers at once."""
from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import psycopg
import pytest

from index.template_store import StoreError
from pgtest import fresh_database
from service.errors import Unavailable
from service.pg_store import (GENESIS, PgAuditLines, PgDatabase, PgSiteStore, PgTemplateStore, PgThresholdStore,
                              audit_key, redact)
from service.sites import SiteError, SitePolicy
from service.audit import AuditLog, line_hash, verify_chain
from service.stores import open_stores_at
from service.thresholds import ThresholdError


@pytest.fixture
def url():
    with fresh_database() as u:
        yield u


@pytest.fixture
def db(url):
    d = PgDatabase(url)
    yield d
    d.close()


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


def wait_for(predicate, seconds: float = 5.0) -> float:
    """Poll until predicate() -> the seconds it took; fails after `seconds`."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > seconds:
            pytest.fail(f"not within {seconds} s")
        time.sleep(0.005)
    return time.monotonic() - t0


# ------------------------------------------------------------------------------------ schema
def test_the_schema_is_made_once_by_replicas_starting_together(url):
    dbs, errors = [], []

    def start():
        try:
            dbs.append(PgDatabase(url, max_size=2))
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(dbs) == 6
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT value FROM facegate_meta WHERE key = 'schema'").fetchone()[0] == "1"
            assert conn.execute("SELECT COUNT(*) FROM facegate_meta WHERE key = 'generation'").fetchone()[0] == 1
    finally:
        for d in dbs:
            d.close()


def test_a_store_of_another_schema_version_is_refused(url):
    PgDatabase(url).close()
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE facegate_meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(StoreError, match="schema 99"):
        PgDatabase(url)


@pytest.mark.slow
def test_an_unreachable_store_is_unavailable_and_names_it_without_its_password():
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as e:
        PgDatabase(f"postgresql://facegate:secret@127.0.0.1:{port}/facegate", connect_timeout=2)
    assert time.monotonic() - t0 < 10
    assert f"postgresql://facegate@127.0.0.1:{port}/facegate" in e.value.message and "secret" not in e.value.message
    with pytest.raises(StoreError, match="postgresql://"):
        open_stores_at(store="mysql://localhost/facegate")
    assert redact("postgresql://u:pw@h:1/d") == "postgresql://u@h:1/d"


# ------------------------------------------------------------------------------------ templates
def test_templates_add_search_remove_and_read_back(db):
    s = PgTemplateStore(db, follow=False)
    va, vb = unit(1), unit(2)
    r = s.add("alice", va, "sha-a1", "enc")
    assert not r.already_enrolled
    assert s.add("alice", va, "sha-a1", "enc") == r.__class__(r.template_id, True)   # a job sent again
    s.add("alice", unit(3), "sha-a2", "enc")
    s.add("bob", vb, "sha-b1", "enc")
    s.add("carol", unit(4), "sha-c1", "enc-old")           # another encoder: never compared
    with pytest.raises(ValueError, match="L2-normalised"):
        s.add("dave", va * 2, "sha-d", "enc")
    assert not s.has_subject("dave")

    nb = s.search(va, 3, "enc")
    assert nb[0].subject == "alice" and nb[0].distance == pytest.approx(0, abs=1e-5)
    assert {n.subject for n in nb} == {"alice", "bob"}
    assert s.template_counts() == {"alice": 2, "bob": 1, "carol": 1}
    assert s.template_counts(["bob", "nobody"]) == {"bob": 1}
    d = np.linalg.norm(s.subject_vectors("alice", "enc") - va, axis=1)
    assert sorted(d)[0] == pytest.approx(0, abs=1e-5) and len(d) == 2
    subjects, vecs = s.vectors("enc")
    assert subjects == ["alice", "alice", "bob"] and vecs.shape == (3, 128)
    assert s.encoder_versions() == {"enc", "enc-old"}
    st = s.status()
    assert (st["subjects"], st["templates"], st["in_index"], st["index_version"]) == (3, 4, 4, "initial")
    s.check()

    gen = st["generation"]
    assert s.remove_subject("alice") == 2 and s.remove_subject("alice") == 0
    assert [n.subject for n in s.search(va, 3, "enc")] == ["bob"]
    assert s.status()["generation"] == gen + 1            # a remove that removed nothing is not a write
    s.check()


def test_index_versions_are_a_column_and_the_switch_is_one_statement(db):
    old = PgTemplateStore(db, follow=False)
    old.add("alice", unit(1), "sha", "enc-1")
    new = PgTemplateStore(db, index_version="enc-2", follow=False)
    assert new.status()["templates"] == 0 and new.search(unit(1), 3, "enc-1") == []
    new.add("alice", unit(2), "sha", "enc-2")
    assert db.index_versions() == {"enc-2": 1, "initial": 1}
    assert db.current_index() == "initial"
    db.switch_index("enc-2")
    assert PgTemplateStore(db, follow=False).encoder_versions() == {"enc-2"}


def test_erasure_removes_a_subject_from_every_index_version(db):
    served = PgTemplateStore(db, follow=False)
    served.add("alice", unit(1), "sha-a", "enc-1")
    served.add("alice", unit(2), "sha-b", "enc-1")
    served.add("bob", unit(3), "sha-c", "enc-1")
    older = PgTemplateStore(db, index_version="enc-0", follow=False)
    older.add("alice", unit(4), "sha-a", "enc-0")
    assert served.erase_subject("alice") == [("initial", 2), ("enc-0", 1)]      # the served version first
    assert db.index_versions() == {"initial": 1}
    assert [n.subject for n in served.search(unit(1), 3, "enc-1")] == ["bob"]
    assert served.erase_subject("alice") == []


def test_every_replica_follows_an_enrollment_within_2_s_and_a_delete_never_fails_it(url):
    a_db, b_db = PgDatabase(url), PgDatabase(url)
    a, b = PgTemplateStore(a_db), PgTemplateStore(b_db)
    try:
        v = unit(7)
        a.add("alice", v, "sha-1", "enc")
        took = wait_for(lambda: [n.subject for n in b.search(v, 3, "enc")] == ["alice"], 2.0)
        print(f"\nreplica B found A's enrollment after {took * 1000:.1f} ms")
        # delete through A: B answers from the rows at once, before its index has caught up
        assert a.remove_subject("alice") == 1
        assert b.search(v, 3, "enc") == [] and not b.has_subject("alice")
        assert b.subject_vectors("alice", "enc").size == 0
        wait_for(lambda: len(b.index) == 0, 2.0)
        b.check()
    finally:
        a.close()
        b.close()
        a_db.close()
        b_db.close()


def test_a_stale_index_skips_a_hit_whose_row_is_gone(db):
    a = PgTemplateStore(db, follow=False)
    v = unit(8)
    a.add("alice", v, "sha-1", "enc")
    b = PgTemplateStore(db, follow=False)          # holds alice, and follows nothing
    a.remove_subject("alice")
    assert 1 in b.index                             # still in b's FAISS index...
    assert b.search(v, 3, "enc") == []              # ...but never answered


def test_a_missed_notification_is_caught_up_by_the_generation_check(url):
    db = PgDatabase(url)
    b = PgTemplateStore(db, catch_up_seconds=0.5)
    try:
        v = unit(9)
        with psycopg.connect(url) as conn:          # a write whose NOTIFY nobody hears
            conn.execute("INSERT INTO facegate_templates (index_version, subject, photo_sha256, encoder_version, "
                         "vector) VALUES ('initial', 'alice', 'sha', 'enc', %s)", (v.tobytes(),))
            conn.execute("UPDATE facegate_meta SET value = (value::bigint + 1)::text WHERE key = 'generation'")
        wait_for(lambda: [n.subject for n in b.search(v, 1, "enc")] == ["alice"], 2.0)
        # a notification after a gap (generation + 2) re-reads the ids instead of applying blindly
        with psycopg.connect(url) as conn:
            conn.execute("DELETE FROM facegate_templates")
            conn.execute("UPDATE facegate_meta SET value = (value::bigint + 2)::text WHERE key = 'generation'")
        gen = b.status()["generation"]
        b._on_notify(json.dumps({"g": gen, "v": "initial", "op": "add", "ids": [12345]}))
        assert len(b.index) == 0 and b._gen == gen
        b._on_notify("not json")                    # an unreadable one: a re-read, no crash
    finally:
        b.close()
        db.close()


@pytest.mark.slow
def test_the_listener_reconnects_and_catches_up_after_its_connection_is_killed(url):
    a_db, b_db = PgDatabase(url), PgDatabase(url)
    a, b = PgTemplateStore(a_db), PgTemplateStore(b_db, catch_up_seconds=0.3)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            n = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%' "
                             "AND datname = current_database()").fetchall()
        assert len(n) == 2                          # both listeners were cut off
        v = unit(10)
        a.add("alice", v, "sha", "enc")
        wait_for(lambda: [x.subject for x in b.search(v, 1, "enc")] == ["alice"], 5.0)
    finally:
        a.close()
        b.close()
        a_db.close()
        b_db.close()


# ------------------------------------------------------------------------------------ thresholds and sites
def test_thresholds(db):
    t = PgThresholdStore(db)
    assert t.get("door-1", "day", "enc") is None
    t.put("door-1", "day", 0.61, "enc", far=0.001)
    t.put("door-1", "day", 0.52, "enc", kind="identify")
    t.put("door-1", "night", 0.3, "enc", kind="too_dark")
    assert t.get("door-1", "day", "enc") == 0.61 and t.get("door-1", "day", "enc", "identify") == 0.52
    assert t.entry("door-1", "day")["far"] == 0.001
    t.put("door-1", "day", 0.58, "enc")                     # recalibrated: replaced
    assert PgThresholdStore(db).get("door-1", "day", "enc") == 0.58
    assert t.stale("enc") == [] and t.stale("enc-2") == ["door-1/day", "door-1/identify/day", "door-1/too_dark"]
    with pytest.raises(ThresholdError, match="calibrated for encoder enc, not enc-2"):
        t.get("door-1", "day", "enc-2")
    with pytest.raises(ValueError, match="kind"):
        t.put("door-1", "day", 0.5, "enc", kind="loose")


def test_site_policies(db):
    s = PgSiteStore(db)
    assert s.get("lab") == SitePolicy()
    assert s.put("lab", trigger_word=True) == SitePolicy(trigger_word=True)
    assert s.put("lab", several_faces="central_face") == SitePolicy(True, "central_face")   # merged
    assert PgSiteStore(db).get("lab") == SitePolicy(True, "central_face")
    with pytest.raises(SiteError, match="several_faces"):
        s.put("lab", several_faces="everyone")
    assert s.get("lab") == SitePolicy(True, "central_face") and s.sites() == ["lab"]
    with psycopg.connect(db.url) as conn:
        conn.execute("""UPDATE facegate_sites SET policy = '{"laser": true}'""")
    with pytest.raises(SiteError, match="unknown setting"):
        s.get("lab")


# ------------------------------------------------------------------------------------ audit
def build(n: int, who: str):
    def line(prev: str) -> str:
        entry = {"n": n, "who": who, "prev": prev}
        return json.dumps({**entry, "hash": line_hash(entry)})
    return line


def chain_of(lines: list[str]) -> None:
    """Each line carries the hash of the line before (service/audit.py's chain)."""
    check = verify_chain(lines)
    assert check.intact, check


def test_audit_lines_are_one_chain_under_many_writers_of_several_replicas(url):
    dbs = [PgDatabase(url, max_size=4) for _ in range(3)]          # three replicas' pools
    logs = [PgAuditLines(d) for d in dbs]
    try:
        assert list(logs[0].lines()) == []

        def writer(log, who):
            for n in range(20):
                log.append(build(n, who))

        threads = [threading.Thread(target=writer, args=(logs[i % 3], f"w{i}")) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        lines = list(logs[1].lines())
        assert len(lines) == 120
        chain_of(lines)
        for i in range(6):      # each writer's own lines in its own order
            assert [json.loads(x)["n"] for x in lines if json.loads(x)["who"] == f"w{i}"] == list(range(20))
    finally:
        for d in dbs:
            d.close()


def test_an_audit_append_that_fails_writes_nothing(db):
    log = PgAuditLines(db)
    log.append(build(0, "a"))

    def broken(prev):
        raise RuntimeError("no line")

    with pytest.raises(RuntimeError):
        log.append(broken)
    with pytest.raises(ValueError, match="one line"):
        log.append(lambda prev: '{"a": 1}\n{"b": 2}')
    log.append(build(1, "a"))
    lines = list(log.lines())
    assert [json.loads(x)["n"] for x in lines] == [0, 1]
    chain_of(lines)


def test_audit_lines_from_url_and_the_pseudonym_key(url):
    log = PgAuditLines.from_url(url)
    try:
        audit = AuditLog(log, log.key())                   # the pipeline's audit on this store
        audit.record("Identify", site="lab", decision="REJECT")
        audit.record("Enroll", subject="alice")
        lines = list(log.lines())
        assert [json.loads(x)["event"] for x in lines] == ["Identify", "Enroll"]
        assert "alice" not in "".join(lines)                # a pseudonym, from the start
        chain_of(lines)
        key = log.key()
        assert len(key) == 32
        other = PgDatabase(url)
        try:
            assert audit_key(other) == key                  # made once, the same for every replica
        finally:
            other.close()
    finally:
        log.close()


def test_open_stores_at_gives_the_shared_kind(url):
    stores = open_stores_at(store=url, follow=False)
    try:
        assert isinstance(stores.templates, PgTemplateStore) and isinstance(stores.thresholds, PgThresholdStore)
        assert isinstance(stores.sites, PgSiteStore) and isinstance(stores.audit_lines, PgAuditLines)
        stores.audit.record("DeleteSubject", removed=1)
        assert json.loads(next(stores.audit_lines.lines()))["prev"] == GENESIS
    finally:
        stores.close()


# ------------------------------------------------------------------------------------ reindex
@pytest.mark.slow
def test_reindex_into_a_new_index_version_of_the_store_and_switch(url, lfw, tmp_path):
    """The upgrade path on the shared store: the new encoder's index version is written beside
    the old one's (a column), switched to in one statement; a replica of the other encoder is refused."""
    import torch

    from encoder.checkpoint import DEFAULT_CHECKPOINT, record_in_checkpoint
    from service.errors import FailedPrecondition
    from service.reindex import reindex
    from service.server import build_deps
    from service.settings import Settings

    src = tmp_path / "id-photos"
    for person, n in [("Abdullah_Gul", 2), ("Tom_Cruise", 1)]:
        (src / person).mkdir(parents=True)
        for p in sorted((lfw / "images" / person).glob("*.jpg"))[:n]:
            (src / person / p.name).write_bytes(p.read_bytes())
    new_ckpt = tmp_path / "new.pt"            # the same weights, other preprocessing: another encoder version
    new_ckpt.write_bytes(DEFAULT_CHECKPOINT.read_bytes())
    flip = torch.load(new_ckpt, weights_only=True)["preprocessing"].get("flip_average", False)
    record_in_checkpoint(new_ckpt, flip_average=not flip, threshold=0.9, identify_threshold=0.8)

    old = reindex(src, None, None, store_url=url)
    assert old["accepted"] == 3 and old["switched"]
    new = reindex(src, None, new_ckpt, store_url=url)
    assert new["accepted"] == 3 and new["index"] != old["index"]
    db = PgDatabase(url)
    try:
        assert db.current_index() == new["index"] and db.index_versions() == {old["index"]: 3, new["index"]: 3}
        with pytest.raises(FailedPrecondition, match="facegate reindex PHOTO_DIR --store"):
            build_deps(Settings(store=url, worker_processes=False))         # the old encoder is refused now
        deps = build_deps(Settings(store=url, checkpoint=new_ckpt, worker_processes=False))
        try:
            assert deps.pipeline.status()["templates"] == 3
            assert deps.pipeline.status()["index_version"] == new["index"]
        finally:
            deps.stores.close()
        db.switch_index(old["index"])                            # rollback is one switch
        assert PgTemplateStore(db, follow=False).encoder_versions() == {old["encoder_version"]}
    finally:
        db.close()
