"""The real server on a real port (127.0.0.1:0), through the CLI's client: enroll, verify,
identify, cluster, delete, bad input, SIGKILL and restart, and the encoder-version refusal."""
from __future__ import annotations

import collections
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from service.client import Client, RpcFailed

pytestmark = pytest.mark.slow     # servers in subprocesses, each loading the real models

ROOT = Path(__file__).resolve().parents[2]
# DevTest people (never trained on): the first photo is enrolled, the second is a probe that the
# shipped encoder places within its threshold (these tests check the service, not the encoder's
# accuracy, which bench/ and eval-pairs measure), the others are more photos for Cluster.
PHOTOS = {"Abdullah_Gul": [2, 4, 3, 1], "Reese_Witherspoon": [2, 4, 1, 3], "Tom_Cruise": [1, 3, 2, 6]}
PEOPLE = list(PHOTOS)
STRANGER = "AJ_Lamas/AJ_Lamas_0001.jpg"


class Server:
    def __init__(self, data_dir: Path, extra_env: dict | None = None, checkpoint: str | None = None):
        cmd = [sys.executable, "-m", "service.cli", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
        if checkpoint:
            cmd += ["--checkpoint", checkpoint]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(extra_env or {})})
        self.port = None
        deadline = time.time() + 120
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            m = re.search(r"serving on port (\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {self.proc.stdout.read()} {self.proc.stderr.read()}")
        self.address = f"127.0.0.1:{self.port}"
        self.client = Client(self.address, timeout=60)
        self.data_dir = Path(data_dir)
        # the server logs a line per call on stderr: read on, or a full pipe (64 KB, a few hundred
        # calls) would block the server; the last lines are kept for a failing test to show
        self.log = collections.deque(maxlen=200)
        threading.Thread(target=self.log.extend, args=(self.proc.stderr,), daemon=True).start()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def photos(lfw):
    img = lfw / "images"
    return {p: [img / p / f"{p}_{n:04d}.jpg" for n in PHOTOS[p]] for p in PEOPLE} | {"stranger": [img / STRANGER]}


@pytest.fixture(scope="module")
def gallery(photos, tmp_path_factory):
    g = tmp_path_factory.mktemp("gallery")
    for p in PEOPLE:
        (g / p).mkdir()
        (g / p / photos[p][0].name).write_bytes(photos[p][0].read_bytes())
    return g


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("data"), extra_env={"FACEGATE_MAX_MESSAGE_BYTES": str(2 << 20)})
    yield s
    s.stop()


def png_header(width, height) -> bytes:
    """A real 1x1 PNG whose header claims width x height."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    b = bytearray(buf.getvalue())
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    return bytes(b)


def test_health_and_reflection(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    ch = grpc.insecure_channel(server.address)
    r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="facegate.v1.FaceGate"), timeout=10)
    assert r.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    resp = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    assert "facegate.v1.FaceGate" in {s.name for s in resp.list_services_response.service}


def test_enroll_verify_identify_delete(server, gallery, photos):
    c = server.client
    s = c.enroll([(p, gallery / p / photos[p][0].name) for p in PEOPLE])
    assert s["accepted"] == 3 and s["rejected"] == [] and s["already_enrolled"] == 0
    assert c.status()["templates"] == 3
    # the status names the arithmetic the server computes its encoder in, as this machine allows
    from encoder.checkpoint import load_checkpoint
    from encoder.embedder import Embedder
    arithmetic = Embedder(*load_checkpoint(None), aligner=object()).arithmetic
    assert c.status()["encoder_arithmetic"] == arithmetic and arithmetic.endswith("-frozen")
    again = c.enroll([(p, gallery / p / photos[p][0].name) for p in PEOPLE])   # a job re-sent after a crash
    assert again["accepted"] == 0 and again["already_enrolled"] == 3 and c.status()["templates"] == 3

    gul, reese = PEOPLE[0], PEOPLE[1]
    r = c.verify(gul, photos[gul][1].read_bytes())
    assert r["decision"] == "ACCEPT" and r["reason"] == "MATCH" and r["distance"] <= r["threshold"]
    assert [st["name"] for st in r["stages"]] == ["decode", "daynight", "detect", "encode", "match"] and r["encoder_version"] == c.status()["encoder_version"]
    r = c.verify(reese, photos[gul][1].read_bytes())             # a borrowed card
    assert r["decision"] == "REJECT" and r["reason"] == "NO_MATCH" and r["distance"] > r["threshold"]

    r = c.identify(photos[gul][0].read_bytes())                 # the enrolled photo itself
    assert r["subject"] == gul and r["neighbours"][0]["subject"] == gul
    r = c.identify(photos["stranger"][0].read_bytes())          # never enrolled
    assert r["subject"] is None and r["reason"] == "NO_MATCH"

    receipt = c.delete(reese)
    assert (receipt["subject"], receipt["removed"], receipt["deleted_by"]) == (reese, 1, "local")
    with pytest.raises(RpcFailed) as e:
        c.verify(reese, photos[reese][1].read_bytes())
    assert e.value.code == "NOT_FOUND"


def test_a_photo_of_two_faces_follows_the_sites_policy_read_at_each_request(server, gallery, photos):
    from encoder.images import decode_image
    from service.sites import SiteStore

    c = server.client
    gul, tom = PEOPLE[0], PEOPLE[2]
    c.enroll([(p, gallery / p / photos[p][0].name) for p in (gul, tom)])
    left, middle = (decode_image(photos[p][1].read_bytes()) for p in (tom, gul))
    buf = io.BytesIO()
    Image.fromarray(np.concatenate([left, middle, np.full_like(middle, 128)], axis=1)).save(buf, "JPEG", quality=95)
    two = buf.getvalue()                                        # gul in the middle, tom at his shoulder
    r = c.verify(gul, two, site="pool")
    assert (r["decision"], r["reason"], r["distance"]) == ("REJECT", "MULTIPLE_FACES", None)
    SiteStore(server.data_dir).put("pool", several_faces="central_face")     # no restart
    r = c.verify(gul, two, site="pool")
    assert (r["decision"], r["reason"]) == ("ACCEPT", "MATCH") and r["distance"] <= r["threshold"]
    assert [(st["name"], st["outcome"]) for st in r["stages"]][2:] == [("detect", "MULTIPLE_FACES"),
                                                                       ("encode", "OK"), ("match", "OK")]
    assert "central one is the card's owner" in r["detail"]
    r = c.verify(tom, two, site="pool")                         # tom's card: he is in view, not in the middle
    assert (r["decision"], r["reason"]) == ("REJECT", "MULTIPLE_FACES") and r["distance"] > r["threshold"]
    assert c.verify(gul, two)["reason"] == "MULTIPLE_FACES"     # the default site keeps refusing


def test_bad_input_gets_its_contract_answer_and_the_server_keeps_serving(server, photos, data_dir):
    c = server.client
    gul = PEOPLE[0]
    c.enroll([(gul, photos[gul][0])])
    cases = {
        "noise": (np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(), "INVALID_ARGUMENT"),
        "empty": (b"", "INVALID_ARGUMENT"),
        "huge header": (png_header(20000, 20000), "INVALID_ARGUMENT"),
        "over the message limit": (b"\xff" * (3 << 20), "RESOURCE_EXHAUSTED"),
    }
    for name, (data, code) in cases.items():
        with pytest.raises(RpcFailed) as e:
            c.verify(gul, data)
        assert e.value.code == code, name
    scene = sorted((data_dir / "daynight/training/day").glob("*.jpg"))[0].read_bytes()
    r = c.verify(gul, scene)
    assert r["decision"] == "REJECT" and r["reason"] == "NO_FACE" and r["distance"] is None
    with pytest.raises(RpcFailed) as e:
        c.verify("nobody-enrolled-this", photos[gul][1].read_bytes())
    assert e.value.code == "NOT_FOUND"
    with pytest.raises(RpcFailed) as e:
        c.identify(photos[gul][1].read_bytes(), k=1000)
    assert e.value.code == "INVALID_ARGUMENT"
    assert server.proc.poll() is None and c.status()["templates"] >= 1


def test_cluster_groups_photos_by_person(server, photos, data_dir):
    batch = [(str(p), p.read_bytes()) for person in PEOPLE for p in photos[person][:3]]
    scene = sorted((data_dir / "daynight/training/day").glob("*.jpg"))[0]
    r = server.client.cluster(batch + [(str(scene), scene.read_bytes())], k=3)
    assert r["k"] == 3 and r["centroids_count"] == 3
    assert r["assignments"][-1]["cluster"] == -1 and r["assignments"][-1]["reason"] == "NO_FACE"
    labels = [a["cluster"] for a in r["assignments"][:-1]]
    assert all(0 <= x < 3 for x in labels)
    r0 = server.client.cluster(batch, k=0)
    assert 1 <= r0["k"] <= len(batch)


def test_acknowledged_enrollment_survives_sigkill(tmp_path, gallery, photos):
    from index.template_store import TemplateStore

    s = Server(tmp_path)
    try:
        summary = s.client.enroll([(p, gallery / p / photos[p][0].name) for p in PEOPLE])
        assert summary["accepted"] == 3
    finally:
        s.kill()                                              # right after the acknowledgement
    from service.index_layout import current_index_dir

    store = TemplateStore(current_index_dir(tmp_path, create=False))
    store.check()                                             # index and metadata agree
    assert store.status()["templates"] == 3
    store.close()
    s2 = Server(tmp_path)
    try:
        assert s2.client.status()["templates"] == 3
        again = s2.client.enroll([(p, gallery / p / photos[p][0].name) for p in PEOPLE])
        assert again["already_enrolled"] == 3 and s2.client.status()["templates"] == 3
        r = s2.client.verify(PEOPLE[0], photos[PEOPLE[0]][1].read_bytes())
        assert r["decision"] == "ACCEPT"
    finally:
        s2.stop()


def test_serve_refuses_templates_of_another_encoder(tmp_path, gallery, photos):
    from encoder.checkpoint import DEFAULT_CHECKPOINT, record_in_checkpoint

    s = Server(tmp_path / "data")
    try:
        s.client.enroll([(PEOPLE[0], gallery / PEOPLE[0] / photos[PEOPLE[0]][0].name)])
    finally:
        s.stop()
    other = tmp_path / "other.pt"
    other.write_bytes(DEFAULT_CHECKPOINT.read_bytes())
    meta = __import__("torch").load(other, weights_only=True)
    record_in_checkpoint(other, flip_average=not meta["preprocessing"].get("flip_average", False),
                         threshold=0.9, identify_threshold=0.8)   # same weights, other preprocessing: other version
    p = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--listen", "127.0.0.1:0", "--data-dir",
                        str(tmp_path / "data"), "--checkpoint", str(other)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2
    err = json.loads(p.stdout)["error"]
    assert err["code"] == "FAILED_PRECONDITION" and "facegate reindex" in err["message"]
