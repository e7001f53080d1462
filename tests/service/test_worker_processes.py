"""The face models in worker processes (service/processes.py), on a real `facegate serve` on a real
port with the shipped models: the same answers as the models in the server's threads; a worker
process killed outright is replaced (its call, if it held one, answered UNAVAILABLE); the large
photos' process runs at the idle priority; and no worker process outlives a server killed outright."""
from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.request

import pytest

from service.client import RpcFailed
from tests.service.test_server import PEOPLE, PHOTOS, Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(lfw):
    img = lfw / "images"
    return {p: [img / p / f"{p}_{n:04d}.jpg" for n in PHOTOS[p]] for p in PEOPLE}


def _children(pid: int) -> list[int]:
    """The worker processes (spawned by multiprocessing) of process `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                cmd = open(f"/proc/{entry}/cmdline", "rb").read()
            except OSError:
                continue
            if int(stat[1]) == pid and b"spawn_main" in cmd:
                out.append(int(entry))
    return sorted(out)


def _answers(server: Server, photos) -> list:
    c = server.client
    c.enroll([(p, photos[p][0]) for p in PEOPLE])
    return [(r["decision"], round(r["distance"], 4)) for r in
            (c.verify(p, photos[q][1].read_bytes()) for p in PEOPLE for q in PEOPLE)] + [
        c.identify(photos[p][2].read_bytes())["subject"] for p in PEOPLE]


def test_worker_processes_answer_as_the_servers_threads_do(tmp_path, photos):
    answers = {}
    for processes in ("true", "false"):
        s = Server(tmp_path / processes, extra_env={"FACEGATE_WORKER_PROCESSES": processes})
        try:
            if processes == "true":      # two frames' workers and the large photos' one
                assert len(_children(s.proc.pid)) == 3
            answers[processes] = _answers(s, photos)
        finally:
            s.stop()
    assert answers["true"] == answers["false"]
    assert [a for a, _ in answers["true"][:9]] == ["ACCEPT" if i % 4 == 0 else "REJECT" for i in range(9)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker_metrics(port: int) -> dict:
    """/metrics' facegate_worker_* samples -> {(name, pool): value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'(facegate_worker_\w+)\{pool="(\w+)"\} (\S+)$', line)
        if m:
            out[m.group(1), m.group(2)] = float(m.group(3))
        elif line.startswith("process_resident_memory_bytes "):
            out["process_resident_memory_bytes", "server"] = float(line.split()[1])
    return out


def test_a_killed_worker_process_is_replaced_and_the_large_photos_one_runs_idle(tmp_path, photos):
    port = _free_port()
    s = Server(tmp_path / "data", extra_env={"FACEGATE_METRICS_LISTEN": f"127.0.0.1:{port}"})
    try:
        c = s.client
        c.enroll([(PEOPLE[0], photos[PEOPLE[0]][0])])
        probe = photos[PEOPLE[0]][1].read_bytes()
        children = _children(s.proc.pid)
        # /metrics counts the worker processes, their CPU time (the models loaded, a photo enrolled)
        # and their memory (each holds its own models: hundreds of MB), per pool
        m = _worker_metrics(port)
        assert m["facegate_worker_processes", "frames"] == 2 and m["facegate_worker_processes", "large"] == 1
        assert m["facegate_worker_cpu_seconds_total", "frames"] > 1.0
        assert m["facegate_worker_resident_memory_bytes", "frames"] > 2 * 200e6
        # the server's own process holds the encoder's card, not its networks (encoder.embedder.EncoderCard)
        assert m["process_resident_memory_bytes", "server"] < 0.85 * m["facegate_worker_resident_memory_bytes", "frames"] / 2
        policies = sorted(os.sched_getscheduler(pid) for pid in children)
        assert policies == sorted([os.SCHED_OTHER, os.SCHED_OTHER, os.SCHED_IDLE]), policies
        frames = [pid for pid in children if os.sched_getscheduler(pid) == os.SCHED_OTHER]
        os.kill(frames[0], signal.SIGKILL)
        time.sleep(1)
        codes = []
        for _ in range(3):                # the broken pool's first call: UNAVAILABLE; then fresh processes
            try:
                codes.append(c.verify(PEOPLE[0], probe)["decision"])
            except RpcFailed as e:
                codes.append(e.code)
        assert codes in (["UNAVAILABLE", "ACCEPT", "ACCEPT"], ["ACCEPT"] * 3), codes
        assert s.proc.poll() is None
        assert frames[0] not in _children(s.proc.pid) and len(_children(s.proc.pid)) == 3
        assert _worker_metrics(port)["facegate_worker_processes", "frames"] == 2
    finally:
        s.stop()


def test_no_worker_process_outlives_a_server_killed_outright(tmp_path):
    s = Server(tmp_path / "data")
    children = _children(s.proc.pid)
    assert len(children) == 3
    s.kill()
    deadline = time.time() + 20
    while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in children):
        time.sleep(0.2)
    assert not [pid for pid in children if os.path.exists(f"/proc/{pid}")]
