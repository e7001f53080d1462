"""`facegate loadtest` (service/loadtest.py) against a real gRPC server on a real port: the
service's real pipeline, decode and template store on the fake encoder (tests/service/fakes.py),
so that what is measured is the load generator, not a face model. The pipeline's Verify and
Identify are wrapped to take a set time and to count how many run at once, as the server sees it."""
from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from fakes import ServerThread, face, fake_pipeline, photo
from service.errors import InvalidArgument
from service.loadtest import (LoadConfig, Unavailable, load_photos, parse_size, plot, run_load, summarise,
                              to_frames)

pytestmark = pytest.mark.slow      # each runs a load for 1-3 s

ROOT = Path(__file__).resolve().parents[2]


class Timed:
    """A pipeline method that takes at least `delay` seconds, counting its calls and the most that
    ran at once."""

    def __init__(self, fn, delay: float):
        self.fn, self.delay = fn, delay
        self.lock = threading.Lock()
        self.calls = self.running = self.most = 0

    def __call__(self, *args):
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.delay)
            return self.fn(*args)
        finally:
            with self.lock:
                self.running -= 1


class Served:
    def __init__(self, data_dir: Path, delay: float, workers: int):
        self.pipeline = fake_pipeline(data_dir, listen="127.0.0.1:0", workers=workers)
        self.pipeline.enroll("alice", photo(face("red")))
        self.verify = self.pipeline.verify = Timed(self.pipeline.verify, delay)
        self.identify = self.pipeline.identify = Timed(self.pipeline.identify, delay)
        self.server = ServerThread(self.pipeline)
        self.address = self.server.address


@pytest.fixture
def served(tmp_path):
    """Answers in about 20 ms, up to 8 at once (more workers than any test's cameras)."""
    s = Served(tmp_path / "data", delay=0.02, workers=8)
    yield s
    s.server.stop()


@pytest.fixture
def slow(tmp_path):
    """Answers one at a time, 150 ms each: about 6.7 per second at most."""
    s = Served(tmp_path / "data", delay=0.15, workers=1)
    yield s
    s.server.stop()


@pytest.fixture
def photos_dir(tmp_path) -> Path:
    """DIR/<subject>/<photo>: alice's other photo (a match), and a photo of no one (NO_FACE)."""
    d = tmp_path / "photos"
    (d / "alice").mkdir(parents=True)
    (d / "alice" / "orange.jpg").write_bytes(photo(face("orange"), fmt="JPEG"))
    (d / "alice" / "empty_room.png").write_bytes(photo())
    return d


def load(address, photos, **kw):
    config = LoadConfig(**{"warmup_s": 0.3, "seconds": 1.5, **kw})
    record = asyncio.run(run_load(address, photos, config, progress=False))
    return record, config, summarise(record, config, photos=len(photos))


CONTRACT_KEYS = {"rpc": str, "cameras": int, "requests": int, "rps": float, "p50_ms": float, "p95_ms": float,
                 "p99_ms": float, "errors": dict, "reasons": dict, "stages": dict}


def test_closed_loop_keeps_n_cameras_in_flight_and_reports_the_contract_keys(served, photos_dir):
    record, config, out = load(served.address, load_photos(photos_dir), rpc="verify", cameras=3, seconds=2.0)
    for key, typ in CONTRACT_KEYS.items():
        assert isinstance(out[key], typ), (key, out[key])
    assert out["rpc"] == "Verify" and out["cameras"] == 3 and out["mode"] == "closed"
    assert out["requests"] > 30 and out["errors"] == {} and out["unanswered"] == 0
    # never more than 3 in flight, as the client counts and as the server saw it; and 3 did run at once
    assert out["max_in_flight"] == 3
    assert served.verify.most == 3
    assert served.verify.calls == record.sent
    # each answer took the server's 20 ms at least; 3 cameras cannot beat 3 / 20 ms
    assert out["p50_ms"] >= 20 and out["rps"] <= 3 / 0.02
    assert out["p50_ms"] <= out["p95_ms"] <= out["p99_ms"] <= out["max_ms"]
    # the photos decide the reasons: alice's other photo matches, the empty room has no face
    assert set(out["reasons"]) == {"MATCH", "NO_FACE"} and sum(out["reasons"].values()) == out["requests"]
    assert out["decisions"]["ACCEPT"] == out["reasons"]["MATCH"]
    assert {"detect", "encode", "match"} <= set(out["stages"]) and all(v >= 0 for v in out["stages"].values())
    # the warm-up's requests were sent but are not counted
    assert out["requests"] < record.sent
    assert out["rps"] == pytest.approx(out["requests"] / out["duration_s"], rel=0.02)


def test_open_loop_sends_rate_times_seconds(served, photos_dir):
    record, config, out = load(served.address, load_photos(photos_dir), rpc="identify", rate=40, seconds=2.0)
    assert out["mode"] == "open" and out["rate"] == 40
    assert record.sent == served.identify.calls == round(40 * (0.3 + 2.0))
    assert 78 <= out["requests"] <= 82
    assert out["rps"] == pytest.approx(40, rel=0.1)
    # the two photos in turn: the empty room (NO_FACE), and alice's other photo (identified)
    assert out["errors"] == {} and set(out["reasons"]) == {"NO_FACE", "MATCH"}
    assert abs(out["reasons"]["NO_FACE"] - out["reasons"]["MATCH"]) <= 1


def test_open_loop_does_not_wait_for_a_slow_server(slow, photos_dir):
    """10 requests/s to a server that answers 6.7/s: they leave on time all the same, queue up at
    the server, and their latency (from the scheduled time) grows far past one answer's 150 ms."""
    record, config, out = load(slow.address, load_photos(photos_dir), rpc="verify", rate=10, seconds=1.5,
                               warmup_s=0.2)
    assert record.sent == 17 and out["unanswered"] == 0 and out["errors"] == {}
    assert out["max_in_flight"] >= 4
    assert out["max_ms"] >= 600
    # a closed loop on the same server waits for each answer: about one answer's time each
    _, _, closed = load(slow.address, load_photos(photos_dir), rpc="verify", cameras=1, seconds=1.0, warmup_s=0.2)
    assert closed["max_in_flight"] == 1 and 150 <= closed["p99_ms"] < 400


def test_a_stalled_generator_is_timed_from_the_schedule(served, photos_dir):
    """Coordinated omission: when the generator itself stalls for 0.4 s, the requests due during
    the stall leave late, and their latency counts from when they were due, not from when they left."""
    config = LoadConfig(rpc="verify", rate=50, seconds=1.8, warmup_s=0.2)

    async def stalled():
        async def stall():
            await asyncio.sleep(1.0)
            time.sleep(0.4)                      # blocks the generator's event loop
        task = asyncio.create_task(stall())
        record = await run_load(served.address, load_photos(photos_dir), config, progress=False)
        await task
        return record

    record = asyncio.run(stalled())
    out = summarise(record, config)
    assert out["max_send_lag_ms"] >= 350
    assert out["max_ms"] >= 380
    late = [s for s in record.samples if 1.0 <= s.scheduled < 1.35]
    assert len(late) >= 15 and all(s.latency >= 1.4 - s.scheduled - 0.02 for s in late)


def test_errors_are_counted_by_grpc_code(served, slow, photos_dir):
    # Verify of a subject that is not enrolled: NOT_FOUND, every one
    _, _, out = load(served.address, load_photos(photos_dir), rpc="verify", subject="nobody", cameras=2)
    assert out["requests"] > 0 and out["errors"] == {"NOT_FOUND": out["requests"]}
    assert out["ok"] == 0 and out["reasons"] == {} and out["stages"] == {}
    # a deadline shorter than the server's answer: DEADLINE_EXCEEDED
    _, _, out = load(slow.address, load_photos(photos_dir), rpc="identify", cameras=2, deadline_ms=50)
    assert out["requests"] > 0 and out["errors"] == {"DEADLINE_EXCEEDED": out["requests"]}
    assert out["p99_ms"] < 150


def test_mix_sends_both_rpcs_and_plots_a_png(served, photos_dir, tmp_path):
    record, config, out = load(served.address, load_photos(photos_dir), rpc="mix", cameras=2)
    assert out["rpc"] == "mix"
    v, i = out["by_rpc"]["Verify"]["requests"], out["by_rpc"]["Identify"]["requests"]
    assert v > 0 and i > 0 and abs(v - i) <= 2 and v + i == out["requests"]
    assert abs(served.verify.calls - served.identify.calls) <= 2
    png = tmp_path / "load.png"
    plot(record, config, out, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(png).size[0] > 600


def test_frames_are_camera_size_jpegs_made_once(photos_dir):
    photos = load_photos(photos_dir)
    frames = to_frames(photos, parse_size("640x480"))
    assert len(frames) == len(photos)
    for f, p in zip(frames, photos):
        img = Image.open(io.BytesIO(f.data))
        assert img.format == "JPEG" and img.size == (640, 480) and f.subject == p.subject == "alice"
    with pytest.raises(InvalidArgument, match="WIDTHxHEIGHT"):
        parse_size("640")


@pytest.mark.parametrize("people", [("Abdullah_Gul_0001", "Tom_Cruise_0003", "AJ_Lamas_0001")])
def test_frames_hold_one_face_150_to_200_px_high(lfw, aligner, tmp_path, people):
    """With the real detector: each LFW photo, pasted into a 640 x 480 frame, is still one face,
    now 150-200 px high (give or take the detector's box)."""
    import numpy as np

    for name in people:
        d = tmp_path / name.rsplit("_", 1)[0]
        d.mkdir()
        (d / f"{name}.jpg").write_bytes((lfw / "images" / d.name / f"{name}.jpg").read_bytes())
    for f in to_frames(load_photos(tmp_path), (640, 480), seed=1):
        a = aligner.align(np.asarray(Image.open(io.BytesIO(f.data)).convert("RGB")))
        assert a.ok, (f.name, a.outcome)
        assert 130 <= a.box[3] - a.box[1] <= 230, (f.name, a.box)


def test_an_unreachable_server_is_unavailable(photos_dir):
    config = LoadConfig(seconds=1)
    with pytest.raises(Unavailable, match="cannot connect"):
        asyncio.run(run_load("127.0.0.1:1", load_photos(photos_dir), config, progress=False, connect_timeout=1))


def test_cli_loadtest_prints_json_and_writes_the_plot(served, photos_dir, tmp_path):
    png = tmp_path / "p.png"
    r = subprocess.run([sys.executable, "-m", "service.cli", "loadtest", "--server", served.address, "--rpc", "verify",
                        "--cameras", "2", "--seconds", "1.5", "--warmup", "0.3", "--photos", str(photos_dir),
                        "--frames", "320x240", "--plot", str(png), "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key, typ in CONTRACT_KEYS.items():
        assert isinstance(out[key], typ), (key, out[key])
    assert out["requests"] > 0 and out["frames"] == "320x240" and out["plot"] == str(png)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "loadtest verify" in r.stderr            # the progress bar
    assert out["client_cpu_ms_per_request"] < 10    # the generator is light: no image work per request
    bad = subprocess.run([sys.executable, "-m", "service.cli", "loadtest", "--server", served.address, "--frames",
                          "640", "--photos", str(photos_dir), "--json"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"]["code"] == "INVALID_ARGUMENT"
    half_tls = subprocess.run([sys.executable, "-m", "service.cli", "loadtest", "--server", served.address,
                               "--tls-dir", str(tmp_path), "--photos", str(photos_dir), "--json"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    assert half_tls.returncode == 2 and "--client" in json.loads(half_tls.stdout)["error"]["message"]
