"""Hostile requests over every RPC (bench/fuzz.py's hypothesis strategies: generated photos and
their corruptions, audio, ids, sites, k) against the real server with the shipped models on a
real port: each ends in a status the contract names, never UNKNOWN or INTERNAL, and the server
keeps serving. bench/fuzz.py runs 10,000 of them; this runs a few hundred."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import grpc
import pytest
from fakes import ServerThread
from hypothesis import HealthCheck, given, settings

from facegate.v1 import facegate_pb2 as pb
from facegate.v1 import facegate_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_fuzz", ROOT / "bench" / "fuzz.py")
fuzz = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzz)


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    from service.server import build_deps, stop_worker_processes
    from service.settings import Settings
    from service.sites import SiteStore

    data = tmp_path_factory.mktemp("fuzz-data")
    SiteStore(data).put(fuzz.WORD_SITE, trigger_word=True)
    deps = build_deps(Settings(data_dir=data, listen="127.0.0.1:0", workers=2))    # with its worker processes
    server = ServerThread(deps.pipeline)
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.FaceGateStub(channel)
    server.stop()
    stop_worker_processes(deps.pipeline)


@settings(max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(req=fuzz.requests())
def test_every_hostile_request_ends_in_a_status_the_contract_names(stub, req):
    rpc, request = req
    codes = fuzz.call(stub, rpc, request, timeout=60)
    assert set(codes) <= fuzz.ALLOWED, (rpc, codes)


def test_the_server_still_serves_after_the_fuzzing(stub):
    assert stub.GetStatus(pb.GetStatusRequest(), timeout=30).encoder_version


def test_the_fuzzer_counts_a_bug_as_a_bug():
    """call() reports the status a stream or a call ends in, so an INTERNAL would be seen."""
    class Broken:
        def Verify(self, request, timeout):
            raise FakeRpcError()

        def Enroll(self, requests, timeout):
            return iter([pb.EnrollResponse(error_code="INTERNAL"), pb.EnrollResponse()])

    class FakeRpcError(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNKNOWN

    assert fuzz.call(Broken(), "Verify", pb.VerifyRequest()) == ["UNKNOWN"]
    assert fuzz.call(Broken(), "Enroll", []) == ["INTERNAL", "OK", "OK"]
    assert not {"UNKNOWN", "INTERNAL"} & fuzz.ALLOWED
