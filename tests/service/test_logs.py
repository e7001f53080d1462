"""The server's logs (service/logs.py): JSON lines, one object per line, with the request id, RPC,
status, time and caller of every call (each Enroll photo too), and no payload. In process on the
fake models (a real gRPC server on a real port), then a real `serve` subprocess: its start-up
lines, /metrics, and a SIGTERM that turns health to NOT_SERVING before it stops and exits 0."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from fakes import ServerThread, face, fake_pipeline, photo, rpc_error

from facegate.v1 import facegate_pb2 as pb
from service.logs import configure_logging

ROOT = Path(__file__).resolve().parents[2]
RED, ORANGE, BLUE = (photo(face(c)) for c in ("red", "orange", "blue"))
SUBJECT = "subject-7Qx"          # a name that must never show in the log


@pytest.fixture
def logs():
    """The process's logging as serve sets it up, into a buffer -> a function returning the lines parsed."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buf = io.StringIO()
    configure_logging(stream=buf)

    def lines(wait_for: str | None = None) -> list[dict]:
        deadline = time.monotonic() + 5
        while wait_for and wait_for not in buf.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        return [json.loads(line) for line in buf.getvalue().splitlines()]   # each line parses on its own

    yield lines
    root.handlers[:], root.level = saved[0], saved[1]


@pytest.fixture
def served(tmp_path, logs):
    p = fake_pipeline(tmp_path, listen="127.0.0.1:0", workers=1)
    p.enroll(SUBJECT, RED)
    server = ServerThread(p)
    yield server
    server.stop()


def calls(lines: list[dict], rpc: str) -> list[dict]:
    return [x for x in lines if x["logger"] == "facegate.requests" and x.get("rpc") == rpc]


def test_a_verify_logs_one_json_line_with_its_request_id(served, stub, logs):
    stub.Verify(pb.VerifyRequest(subject_id=SUBJECT, image=ORANGE), timeout=10,
                metadata=[("x-request-id", "door-7-000123")])
    stub.Verify(pb.VerifyRequest(subject_id=SUBJECT, image=BLUE), timeout=10)
    lines = logs(wait_for="NO_MATCH")
    first, second = calls(lines, "Verify")
    assert list(first)[:4] == ["ts", "level", "logger", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first["ts"])
    assert (first["level"], first["request_id"], first["code"], first["caller"]) == ("INFO", "door-7-000123", "OK",
                                                                                    "local")
    assert (first["site"], first["decision"], first["reason"]) == ("default", "ACCEPT", "MATCH")
    assert first["message"] == f"Verify OK {first['ms']:.1f} ms" and 0 < first["ms"] < 10_000
    assert re.fullmatch(r"[0-9a-f]{12}", second["request_id"])       # made up when the client sends none
    assert (second["decision"], second["reason"]) == ("REJECT", "NO_MATCH")
    text = json.dumps(lines)
    assert SUBJECT not in text                                       # no subject id, no photo bytes


def test_an_error_is_logged_under_its_code_and_request_id(served, stub, logs):
    assert rpc_error(stub.Verify, pb.VerifyRequest(subject_id=SUBJECT, image=b"not a photo"),
                     metadata=[("x-request-id", "bad-1")]).code() == grpc.StatusCode.INVALID_ARGUMENT

    def broken(*args):
        raise RuntimeError("a bug below the edge")

    served.pipeline.identify = broken
    assert rpc_error(stub.Identify, pb.IdentifyRequest(image=RED),
                     metadata=[("x-request-id", "bug-1")]).code() == grpc.StatusCode.INTERNAL
    lines = logs(wait_for="Identify INTERNAL")
    (bad,) = calls(lines, "Verify")
    assert (bad["request_id"], bad["code"], bad["level"]) == ("bad-1", "INVALID_ARGUMENT", "INFO")
    assert "decision" not in bad
    traceback = [x for x in lines if x["logger"] == "facegate.servicer"]
    assert len(traceback) == 1 and traceback[0]["request_id"] == "bug-1" and traceback[0]["level"] == "ERROR"
    assert "RuntimeError: a bug below the edge" in traceback[0]["exc_info"]
    assert calls(lines, "Identify")[0]["code"] == "INTERNAL"


def test_an_enroll_stream_logs_each_photo_and_the_stream(served, stub, logs):
    reqs = [pb.EnrollRequest(subject_id=SUBJECT, image=RED, photo_name=f"{SUBJECT}/1.png"),
            pb.EnrollRequest(subject_id=SUBJECT, image=photo(), photo_name=f"{SUBJECT}/2.png"),
            pb.EnrollRequest(subject_id=SUBJECT, image=b"junk", photo_name=f"{SUBJECT}/3.png")]
    assert len(list(stub.Enroll(iter(reqs), timeout=10, metadata=[("x-request-id", "job-9")]))) == 3
    lines = logs(wait_for='"photos": 3')
    enroll = calls(lines, "Enroll")
    assert [x["request_id"] for x in enroll] == ["job-9"] * 4
    photos, stream = enroll[:3], enroll[3]
    assert [(x["photo"], x["status"], x["reason"], x["code"]) for x in photos] == [
        (1, "ALREADY_ENROLLED", "REASON_UNSPECIFIED", "OK"), (2, "REJECTED", "NO_FACE", "OK"),
        (3, "REJECTED", "INVALID_ARGUMENT", "INVALID_ARGUMENT")]
    assert all(x["ms"] >= 0 and x["caller"] == "local" for x in enroll)
    assert (stream["code"], stream["photos"], stream["message"].split()[:2]) == ("OK", 3, ["Enroll", "OK"])
    assert SUBJECT not in json.dumps(lines)                          # nor the photos' names


def test_health_checks_are_logged_at_debug_only(served, logs):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(served.address) as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert r.status == health_pb2.HealthCheckResponse.SERVING
    logging.getLogger().setLevel(logging.DEBUG)
    with grpc.insecure_channel(served.address) as ch:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    (check,) = [x for x in logs(wait_for="Health/Check") if x.get("rpc") == "grpc.health.v1.Health/Check"]
    assert (check["level"], check["code"]) == ("DEBUG", "OK")


# ------------------------------------------------------------------------- a real serve process
class Serve:
    """`facegate serve` in a subprocess; its stderr read on in a thread, each line kept."""

    def __init__(self, data_dir: Path, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir),
             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 180) -> re.Match:
        with self.changed:
            found = lambda: next((m for x in self.lines if (m := re.search(pattern, x))), None)  # noqa: E731
            assert self.changed.wait_for(lambda: found() or self.proc.poll() is not None, timeout), pattern
            m = found()
        assert m, f"{pattern!r} not logged: {''.join(self.lines)}"
        return m

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.slow        # loads the shipped models
def test_serve_logs_json_serves_metrics_and_reports_not_serving_when_it_shuts_down(tmp_path):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    s = Serve(tmp_path, "--metrics-listen", "127.0.0.1:0", env={"FACEGATE_GRACE_SECONDS": "3"})
    try:
        port = int(s.wait_for(r"serving on port (\d+)").group(1))         # the tests' and benches' pattern
        metrics = s.wait_for(r"metrics on (http://127\.0\.0\.1:\d+/metrics)").group(1)
        with urllib.request.urlopen(metrics, timeout=10) as r:
            text = r.read().decode()
        assert "facegate_templates 0.0" in text and 'facegate_requests_total{code="OK",rpc="Verify"} 0.0' in text
        assert re.search(r'facegate_build_info\{.*encoder_version="facegate-', text)

        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel)
        SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        assert health.Check(health_pb2.HealthCheckRequest(service="facegate.v1.FaceGate"), timeout=10).status == SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)      # as a load balancer does
        assert next(watch).status == SERVING

        s.proc.send_signal(signal.SIGTERM)
        assert next(watch).status == NOT_SERVING           # heard during the grace, before the server stops
        t = time.monotonic()
        try:                                              # a new call now: refused, or told NOT_SERVING
            assert health.Check(health_pb2.HealthCheckRequest(service="facegate.v1.FaceGate"),
                                timeout=5).status == NOT_SERVING
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError):                # the watch ends when the server stops
            next(watch)
        assert s.proc.wait(30) == 0 and time.monotonic() - t < 30
        channel.close()
        s.wait_for(r"shutting down \(grace 3\.0 s\): health NOT_SERVING")
        s.wait_for(r'"message": "stopped"')
        with pytest.raises(OSError):                      # the metrics endpoint stopped with it
            urllib.request.urlopen(metrics, timeout=5)
        s.reader.join(10)
        lines = [json.loads(x) for x in s.lines]          # every line is one JSON object
        assert all({"ts", "level", "logger", "message"} <= set(x) for x in lines)
        assert [x for x in lines if "serving on port" in x["message"]][0]["logger"] == "facegate.server"
    finally:
        s.close()
