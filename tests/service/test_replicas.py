"""Replicas on one store: real `serve --store postgresql://...` processes on real ports, one real
PostgreSQL (pgtest.py), real LFW photos. An enrollment through one replica is identified by the
other within 2 s; a delete through one never makes the other fail; a replica started later sees
what was enrolled; site policies and the audit are shared."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pgtest import fresh_database
from service.client import Client, RpcFailed

pytestmark = pytest.mark.slow     # servers in subprocesses, each loading the real models

ROOT = Path(__file__).resolve().parents[2]
# DevTest people (never trained on); the probe of each is the enrolled photo itself
PEOPLE = {"Abdullah_Gul": 2, "Reese_Witherspoon": 2, "Tom_Cruise": 1}
STRANGER = "AJ_Lamas/AJ_Lamas_0001.jpg"


class Replica:
    """`facegate serve --store URL` on 127.0.0.1:0; start() returns at once, ready() waits for it."""

    def __init__(self, url: str, name: str):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--listen", "127.0.0.1:0",
                                      "--store", url], cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self.client = None

    def ready(self, timeout: float = 180) -> "Replica":
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            if m := re.search(r"serving on port (\d+)", line):
                threading.Thread(target=self._drain, daemon=True).start()
                self.client = Client(f"127.0.0.1:{m.group(1)}", timeout=60)
                return self
        self.stop()
        raise RuntimeError(f"replica {self.name} did not start:\n{''.join(self.log[-20:])}")

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def store_url():
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def replicas(store_url):
    a, b = Replica(store_url, "A"), Replica(store_url, "B")     # both load their models at once
    try:
        yield a.ready(), b.ready()
    finally:
        for r in (a, b):            # both at once
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        a.stop()
        b.stop()


@pytest.fixture(scope="module")
def photos(lfw):
    img = lfw / "images"
    return {p: img / p / f"{p}_{n:04d}.jpg" for p, n in PEOPLE.items()} | {"stranger": img / STRANGER}


def identified(client: Client, photo: Path) -> str | None:
    return client.identify(photo.read_bytes())["subject"]


def test_an_enrollment_through_one_replica_is_identified_by_the_other_within_2_s(replicas, photos):
    a, b = replicas
    gul = "Abdullah_Gul"
    assert identified(b.client, photos[gul]) is None                # B knows nobody yet (and is warm)
    s = a.client.enroll([(gul, photos[gul])])
    assert s["accepted"] == 1 and s["rejected"] == []
    t0 = time.monotonic()
    while identified(b.client, photos[gul]) != gul:
        assert time.monotonic() - t0 < 2.0, "replica B did not identify A's enrollment within 2 s"
    took = time.monotonic() - t0
    print(f"\nreplica B identified A's enrollment {took * 1000:.0f} ms after it was acknowledged "
          f"(the Identify itself included)")
    assert took < 2.0
    # the rest of the gallery, through A; B counts them at once
    others = [(p, photos[p]) for p in PEOPLE if p != gul]
    assert a.client.enroll(others)["accepted"] == 2
    assert b.client.status()["templates"] == a.client.status()["templates"] == 3
    assert b.client.enroll([(gul, photos[gul])])["already_enrolled"] == 1     # the same photo, through B


def test_a_delete_through_one_replica_never_makes_the_other_fail(replicas, photos):
    a, b = replicas
    reese = "Reese_Witherspoon"
    assert identified(b.client, photos[reese]) == reese
    failures, answers, stop = [], [], threading.Event()

    def ask_b():                     # B answers Identify all through the delete
        while not stop.is_set():
            try:
                answers.append(identified(b.client, photos[reese]))
            except RpcFailed as e:
                failures.append(f"{e.code}: {e.message}")

    t = threading.Thread(target=ask_b)
    t.start()
    try:
        time.sleep(0.3)
        receipt = a.client.delete(reese)
        assert (receipt["subject"], receipt["removed"]) == (reese, 1)
        deleted_at = len(answers)
        time.sleep(1.0)
    finally:
        stop.set()
        t.join()
    assert failures == []
    assert all(x is None for x in answers[deleted_at + 1:])     # asked after the delete: unknown
    assert identified(b.client, photos[reese]) is None
    with pytest.raises(RpcFailed) as e:
        b.client.verify(reese, photos[reese].read_bytes())
    assert e.value.code == "NOT_FOUND"
    with pytest.raises(RpcFailed) as e:
        b.client.delete(reese)
    assert e.value.code == "NOT_FOUND"


def test_a_replica_started_later_sees_the_enrollments(replicas, store_url, photos):
    a, _ = replicas
    c = Replica(store_url, "C").ready()
    try:
        assert c.client.status()["templates"] == 2
        assert identified(c.client, photos["Tom_Cruise"]) == "Tom_Cruise"
        assert identified(c.client, photos["Reese_Witherspoon"]) is None
        r = c.client.verify("Abdullah_Gul", photos["Abdullah_Gul"].read_bytes())
        assert r["decision"] == "ACCEPT"
    finally:
        c.stop()


def test_site_policies_are_shared_and_read_at_each_request(replicas, store_url, photos):
    a, b = replicas
    cli = [sys.executable, "-m", "service.cli", "site", "lab", "--store", store_url, "--json"]
    out = subprocess.run(cli + ["--trigger-word", "on"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["trigger_word"] is True
    for r in (a.client.identify(photos["Tom_Cruise"].read_bytes(), site="lab"),
              b.client.identify(photos["Tom_Cruise"].read_bytes(), site="lab")):
        assert r["reason"] == "TRIGGER_NOT_HEARD"          # the door wakes on "activate" only, on every replica
    assert identified(b.client, photos["Tom_Cruise"]) == "Tom_Cruise"      # the default site is untouched


def test_the_audit_of_every_replica_is_one_chain(replicas, store_url):
    from service.pg_store import PgAuditLines

    log = PgAuditLines.from_url(store_url)
    try:
        lines = list(log.lines())
    finally:
        log.close()
    assert lines and "Abdullah_Gul" not in "".join(lines)      # subjects only as pseudonyms
    events = [json.loads(x)["event"] for x in lines]
    assert {"Enroll", "Identify", "Verify", "DeleteSubject"} <= set(events)
    p = subprocess.run([sys.executable, "-m", "service.cli", "audit", "verify", "--store", store_url, "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    check = json.loads(p.stdout)
    assert check["intact"] and check["lines"] == len(lines)
