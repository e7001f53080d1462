"""The hash-chained audit (service/audit.py): the chain, each kind of tampering found at its line,
`facegate audit verify`'s exit codes and JSON, concurrent appends from several processes, a torn
tail, pseudonyms instead of subject ids, the caller; then real RPCs through a real server and
the receipt of a deletion across two index versions."""
from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import stat
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from fakes import face, fake_pipeline, photo

from facegate.v1 import facegate_pb2 as pb
from facegate.v1 import facegate_pb2_grpc as pb_grpc
from service.audit import (GENESIS, AuditError, AuditLog, FileAuditLines, load_or_create_key, open_audit_lines,
                           verify_chain)
from service.caller import Caller, current_caller
from service.cli import main

ROOT = Path(__file__).resolve().parents[2]
RED, BLUE = photo(face("red")), photo(face("blue"))


def audit_log(folder: Path) -> AuditLog:
    return AuditLog(FileAuditLines(folder / "audit.jsonl"), load_or_create_key(folder / "audit.key"))


def written(folder: Path, n: int = 6) -> list[str]:
    log = audit_log(folder)
    for i in range(n):
        log.record("Verify", subject=f"student-{i}", decision="ACCEPT", distance=0.1 * i)
    return (folder / "audit.jsonl").read_text().splitlines()


def verify_cli(capsys, *args) -> tuple[int, dict]:
    capsys.readouterr()
    rc = main(["audit", "verify", *args, "--json"])
    return rc, json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------------------------------- the chain
def test_each_line_carries_the_hash_of_the_line_before_and_its_own(tmp_path):
    lines = [json.loads(x) for x in written(tmp_path, 3)]
    assert [e["prev"] for e in lines] == [GENESIS, lines[0]["hash"], lines[1]["hash"]]
    for e in lines:
        body = {k: v for k, v in e.items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert e["hash"] == hashlib.sha256(canonical).hexdigest()
        assert (e["event"], e["caller"], e["decision"]) == ("Verify", "local", "ACCEPT")
        assert e["ts"].endswith("Z") and e["ts"][10] == "T"                # RFC 3339, UTC
    r = verify_chain(FileAuditLines(tmp_path / "audit.jsonl").lines())
    assert (r.intact, r.lines, r.first_bad_line, r.last_hash) == (True, 3, None, lines[-1]["hash"])


def edit(lines):
    e = json.loads(lines[2])
    e["decision"] = "REJECT"                          # the hash is left as it was
    lines[2] = json.dumps(e)
    return lines


def edit_and_rehash(lines):
    from service.audit import line_hash

    e = json.loads(lines[2])
    e["decision"] = "REJECT"
    e["hash"] = line_hash(e)                          # consistent in itself: the next line's prev betrays it
    lines[2] = json.dumps(e)
    return lines


TAMPERING = {
    "edited": (edit, 3, "edited"),
    "edited, its hash recomputed": (edit_and_rehash, 4, "removed"),
    "removed": (lambda x: x[:2] + x[3:], 3, "removed"),
    "the first removed": (lambda x: x[1:], 1, "removed"),
    "reordered": (lambda x: x[:2] + [x[3], x[2]] + x[4:], 3, "reordered"),
    "duplicated": (lambda x: x[:3] + [x[2]] + x[3:], 4, "duplicated"),
    "a line cut short": (lambda x: x[:2] + [x[2][:40]] + x[3:], 3, "malformed"),
    "a torn last line": (lambda x: x[:5] + [x[5][:-30]], 6, "malformed"),
    "not JSON": (lambda x: x[:4] + ["hello"] + x[5:], 5, "malformed"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_audit_verify_names_the_first_bad_line_and_what_is_wrong(tmp_path, capsys, case):
    change, line, problem = TAMPERING[case]
    lines = written(tmp_path)
    rc, r = verify_cli(capsys, "--data-dir", str(tmp_path))
    assert (rc, r["intact"], r["lines"], r["problem"]) == (0, True, 6, None)
    text = "\n".join(change(list(lines)))
    (tmp_path / "audit.jsonl").write_text(text + ("" if case == "a torn last line" else "\n"))
    rc, r = verify_cli(capsys, "--data-dir", str(tmp_path))
    assert (rc, r["intact"], r["first_bad_line"], r["problem"]) == (1, False, line, problem), r["detail"]
    assert r["lines"] == len(text.splitlines()) and str(line) in r["detail"]


def test_the_newest_lines_removed_are_caught_against_a_hash_kept_elsewhere(tmp_path, capsys):
    written(tmp_path)
    rc, r = verify_cli(capsys, "--data-dir", str(tmp_path))
    assert rc == 0 and r["intact"] and r["lines"] == 6
    kept = r["last_hash"]                                          # e.g. in the ticket of the day
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    (tmp_path / "audit.jsonl").write_text("\n".join(lines[:4]) + "\n")
    assert verify_cli(capsys, "--data-dir", str(tmp_path))[0] == 0          # the chain alone cannot tell
    rc, r = verify_cli(capsys, "--data-dir", str(tmp_path), "--expect", kept)
    assert (rc, r["problem"], r["first_bad_line"], r["lines"]) == (1, "truncated", 5, 4)


def test_audit_verify_errors_exit_2(tmp_path, capsys):
    rc, r = verify_cli(capsys, "--data-dir", str(tmp_path))                  # a folder with no audit yet
    assert rc == 2 and r["error"]["code"] == "FAILED_PRECONDITION" and "audit.jsonl" in r["error"]["message"]
    rc, r = verify_cli(capsys, "--data-dir", str(tmp_path / "nowhere"))
    assert rc == 2 and "not a folder" in r["error"]["message"]
    rc, r = verify_cli(capsys)
    assert rc == 2 and "--data-dir" in r["error"]["message"]
    rc, r = verify_cli(capsys, "--store", "postgresql://facegate:secret@db/facegate")
    assert rc == 2 and "db/facegate" in r["error"]["message"] and "secret" not in r["error"]["message"]
    (tmp_path / "audit.jsonl").write_text("")                                  # empty: intact
    rc, r = verify_cli(capsys, "--data-dir", str(tmp_path))
    assert (rc, r["intact"], r["lines"], r["last_hash"]) == (0, True, 0, GENESIS)


def test_audit_pseudonym_needs_the_folders_key(tmp_path, capsys):
    capsys.readouterr()
    assert main(["audit", "pseudonym", "--data-dir", str(tmp_path), "ann", "--json"]) == 2
    assert "no audit key" in json.loads(capsys.readouterr().out)["error"]["message"]
    assert not (tmp_path / "audit.key").exists()                  # never made by a look-up


def test_open_audit_lines_names_the_data_folders_file_and_refuses_another_store(tmp_path):
    assert open_audit_lines(tmp_path).path == tmp_path / "audit.jsonl"
    with pytest.raises(AuditError, match="postgresql://"):     # PostgreSQL's audit: tests/service/test_pg_store.py
        open_audit_lines(store="mysql://db/facegate")


# ------------------------------------------------------------------------------ appends, torn tails
def _append_many(folder: str, who: int, n: int):
    log = audit_log(Path(folder))
    for i in range(n):
        log.record("Enroll", subject=f"p{who}-{i}", status="ACCEPTED")


def test_appends_from_several_processes_and_threads_make_one_chain(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 25)) for w in range(4)]
    threads = [threading.Thread(target=_append_many, args=(str(tmp_path), 10 + w, 25)) for w in range(2)]
    for p in procs + threads:
        p.start()
    for p in procs + threads:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    r = verify_chain(FileAuditLines(tmp_path / "audit.jsonl").lines())
    assert (r.intact, r.lines) == (True, 150), r.detail
    key = load_or_create_key(tmp_path / "audit.key")             # one key, though six writers began at once
    from service.audit import pseudonym

    subjects = {json.loads(x)["subject"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()}
    assert subjects == {pseudonym(key, f"p{w}-{i}") for w in [0, 1, 2, 3, 10, 11] for i in range(25)}


def test_a_torn_last_line_is_reported_then_moved_aside_by_the_next_append(tmp_path, capsys):
    lines = written(tmp_path, 3)
    with open(tmp_path / "audit.jsonl", "a") as f:
        f.write(lines[1][:50])                                    # a crash in the middle of a write
    rc, r = verify_cli(capsys, "--data-dir", str(tmp_path))
    assert (rc, r["first_bad_line"], r["problem"]) == (1, 4, "malformed")
    entry = audit_log(tmp_path).record("Identify", subject=None, decision="REJECT")
    rc, r = verify_cli(capsys, "--data-dir", str(tmp_path))
    assert (rc, r["lines"], r["last_hash"]) == (0, 4, entry["hash"])
    assert entry["prev"] == json.loads(lines[2])["hash"]
    torn = [json.loads(x) for x in (tmp_path / "audit.jsonl.torn").read_text().splitlines()]
    assert [(t["fragment"], t["offset"]) for t in torn] == [(lines[1][:50], sum(len(x) + 1 for x in lines))]


def test_nothing_is_chained_to_a_complete_last_line_that_is_not_an_entry(tmp_path):
    written(tmp_path, 2)
    with open(tmp_path / "audit.jsonl", "a") as f:
        f.write("{\"edited\": true}\n")
    before = (tmp_path / "audit.jsonl").read_bytes()
    with pytest.raises(AuditError, match="audit verify"):
        audit_log(tmp_path).record("Verify", subject="ann")
    assert (tmp_path / "audit.jsonl").read_bytes() == before


def test_the_key_is_made_once_private_and_checked(tmp_path):
    k = load_or_create_key(tmp_path / "audit.key")
    assert len(k) == 32 and load_or_create_key(tmp_path / "audit.key") == k
    assert stat.S_IMODE((tmp_path / "audit.key").stat().st_mode) == 0o600
    (tmp_path / "bad.key").write_text("not hex")
    with pytest.raises(AuditError, match="bad.key"):
        load_or_create_key(tmp_path / "bad.key")


def test_no_photo_embedding_or_audio_and_no_reserved_field(tmp_path):
    log = audit_log(tmp_path)
    for value in (b"\xff\xd8 a jpeg", np.zeros(128, np.float32), {"nested": bytearray(b"RIFF")}):
        with pytest.raises(TypeError, match="no photo, embedding or audio"):
            log.record("Enroll", subject="ann", extra=value)
    with pytest.raises(ValueError, match="reserved"):
        log.record("Enroll", prev="0" * 64)
    assert not (tmp_path / "audit.jsonl").exists() or (tmp_path / "audit.jsonl").read_text() == ""


# ----------------------------------------------------------------------- the pipeline's lines
def test_subject_ids_appear_only_as_pseudonyms(tmp_path, capsys):
    p = fake_pipeline(tmp_path)
    assert p.enroll("stu-4711-ann", RED).status == "ACCEPTED"
    assert p.enroll("stu-4712-bob", RED).duplicates                  # the same face: a duplicate warning
    p.verify("stu-4711-ann", RED)
    p.identify(RED)
    assert p.delete("stu-4712-bob").removed == 1
    text = (tmp_path / "audit.jsonl").read_text()
    assert "stu-47" not in text and "ann" not in text and "bob" not in text
    entries = [json.loads(x) for x in text.splitlines()]
    assert [e["event"] for e in entries] == ["Enroll", "Enroll", "Verify", "Identify", "DeleteSubject"]
    capsys.readouterr()
    assert main(["audit", "pseudonym", "--data-dir", str(tmp_path), "stu-4711-ann", "--json"]) == 0
    ann = json.loads(capsys.readouterr().out)["pseudonym"]
    bob = p.audit.pseudonym("stu-4712-bob")
    assert [e.get("subject") for e in entries] == [ann, bob, ann, entries[3]["subject"], bob]
    assert entries[1]["duplicates"] == [ann]
    assert verify_chain(FileAuditLines(tmp_path / "audit.jsonl").lines()).intact


class SetCaller(grpc.aio.ServerInterceptor):
    """Stands in for the mutual-TLS interceptor: every call comes from a door's certificate."""

    def __init__(self, caller: Caller):
        self.caller = caller

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not handler.unary_unary:
            return handler
        inner, caller = handler.unary_unary, self.caller

        async def as_caller(request, context):
            current_caller.set(caller)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(as_caller, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


def test_the_caller_set_for_a_request_is_recorded_from_the_worker_thread(tmp_path):
    from service.servicer import FaceGateServicer

    p = fake_pipeline(tmp_path)
    p.enroll("ann", RED)
    loop = asyncio.new_event_loop()

    async def start():
        server = grpc.aio.server(interceptors=[SetCaller(Caller("gym-door-3", "door", "gym"))])
        pb_grpc.add_FaceGateServicer_to_server(FaceGateServicer(p), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.FaceGateStub(ch)
            assert stub.Verify(pb.VerifyRequest(subject_id="ann", image=RED), timeout=10).decision == pb.ACCEPT
            receipt = stub.DeleteSubject(pb.DeleteSubjectRequest(subject_id="ann"), timeout=10)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    entries = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(e["event"], e["caller"]) for e in entries] == [("Enroll", "local"), ("Verify", "gym-door-3"),
                                                            ("DeleteSubject", "gym-door-3")]
    assert (receipt.deleted_by, receipt.receipt_id, receipt.deleted_at) == (
        "gym-door-3", entries[-1]["hash"], entries[-1]["ts"])


# ------------------------------------------------------------------- a real server, real photos
PEOPLE = ["Abdullah_Gul", "Reese_Witherspoon", "Tom_Cruise"]


@pytest.fixture(scope="module")
def real_server(lfw, tmp_path_factory):
    """A real `serve` on a data folder that also holds an older index version, in which Tom_Cruise
    was enrolled by an earlier encoder."""
    from index.template_store import TemplateStore
    from service.index_layout import new_index_dir
    from test_server import PHOTOS, Server

    data = tmp_path_factory.mktemp("data")
    old = TemplateStore(new_index_dir(data, "previous-encoder"))
    rng = np.random.default_rng(0)
    for i in range(2):
        v = rng.normal(size=128).astype(np.float32)
        old.add("Tom_Cruise", v / np.linalg.norm(v), f"photo-{i}", "an-earlier-encoder")
    old.add("Someone_Else", v / np.linalg.norm(v), "photo-9", "an-earlier-encoder")
    old.close()
    s = Server(data)
    # the first photo is enrolled; the second, a probe the shipped encoder matches (tests/service/test_server.py)
    photos = {p: [lfw / "images" / p / f"{p}_{n:04d}.jpg" for n in PHOTOS[p][:2]] for p in PEOPLE}
    yield s, photos
    s.stop()


def cli(*args) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, "-m", "service.cli", *args, "--json"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    return p.returncode, json.loads(p.stdout)


@pytest.mark.slow
def test_real_rpcs_make_an_intact_chain_without_a_subject_id_in_clear(real_server):
    s, photos = real_server
    c = s.client
    assert c.enroll([(p, photos[p][0]) for p in PEOPLE])["accepted"] == 3
    assert c.verify(PEOPLE[0], photos[PEOPLE[0]][1].read_bytes())["decision"] == "ACCEPT"
    assert c.verify(PEOPLE[1], photos[PEOPLE[0]][1].read_bytes())["decision"] == "REJECT"
    assert c.identify(photos[PEOPLE[1]][0].read_bytes())["subject"] == PEOPLE[1]
    rc, r = cli("audit", "verify", "--data-dir", str(s.data_dir))
    assert (rc, r["intact"], r["lines"]) == (0, True, 6)
    text = (s.data_dir / "audit.jsonl").read_text()
    entries = [json.loads(x) for x in text.splitlines()]
    assert [(e["event"], e["caller"]) for e in entries] == [("Enroll", "local")] * 3 + [
        ("Verify", "local"), ("Verify", "local"), ("Identify", "local")]
    assert [e.get("decision") for e in entries[3:]] == ["ACCEPT", "REJECT", "ACCEPT"]
    for person in PEOPLE + [p.split("_")[-1] for p in PEOPLE]:
        assert person not in text
    names = {cli("audit", "pseudonym", "--data-dir", str(s.data_dir), p)[1]["pseudonym"]: p for p in PEOPLE}
    # the stream's photos are enrolled side by side: their lines come in the order each finished
    subjects = [names[e["subject"]] for e in entries]
    assert sorted(subjects[:3]) == sorted(PEOPLE) and subjects[3:] == [PEOPLE[0], PEOPLE[1], PEOPLE[1]]


@pytest.mark.slow
def test_a_deletion_erases_every_index_version_and_its_receipt_is_the_audit_line(real_server):
    from index.template_store import TemplateStore

    s, photos = real_server
    c = s.client
    c.enroll([("Tom_Cruise", p) for p in photos["Tom_Cruise"]])
    serving = c.status()["index_version"]
    old = TemplateStore(s.data_dir / "indexes" / "previous-encoder")
    old_version = old.index_version
    old.close()
    r = c.delete("Tom_Cruise")
    assert (r["subject"], r["removed"], r["deleted_by"]) == ("Tom_Cruise", 4, "local")
    assert r["removed_from"] == [{"index_version": serving, "index_name": "initial", "templates": 2},
                                 {"index_version": old_version, "index_name": "previous-encoder", "templates": 2}]
    last = json.loads((s.data_dir / "audit.jsonl").read_text().splitlines()[-1])
    assert (r["receipt_id"], r["deleted_at"], last["event"], last["removed"]) == (
        last["hash"], last["ts"], "DeleteSubject", 4)
    assert last["removed_from"] == r["removed_from"] and "Tom_Cruise" not in json.dumps(last)
    old = TemplateStore(s.data_dir / "indexes" / "previous-encoder")
    assert not old.has_subject("Tom_Cruise") and old.has_subject("Someone_Else")   # the others stay
    old.close()
    lines = len((s.data_dir / "audit.jsonl").read_text().splitlines())
    rc, again = cli("delete", "--server", s.address, "--subject", "Tom_Cruise")     # enrolled nowhere now
    assert rc == 2 and again["error"]["code"] == "NOT_FOUND"
    assert len((s.data_dir / "audit.jsonl").read_text().splitlines()) == lines     # nothing deleted, no line
    rc, r = cli("audit", "verify", "--data-dir", str(s.data_dir))
    assert (rc, r["intact"], r["lines"]) == (0, True, lines)
