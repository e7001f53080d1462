"""Fixtures of the gRPC tests: `stub` talks to the module's own `served` fixture (a ServerThread)."""
from __future__ import annotations

import grpc
import pytest

from facegate.v1 import facegate_pb2_grpc as pb_grpc


@pytest.fixture
def stub(served):
    with grpc.insecure_channel(served.address) as channel:
        yield pb_grpc.FaceGateStub(channel)
