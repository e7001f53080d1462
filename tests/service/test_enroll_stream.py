"""An Enroll stream's photos run side by side on the model workers (service/servicer.py), on a real
server on a real port around a pipeline whose detection is deliberately slow: each photo is still
answered once, in the order it was sent; photos beside each other still see each other's
templates (the duplicate warning); and the stream goes on after a bad photo."""
from __future__ import annotations

import time

import grpc
import pytest

from facegate.v1 import facegate_pb2 as pb
from facegate.v1 import facegate_pb2_grpc as pb_grpc
from tests.service.fakes import face, fake_pipeline, photo, ServerThread
from tests.service.test_overload import SlowEmbedder

COLOURS = ["red", "blue", "green", "purple", "cyan", "orange"]
SECONDS = 0.4       # each detection


def _server(tmp_path, workers: int):
    embedder = SlowEmbedder(SECONDS)
    return ServerThread(fake_pipeline(tmp_path, embedder, gates=False, workers=workers)), embedder


def _enroll(address, reqs):
    with grpc.insecure_channel(address) as ch:
        t0 = time.perf_counter()
        out = list(pb_grpc.FaceGateStub(ch).Enroll(iter(reqs), timeout=30))
        return out, time.perf_counter() - t0


@pytest.mark.slow
def test_a_streams_photos_run_one_per_worker_and_are_answered_in_order(tmp_path):
    server, embedder = _server(tmp_path, workers=2)
    try:
        reqs = [pb.EnrollRequest(subject_id=f"s{i}", image=photo(face(c)), photo_name=f"s{i}/{c}.png")
                for i, c in enumerate(COLOURS)]
        reqs.insert(3, pb.EnrollRequest(subject_id="s9", image=b"not a photo", photo_name="s9/junk.png"))
        out, seconds = _enroll(server.address, reqs)
    finally:
        server.stop()
    assert [r.photo_name for r in out] == [r.photo_name for r in reqs]
    E = pb.EnrollResponse
    assert [r.status for r in out] == [E.ACCEPTED] * 3 + [E.REJECTED] + [E.ACCEPTED] * 3
    assert out[3].error_code == "INVALID_ARGUMENT"
    assert embedder.runs == 6 and embedder.most_running == 2        # never more than the workers
    assert seconds < 0.75 * 6 * SECONDS, seconds                    # side by side: ~3 rounds of 0.4 s, not 6


@pytest.mark.slow
def test_one_worker_enrolls_one_photo_at_a_time(tmp_path):
    server, embedder = _server(tmp_path, workers=1)
    try:
        reqs = [pb.EnrollRequest(subject_id=f"s{i}", image=photo(face(c)), photo_name=f"s{i}/{c}.png")
                for i, c in enumerate(COLOURS[:3])]
        out, _ = _enroll(server.address, reqs)
    finally:
        server.stop()
    assert [r.status for r in out] == [pb.EnrollResponse.ACCEPTED] * 3
    assert embedder.most_running == 1


@pytest.mark.slow
def test_two_subjects_enrolled_side_by_side_with_one_face_are_still_warned(tmp_path):
    # red and orange are 0.5 apart (a match): whichever is added second warns of the other, even
    # when each photo's duplicate search is slow enough that both would search before either adds
    server, embedder = _server(tmp_path, workers=2)
    store = server.pipeline.store
    search = store.search
    store.search = lambda *a, **kw: (search(*a, **kw), time.sleep(0.3))[0]
    try:
        reqs = [pb.EnrollRequest(subject_id="ann", image=photo(face("red")), photo_name="ann/1.png"),
                pb.EnrollRequest(subject_id="bob", image=photo(face("orange")), photo_name="bob/1.png")]
        out, _ = _enroll(server.address, reqs)
    finally:
        server.stop()
    assert embedder.most_running == 2
    warned = [(r.subject_id, [d.other_subject for d in r.duplicates]) for r in out if r.duplicates]
    assert warned in ([("ann", ["bob"])], [("bob", ["ann"])]), warned
