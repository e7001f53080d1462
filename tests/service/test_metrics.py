"""Prometheus metrics (service/metrics.py) of a real gRPC server on a real port, fetched over HTTP
from its real /metrics endpoint (settings.metrics_listen), on the fake encoder and gates of
fakes.py: calls by RPC and status code, decisions by site and reason, stage and request
histograms, calls in flight, the templates gauge, Enroll's photos; a metrics port in use."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from fakes import VERSION, ServerThread, face, fake_pipeline, photo, rpc_error
from prometheus_client.parser import text_string_to_metric_families

from facegate.v1 import facegate_pb2 as pb
from facegate.v1 import facegate_pb2_grpc as pb_grpc
from service.errors import FailedPrecondition, InvalidArgument
from service.metrics import Metrics, parse_listen

ROOT = Path(__file__).resolve().parents[2]
RED, ORANGE, BLUE, CYAN, GREEN = (photo(face(c)) for c in ("red", "orange", "blue", "cyan", "green"))
NOBODY = photo()


def scrape(server, settled: bool = True) -> dict[tuple[str, tuple], float]:
    """GET /metrics over HTTP -> {(sample name, sorted labels): value}. A client can hear its answer
    before the server's interceptor has finished counting the call: `settled` waits (up to 5 s) for
    no call in flight first."""
    host, port = server.metrics.address
    deadline = time.monotonic() + 5
    while True:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            text = r.read().decode()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        if not settled or samples.get(("facegate_inflight_requests", ())) == 0 or time.monotonic() > deadline:
            return samples
        time.sleep(0.02)


def value(samples, name, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def start(tmp_path, **settings) -> ServerThread:
    p = fake_pipeline(tmp_path, listen="127.0.0.1:0", workers=1, metrics_listen="127.0.0.1:0", **settings)
    p.enroll("ann", RED)
    p.enroll("bob", BLUE)
    return ServerThread(p)


@pytest.fixture
def served(tmp_path):
    server = start(tmp_path)
    yield server
    server.stop()


def test_a_verify_is_counted_with_its_decision_stages_and_time(served, stub):
    before = scrape(served)
    assert value(before, "facegate_requests_total", rpc="Verify", code="OK") == 0     # shown before any call
    assert value(before, "facegate_templates") == 2 and value(before, "facegate_subjects") == 2
    r = stub.Verify(pb.VerifyRequest(subject_id="ann", image=ORANGE), timeout=10)
    assert (r.decision, r.reason) == (pb.ACCEPT, pb.MATCH)
    m = scrape(served)
    assert value(m, "facegate_requests_total", rpc="Verify", code="OK") == 1
    assert value(m, "facegate_decisions_total", rpc="Verify", site="default", decision="ACCEPT", reason="MATCH") == 1
    assert value(m, "facegate_request_seconds_count", rpc="Verify") == 1
    assert 0 < value(m, "facegate_request_seconds_sum", rpc="Verify") < 10
    assert value(m, "facegate_request_seconds_bucket", rpc="Verify", le="10.0") == 1
    for stage in r.stages:                                    # daynight, detect, encode, match
        assert value(m, "facegate_stage_seconds_count", stage=stage.name) == 1, stage.name
        assert value(m, "facegate_stage_seconds_sum", stage=stage.name) == pytest.approx(stage.seconds)
    assert {s.name for s in r.stages} == {"decode", "daynight", "detect", "encode", "match"}
    assert value(m, "facegate_inflight_requests") == 0
    assert value(m, "facegate_build_info", version=_installed_version(), encoder_version=VERSION,
                 encoder_arithmetic="float32-fake", grpc=grpc.__version__, python=sys.version.split()[0]) == 1
    assert value(m, "process_resident_memory_bytes") > 0


def _installed_version() -> str:
    from importlib import metadata
    try:
        return metadata.version("facegate")
    except metadata.PackageNotFoundError:
        return "unknown"


def test_rejections_and_errors_count_under_their_reason_and_code(served, stub):
    stub.Verify(pb.VerifyRequest(subject_id="ann", image=BLUE, site="lab"), timeout=10)        # NO_MATCH
    stub.Verify(pb.VerifyRequest(subject_id="ann", image=NOBODY, site="lab"), timeout=10)      # NO_FACE
    stub.Identify(pb.IdentifyRequest(image=CYAN), timeout=10)                                  # bob
    stub.Identify(pb.IdentifyRequest(image=GREEN), timeout=10)                                 # nobody
    bad = rpc_error(stub.Verify, pb.VerifyRequest(subject_id="ann", image=b"not a photo"))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_error(stub.Verify, pb.VerifyRequest(subject_id="zed", image=RED)).code() == grpc.StatusCode.NOT_FOUND
    assert rpc_error(stub.Identify, pb.IdentifyRequest(image=RED, k=101)).code() == grpc.StatusCode.INVALID_ARGUMENT
    m = scrape(served)
    assert value(m, "facegate_requests_total", rpc="Verify", code="OK") == 2
    assert value(m, "facegate_requests_total", rpc="Verify", code="INVALID_ARGUMENT") == 1
    assert value(m, "facegate_requests_total", rpc="Verify", code="NOT_FOUND") == 1
    assert value(m, "facegate_requests_total", rpc="Identify", code="OK") == 2
    assert value(m, "facegate_requests_total", rpc="Identify", code="INVALID_ARGUMENT") == 1
    assert value(m, "facegate_decisions_total", rpc="Verify", site="lab", decision="REJECT", reason="NO_MATCH") == 1
    assert value(m, "facegate_decisions_total", rpc="Verify", site="lab", decision="REJECT", reason="NO_FACE") == 1
    assert value(m, "facegate_decisions_total", rpc="Identify", site="default", decision="ACCEPT",
                 reason="MATCH") == 1
    assert value(m, "facegate_decisions_total", rpc="Identify", site="default", decision="REJECT",
                 reason="NO_MATCH") == 1
    # a call that fails has no decision; its time is still measured
    assert sum(v for (n, _), v in m.items() if n == "facegate_decisions_total") == 4
    assert value(m, "facegate_request_seconds_count", rpc="Verify") == 4
    # NO_FACE ends after detect: encode and match ran for the NO_MATCH only
    assert value(m, "facegate_stage_seconds_count", stage="detect") == 4      # 2 Verify + 2 Identify answers
    assert value(m, "facegate_stage_seconds_count", stage="encode") == 3


def test_enroll_counts_the_stream_and_each_photo_and_the_templates_gauge_follows(served, stub):
    reqs = [pb.EnrollRequest(subject_id="cy", image=GREEN, photo_name="1.png"),
            pb.EnrollRequest(subject_id="cy", image=GREEN, photo_name="1-again.png"),
            pb.EnrollRequest(subject_id="cy", image=NOBODY, photo_name="empty.png"),
            pb.EnrollRequest(subject_id="cy", image=b"junk", photo_name="junk.png")]
    assert len(list(stub.Enroll(iter(reqs), timeout=10))) == 4
    m = scrape(served)
    assert value(m, "facegate_requests_total", rpc="Enroll", code="OK") == 1
    assert value(m, "facegate_enroll_photos_total", status="ACCEPTED", reason="REASON_UNSPECIFIED") == 1
    assert value(m, "facegate_enroll_photos_total", status="ALREADY_ENROLLED", reason="REASON_UNSPECIFIED") == 1
    assert value(m, "facegate_enroll_photos_total", status="REJECTED", reason="NO_FACE") == 1
    assert value(m, "facegate_enroll_photos_total", status="REJECTED", reason="INVALID_ARGUMENT") == 1
    assert value(m, "facegate_request_seconds_count", rpc="Enroll") == 4          # each photo's answer
    assert value(m, "facegate_templates") == 3 and value(m, "facegate_subjects") == 3
    stub.DeleteSubject(pb.DeleteSubjectRequest(subject_id="cy"), timeout=10)
    m = scrape(served)
    assert value(m, "facegate_templates") == 2
    assert value(m, "facegate_requests_total", rpc="DeleteSubject", code="OK") == 1
    assert value(m, "facegate_index_generation") > 0


def test_calls_in_flight_are_gauged_while_they_run(served, stub):
    release, entered = threading.Event(), threading.Event()
    verify = served.pipeline.verify

    def slow_verify(*args):
        entered.set()
        assert release.wait(10)
        return verify(*args)

    served.pipeline.verify = slow_verify
    call = stub.Verify.future(pb.VerifyRequest(subject_id="ann", image=RED), timeout=20)
    try:
        assert entered.wait(10)
        m = scrape(served, settled=False)
        assert value(m, "facegate_inflight_requests") == 1
        assert value(m, "facegate_queue_requests") == 1             # on a model worker
    finally:
        release.set()
    assert call.result().reason == pb.MATCH
    m = scrape(served)
    assert value(m, "facegate_inflight_requests") == 0
    assert value(m, "facegate_queue_requests") == 0
    assert value(m, "facegate_requests_total", rpc="Verify", code="OK") == 1


def test_an_unexpected_error_counts_as_internal(served, stub):
    def broken(*args):
        raise RuntimeError("a bug below the edge")

    served.pipeline.identify = broken
    assert rpc_error(stub.Identify, pb.IdentifyRequest(image=RED)).code() == grpc.StatusCode.INTERNAL
    assert value(scrape(served), "facegate_requests_total", rpc="Identify", code="INTERNAL") == 1


def test_two_servers_in_one_process_count_apart(served, tmp_path):
    other = start(tmp_path / "other")
    try:
        with grpc.insecure_channel(other.address) as ch:
            pb_grpc.FaceGateStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10)
        assert served.metrics.address != other.metrics.address
        assert value(scrape(other), "facegate_requests_total", rpc="GetStatus", code="OK") == 1
        assert value(scrape(served), "facegate_requests_total", rpc="GetStatus", code="OK") == 0
    finally:
        other.stop()
    with pytest.raises(OSError):                       # stopped with its server: the port is closed
        scrape(other)


def test_site_labels_are_bounded(monkeypatch):
    monkeypatch.setattr("service.metrics.MAX_SITES", 2)
    m = Metrics()
    assert [m.site(s) for s in ("a", "b", "c", "a", "d")] == ["a", "b", "other", "a", "other"]


def test_no_metrics_endpoint_unless_asked(tmp_path):
    p = fake_pipeline(tmp_path, listen="127.0.0.1:0", workers=1)
    server = ServerThread(p)
    try:
        assert server.metrics is None
    finally:
        server.stop()


@pytest.mark.parametrize("listen", ["9100", "localhost:", ":9100", "host:port", "127.0.0.1:70000"])
def test_a_malformed_metrics_address_is_invalid_argument(listen):
    with pytest.raises(InvalidArgument, match="HOST:PORT"):
        parse_listen(listen)


def test_metrics_address_forms():
    assert parse_listen("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_listen("[::1]:9100") == ("::1", 9100)


@pytest.fixture
def taken_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def test_a_metrics_port_in_use_stops_the_server_start(tmp_path, taken_port):
    p = fake_pipeline(tmp_path, listen="127.0.0.1:0", workers=1, metrics_listen=f"127.0.0.1:{taken_port}")
    with pytest.raises(FailedPrecondition, match=f"cannot serve metrics on 127.0.0.1:{taken_port}: "
                                                 "Address already in use"):
        ServerThread(p)


@pytest.mark.slow        # a subprocess importing torch and the service
def test_serve_exits_2_at_once_when_the_metrics_port_is_in_use(tmp_path, taken_port):
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--listen", "127.0.0.1:0", "--data-dir",
                        str(tmp_path), "--metrics-listen", f"127.0.0.1:{taken_port}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    err = json.loads(p.stdout)["error"]
    assert err["code"] == "FAILED_PRECONDITION" and "Address already in use" in err["message"]
    assert time.monotonic() - t0 < 60          # refused before the models load
    assert list(tmp_path.iterdir()) == []      # nothing made in the data folder
