"""The committed gRPC stubs are exactly what the one generation step makes from the .proto."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_match_the_proto(tmp_path):
    subprocess.run(["bash", str(ROOT / "scripts/gen_proto.sh"), str(tmp_path)], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHON": sys.executable})
    for name in ("facegate_pb2.py", "facegate_pb2.pyi", "facegate_pb2_grpc.py"):
        fresh = (tmp_path / "facegate/v1" / name).read_text()
        committed = (ROOT / "facegate/v1" / name).read_text()
        assert fresh == committed, f"facegate/v1/{name} is stale: run scripts/gen_proto.sh"


def test_the_service_and_its_reasons_are_there():
    from facegate.v1 import facegate_pb2 as pb

    svc = pb.DESCRIPTOR.services_by_name["FaceGate"]
    assert {m.name for m in svc.methods} == {"Enroll", "DeleteSubject", "Verify", "Identify", "Cluster", "GetStatus"}
    assert {"MATCH", "NO_FACE", "MULTIPLE_FACES", "FACE_TOO_SMALL", "TOO_DARK", "TRIGGER_NOT_HEARD",
            "NO_MATCH"} <= set(pb.Reason.keys())
