"""Overload behaves (service/admission.py), on a real server on a real port around a pipeline whose
face models are deliberately slow: a full queue is refused at once (RESOURCE_EXHAUSTED), a request
whose deadline is too near when a worker is free never reaches the models (DEADLINE_EXCEEDED), and
past saturation every call ends by its deadline with an answer or one of those two codes. And a
40-megapixel photo is decoded reduced and answered like a camera frame."""
from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from facegate.v1 import facegate_pb2 as pb
from facegate.v1 import facegate_pb2_grpc as pb_grpc
from facegate.reasons import Reason
from service.admission import Busy, DeadlineTooNear, ModelQueue
from service.sites import SiteError, SitePolicy, SiteStore
from tests.service.fakes import FakeEmbedder, ServerThread, draw, encode, face, fake_pipeline, photo

RED = photo(face("red"))
ORANGE = photo(face("orange"))


def _policy() -> int | None:
    """This thread's scheduling policy; None where the kernel will not say (the detection goes on:
    a test that needs the policy then fails on its own assertion, not inside the server)."""
    try:
        return os.sched_getscheduler(threading.get_native_id())
    except OSError:
        return None


class SlowEmbedder(FakeEmbedder):
    """The fake encoder, whose detection takes `seconds` (a model busy on a real photo)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.runs = 0                 # detections started (from many worker threads)
        self.last_shape = None        # the shape of the last photo detection was given
        self.running = 0              # detections running now
        self.most_running = 0         # ... and the most that ever ran at once
        self.workers_seen = []        # (thread name, its scheduling policy) of each detection
        self._lock = threading.Lock()

    def align(self, img, min_face_px=None, id_photo=False):
        with self._lock:
            self.runs += 1
            self.workers_seen.append((threading.current_thread().name, _policy()))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.last_shape = img.shape
        try:
            time.sleep(self.seconds)
            return super().align(img, min_face_px, id_photo)
        finally:
            with self._lock:
                self.running -= 1


def _server(tmp_path, seconds: float, **settings):
    embedder = SlowEmbedder(seconds)
    pipeline = fake_pipeline(tmp_path, embedder, gates=False, **settings)
    pipeline.enroll("ann", RED)
    embedder.runs = 0
    embedder.workers_seen.clear()
    return ServerThread(pipeline), embedder


def _verify(stub, image=ORANGE, timeout=10.0):
    """One Verify -> (status code name, seconds it took, details)."""
    t0 = time.perf_counter()
    try:
        stub.Verify(pb.VerifyRequest(subject_id="ann", image=image), timeout=timeout)
        code, details = "OK", ""
    except grpc.RpcError as e:
        code, details = e.code().name, e.details()
    return code, time.perf_counter() - t0, details


@pytest.mark.slow
def test_a_full_queue_is_answered_resource_exhausted_at_once(tmp_path):
    # one worker, one place in the queue: of 4 callers at once, 2 are taken and 2 refused
    server, embedder = _server(tmp_path, 1.0, workers=1, max_queue=1)
    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = pb_grpc.FaceGateStub(ch)
            with ThreadPoolExecutor(4) as pool:
                results = list(pool.map(lambda _: _verify(stub), range(4)))
        codes = sorted(c for c, _, _ in results)
        assert codes == ["OK", "OK", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"], results
        refused = [(t, d) for c, t, d in results if c == "RESOURCE_EXHAUSTED"]
        assert all(t < 0.5 for t, _ in refused), refused           # at once, not after the queue
        assert all("busy" in d for _, d in refused), refused
        assert embedder.runs == 2
        # the queue drained: the next caller is served
        with grpc.insecure_channel(server.address) as ch:
            assert _verify(pb_grpc.FaceGateStub(ch))[0] == "OK"
    finally:
        server.stop()


@pytest.mark.slow
def test_a_request_whose_deadline_is_too_near_never_reaches_the_models(tmp_path):
    server, embedder = _server(tmp_path, 1.0, workers=1, max_queue=4)
    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = pb_grpc.FaceGateStub(ch)
            assert _verify(stub)[0] == "OK"           # the server learns that a Verify takes ~1 s
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(_verify, stub)    # holds the only worker for ~1 s
                time.sleep(0.2)
                # 1.5 s to live: when the worker is free (~0.8 s on) ~0.7 s are left, less than a Verify takes
                late = pool.submit(_verify, stub, ORANGE, 1.5)
                code, took, details = late.result()
                assert first.result()[0] == "OK"
        assert code == "DEADLINE_EXCEEDED"
        assert took < 1.4, took                       # the server's answer, before the caller's own deadline
        assert "not run" in details, details
        assert embedder.runs == 2           # the warm-up and the first: never the late one
    finally:
        server.stop()


def test_an_expired_deadline_is_dropped_before_the_work_runs():
    queue = ModelQueue(workers=1, max_queue=1)
    called = []
    try:
        with pytest.raises(DeadlineTooNear, match="passed"):
            asyncio.run(queue.run(called.append, 1, name="verify", deadline_left=0.0))
        assert called == [] and queue.admitted == 0
        asyncio.run(queue.run(called.append, 2, name="verify", deadline_left=5.0))
        assert called == [2] and queue.admitted == 0
    finally:
        queue.shutdown()


def test_prefetch_threads_hand_work_on_without_raising_the_admission_bound():
    """workers=1, prefetch=1: two calls run at once (the second waits in a worker process's pipe
    in the server), and still only workers + max_queue are admitted."""
    queue = ModelQueue(workers=1, max_queue=1, prefetch=1)
    release, running = threading.Event(), []

    def hold(i):
        running.append(i)
        release.wait(10)
        return i

    async def three():
        first = asyncio.ensure_future(queue.run(hold, 1, name="verify"))
        second = asyncio.ensure_future(queue.run(hold, 2, name="verify"))
        for _ in range(200):
            if len(running) == 2:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(Busy):
            await queue.run(hold, 3, name="verify")
        started = sorted(running)
        release.set()
        return started, await first, await second

    try:
        assert asyncio.run(three()) == ([1, 2], 1, 2)
        assert queue.admitted == 0
    finally:
        queue.shutdown()


@pytest.mark.slow
def test_past_saturation_every_call_ends_by_its_deadline(tmp_path):
    """16 cameras in a closed loop, each call with a 2 s deadline, against a server that answers
    ~10 a second: every call ends within 2.5 s, answered or refused with a status that says why."""
    server, embedder = _server(tmp_path, 0.2, workers=2, max_queue=4)
    results: list[tuple[str, float]] = []
    lock = threading.Lock()
    stop = time.monotonic() + 6.0

    def camera(stub):
        while time.monotonic() < stop:
            code, took, _ = _verify(stub, timeout=2.0)
            with lock:
                results.append((code, took))
            if code != "OK":
                time.sleep(0.05)          # a kiosk's pause before it retries

    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = pb_grpc.FaceGateStub(ch)
            threads = [threading.Thread(target=camera, args=(stub,)) for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert not any(t.is_alive() for t in threads)
    finally:
        server.stop()
    codes = {c for c, _ in results}
    assert codes <= {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}, codes
    assert "OK" in codes and "RESOURCE_EXHAUSTED" in codes, codes
    worst = max(t for _, t in results)
    assert worst <= 2.5, worst
    ok = [t for c, t in results if c == "OK"]
    assert max(ok) < 2.0 and len(ok) >= 20, (len(ok), max(ok))


@pytest.mark.slow
def test_a_40_megapixel_photo_is_decoded_reduced_and_answered(tmp_path):
    server, embedder = _server(tmp_path, 0.0)
    big = encode(draw(face("orange", side=2000), size=(7740, 5160)), "JPEG")       # 39.9 Mpx, a face of 2000 px
    assert len(big) < 8 * 1024 * 1024
    try:
        with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 16 << 20)]) as ch:
            stub = pb_grpc.FaceGateStub(ch)
            t0 = time.perf_counter()
            r = stub.Verify(pb.VerifyRequest(subject_id="ann", image=big), timeout=30)
            took = time.perf_counter() - t0
    finally:
        server.stop()
    assert (r.decision, r.reason) == (pb.ACCEPT, pb.MATCH)
    decode = r.stages[0]
    assert (decode.name, decode.outcome, decode.score) == ("decode", "REDUCED", 8.0)
    # decoded at an eighth of each side (libjpeg's DCT scaling), near the side a site's faces are
    # searched at: 968 x 645, the face 250 px
    assert embedder.last_shape == (645, 968, 3)
    assert took < 5.0, took


@pytest.mark.slow
def test_large_photos_run_on_their_own_worker_at_the_lowest_priority_and_never_hold_a_frame_up(tmp_path):
    # photos over 800 x 600 are "large" here; each detection takes 1 s; one large photo may wait
    server, embedder = _server(tmp_path, 1.0, large_photo_pixels=800 * 600, large_photo_queue=1)
    large = photo(face("orange", side=200), size=(1200, 900))
    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = pb_grpc.FaceGateStub(ch)
            with ThreadPoolExecutor(4) as pool:
                uploads = [pool.submit(_verify, stub, large) for _ in range(3)]   # 1 running, 1 waiting, 1 refused
                time.sleep(0.3)
                frame = _verify(stub)                                            # the frames' workers are free
                uploads = [f.result() for f in uploads]
    finally:
        server.stop()
    assert frame[0] == "OK" and frame[1] < 1.6, frame            # 1 s of detection, not 2 or 3 behind the uploads
    assert sorted(c for c, _, _ in uploads) == ["OK", "OK", "RESOURCE_EXHAUSTED"], uploads
    policies = {name.rsplit("_", 1)[0]: policy for name, policy in embedder.workers_seen}
    assert policies == {"facegate-large": os.SCHED_IDLE, "facegate-model": os.SCHED_OTHER}, embedder.workers_seen


def test_a_photos_pixels_are_read_from_its_header():
    from encoder.images import photo_pixels

    assert photo_pixels(photo(size=(640, 480))) == 640 * 480
    assert photo_pixels(photo(size=(640, 480), fmt="JPEG")[:1000]) == 640 * 480    # the header alone
    assert photo_pixels(b"not a photo") == 0 and photo_pixels(b"") == 0


# ---------------------------------------------------------------------------------- the site's smallest face
def test_a_sites_min_face_px_makes_a_smaller_face_too_small(tmp_path):
    embedder = FakeEmbedder()
    pipeline = fake_pipeline(tmp_path, embedder, gates=False)
    pipeline.enroll("ann", RED)
    pipeline.sites.put("kiosk", min_face_px=80)
    mid = photo(face("orange", side=60))                   # 60 px: enough at the default 40, not at a kiosk's 80
    r = pipeline.verify("ann", mid)
    assert (r.decision, r.reason) == ("ACCEPT", Reason.MATCH) and embedder.min_face_seen == 40
    r = pipeline.verify("ann", mid, site="kiosk")
    assert (r.decision, r.reason) == ("REJECT", Reason.FACE_TOO_SMALL) and "80 px" in r.detail
    assert embedder.min_face_seen == 80
    assert pipeline.identify(mid, site="kiosk").reason == Reason.FACE_TOO_SMALL
    r = pipeline.verify("ann", photo(face("orange", side=90)), site="kiosk")
    assert r.reason == Reason.MATCH


def test_a_photo_larger_than_a_frame_is_searched_as_the_sites_frame_enlarged(tmp_path):
    embedder = FakeEmbedder()
    pipeline = fake_pipeline(tmp_path, embedder, gates=False)
    pipeline.enroll("ann", RED)
    pipeline.sites.put("kiosk", min_face_px=80)
    # 2560 x 1920, four times a 640 x 480 frame: decoded at 1/4; a face of 240 px is one of 60 px in a frame
    big = photo(face("orange", side=240), size=(2560, 1920), fmt="JPEG")
    r = pipeline.verify("ann", big)
    assert (r.decision, r.reason) == ("ACCEPT", Reason.MATCH)
    assert r.stages[0].score == 4.0 and embedder.min_face_seen == 40      # 160 px of the photo: 40 of the decode
    r = pipeline.verify("ann", big, site="kiosk")
    assert (r.decision, r.reason) == ("REJECT", Reason.FACE_TOO_SMALL)
    assert r.detail == "face of 240 px, below 320 px (this site's 80 px in a 640 px frame)", r.detail
    assert embedder.min_face_seen == 80


@pytest.mark.parametrize("bad", [10, 5000, True, "80", 80.0])
def test_a_min_face_px_outside_the_detectors_range_is_refused(bad):
    with pytest.raises(SiteError, match="min_face_px"):
        SitePolicy(min_face_px=bad)


def test_the_site_command_sets_min_face_px(tmp_path):
    from service.cli import main

    assert main(["site", "kiosk", "--min-face-px", "80", "--data-dir", str(tmp_path), "--json"]) == 0
    assert SiteStore(tmp_path).get("kiosk").min_face_px == 80
    assert SiteStore(tmp_path).get("gym").min_face_px == 40
    assert main(["site", "kiosk", "--min-face-px", "5", "--data-dir", str(tmp_path), "--json"]) == 2
