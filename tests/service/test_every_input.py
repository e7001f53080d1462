"""Every input answered (CONTRACT.md): a corrupt photo is INVALID_ARGUMENT wherever it comes, an
Enroll stream goes on past a bad photo, and an unexpected exception below the servicer is
INTERNAL with the request id, its traceback logged under that id, never UNKNOWN with Python's
text. Through a real gRPC server on a real port, on the fake encoder of fakes.py (a face of a
colour outside its palette makes it raise, as a bug would)."""
from __future__ import annotations

import logging
import re

import grpc
import pytest
from fakes import ServerThread, draw, encode, face, fake_pipeline, photo
from fakes import rpc_error as error_of

from facegate.v1 import facegate_pb2 as pb

RED, ORANGE, BLUE, CYAN = (photo(face(c)) for c in ("red", "orange", "blue", "cyan"))
TRUNCATED = photo(face("red"), fmt="JPEG")[:600]
CORRUPT_PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
TINY_PNG = encode(draw(size=(1, 1)))


def _bug_photo() -> bytes:
    img = draw()
    img[100:200, 150:250] = (250, 250, 0)            # a "face" of a colour the fake encoder does not know
    return encode(img)


BUG = _bug_photo()


@pytest.fixture
def served(tmp_path):
    p = fake_pipeline(tmp_path, listen="127.0.0.1:0", workers=1)
    p.enroll("ann", RED)
    server = ServerThread(p)
    yield server
    server.stop()


def enroll(stub, photos: list[tuple[str, bytes]], rid: str = "") -> list[pb.EnrollResponse]:
    reqs = (pb.EnrollRequest(subject_id=s, image=img, photo_name=f"{i}.png") for i, (s, img) in enumerate(photos))
    return list(stub.Enroll(reqs, timeout=20, metadata=[("x-request-id", rid)] if rid else None))


def test_an_enroll_stream_answers_a_corrupt_photo_and_enrolls_every_photo_after_it(stub):
    job = [("bob", BLUE), ("bob", TRUNCATED), ("bob", CORRUPT_PNG), ("bob", TINY_PNG), ("bob", CYAN),
           ("ann", ORANGE)]
    answers = enroll(stub, job)
    assert [a.photo_name for a in answers] == [f"{i}.png" for i in range(len(job))]
    assert [a.status for a in answers] == [pb.EnrollResponse.ACCEPTED] + [pb.EnrollResponse.REJECTED] * 3 + \
        [pb.EnrollResponse.ACCEPTED] * 2
    assert [a.error_code for a in answers[1:4]] == ["INVALID_ARGUMENT"] * 3
    assert "corrupt or truncated" in answers[1].detail and "undecodable" in answers[2].detail
    assert "too small to hold a face" in answers[3].detail
    status = stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    assert (status.subjects, status.templates) == (2, 4)      # ann's 2, bob's 2: nothing after the bad ones lost


@pytest.mark.parametrize("image", [TRUNCATED, CORRUPT_PNG, TINY_PNG, b"GIF89a\x01\x00\x01\x00", b"\xff\xd8\xff"])
def test_a_bad_photo_is_invalid_argument_in_every_rpc(stub, image):
    for call, request in [(stub.Verify, pb.VerifyRequest(subject_id="ann", image=image)),
                          (stub.Identify, pb.IdentifyRequest(image=image)),
                          (stub.Cluster, pb.ClusterRequest(photos=[pb.ClusterPhoto(name="a", image=RED),
                                                                   pb.ClusterPhoto(name="b", image=image)]))]:
        e = error_of(call, request)
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (call, e.details())
        assert "Traceback" not in e.details() and "Unexpected" not in e.details()
    assert "photo 2 of 2" in error_of(stub.Cluster, pb.ClusterRequest(
        photos=[pb.ClusterPhoto(name="a", image=RED), pb.ClusterPhoto(name="b", image=image)])).details()


def test_an_unexpected_exception_is_internal_with_the_request_id_and_logged(stub, caplog):
    caplog.set_level(logging.ERROR, logger="facegate.servicer")
    e = error_of(stub.Verify, pb.VerifyRequest(subject_id="ann", image=BUG), metadata=[("x-request-id", "cam7-0042")])
    assert e.code() == grpc.StatusCode.INTERNAL
    assert "cam7-0042" in e.details() and "palette" not in e.details()     # the id, not Python's text
    logged = [r for r in caplog.records if "cam7-0042" in r.getMessage()]
    assert logged and logged[0].exc_info and "palette" in str(logged[0].exc_info[1])
    e = error_of(stub.Identify, pb.IdentifyRequest(image=BUG))
    assert e.code() == grpc.StatusCode.INTERNAL and re.search(r"request id [0-9a-f]{12}", e.details())
    e = error_of(stub.Cluster, pb.ClusterRequest(photos=[pb.ClusterPhoto(name="x", image=BUG)]))
    assert e.code() == grpc.StatusCode.INTERNAL
    assert stub.Verify(pb.VerifyRequest(subject_id="ann", image=ORANGE), timeout=10).decision == pb.ACCEPT


def test_an_unexpected_exception_in_an_enroll_stream_is_that_photos_answer(stub):
    answers = enroll(stub, [("bob", BLUE), ("bob", BUG), ("bob", CYAN)], rid="job-9")
    assert [a.status for a in answers] == [pb.EnrollResponse.ACCEPTED, pb.EnrollResponse.REJECTED,
                                           pb.EnrollResponse.ACCEPTED]
    assert answers[1].error_code == "INTERNAL" and "job-9" in answers[1].detail
    assert "palette" not in answers[1].detail
