"""The decisions through a real gRPC server on a real port (service.server.create_server on
127.0.0.1:0) and through the CLI (service.cli.main, --json), on the fake encoder and gates of
fakes.py: the proto's answers (decision and reason enum values, distance -1 for none), status
codes, and the CLI's JSON and exit codes (CONTRACT.md: 0 ACCEPT / identified, 1 REJECT /
unknown, 2 an error). No LFW, no MTCNN."""
from __future__ import annotations

import json

import grpc
import pytest
from fakes import (IDENTIFY_THRESHOLD, SQRT2, THRESHOLD, VERSION, ServerThread, face, fake_pipeline, photo,
                   rpc_error, wav)

from facegate.v1 import facegate_pb2 as pb
from service.cli import main

RED, ORANGE, BLUE, CYAN, GREEN = (photo(face(c)) for c in ("red", "orange", "blue", "cyan", "green"))
NOBODY = photo()
TWO = photo(face("red"), face("blue", at=(0.15, 0.5)))
TINY = photo(face("red", side=30))
DARK_RED = photo(face("red"), light="dark")
WORD_SITE = "pool"
MAX_MESSAGE = 256 * 1024


@pytest.fixture
def served(tmp_path):
    p = fake_pipeline(tmp_path, listen="127.0.0.1:0", workers=1, max_message_bytes=MAX_MESSAGE)
    p.enroll("ann", RED)
    p.enroll("bob", BLUE)
    p.sites.put(WORD_SITE, trigger_word=True)
    server = ServerThread(p)
    yield server
    server.stop()


def code_of(call, *args, **kw) -> grpc.StatusCode:
    return rpc_error(call, *args, **kw).code()


# ---------------------------------------------------------------------------------- the proto
def test_verify_match_over_grpc(stub):
    r = stub.Verify(pb.VerifyRequest(subject_id="ann", image=ORANGE), timeout=10)
    assert (r.decision, r.reason) == (pb.ACCEPT, pb.MATCH)
    assert (r.distance, r.threshold, r.subject_id, r.site) == (0.5, THRESHOLD, "ann", "default")
    assert (r.light_profile, r.encoder_version) == ("day", VERSION)
    assert [(s.name, s.outcome) for s in r.stages] == [("decode", "OK"), ("daynight", "day"), ("detect", "OK"),
                                                       ("encode", "OK"), ("match", "OK")]


@pytest.mark.parametrize("image, reason, distance", [
    (BLUE, pb.NO_MATCH, SQRT2), (NOBODY, pb.NO_FACE, -1.0), (TWO, pb.MULTIPLE_FACES, -1.0),
    (TINY, pb.FACE_TOO_SMALL, -1.0), (DARK_RED, pb.TOO_DARK, -1.0)])
def test_verify_rejections_carry_the_protos_reason(stub, image, reason, distance):
    r = stub.Verify(pb.VerifyRequest(subject_id="ann", image=image), timeout=10)
    assert (r.decision, pb.Reason.Name(r.reason)) == (pb.REJECT, pb.Reason.Name(reason))
    assert r.distance == pytest.approx(distance)
    assert bool(r.detail) == (reason != pb.NO_MATCH)           # a retake is explained; a stranger is not


def test_verify_at_a_word_site_over_grpc(stub):
    r = stub.Verify(pb.VerifyRequest(subject_id="ann", image=RED, site=WORD_SITE), timeout=10)
    assert (r.decision, r.reason, [s.name for s in r.stages]) == (pb.REJECT, pb.TRIGGER_NOT_HEARD,
                                                                  ["decode", "trigger_word"])
    r = stub.Verify(pb.VerifyRequest(subject_id="ann", image=RED, site=WORD_SITE, audio=wav(word_at=1.0)),
                    timeout=10)
    assert (r.decision, r.reason, r.stages[1].outcome) == (pb.ACCEPT, pb.MATCH, "HEARD")


def test_identify_over_grpc(stub):
    r = stub.Identify(pb.IdentifyRequest(image=CYAN), timeout=10)
    assert (r.decision, r.reason, r.subject_id, r.votes, r.votes_needed) == (pb.ACCEPT, pb.MATCH, "bob", 1, 1)
    assert [(n.subject_id, round(n.distance, 4)) for n in r.neighbours] == [("bob", 0.5), ("ann", round(SQRT2, 4))]
    assert r.threshold == pytest.approx(IDENTIFY_THRESHOLD)
    r = stub.Identify(pb.IdentifyRequest(image=GREEN), timeout=10)
    assert (r.decision, r.reason, r.subject_id, r.votes) == (pb.REJECT, pb.NO_MATCH, "", 0)
    assert r.detail and r.stages[-1].outcome == "NONE_WITHIN"


def test_enroll_stream_answers_each_photo_and_goes_on_after_a_bad_one(stub):
    reqs = [pb.EnrollRequest(subject_id="cy", image=GREEN, photo_name="cy/1.png"),
            pb.EnrollRequest(subject_id="cy", image=GREEN, photo_name="cy/1-again.png"),
            pb.EnrollRequest(subject_id="cy", image=NOBODY, photo_name="cy/empty.png"),
            pb.EnrollRequest(subject_id="cy", image=b"not a photo", photo_name="cy/junk.png"),
            pb.EnrollRequest(subject_id="card-4711", image=ORANGE, photo_name="card/1.png")]
    out = list(stub.Enroll(iter(reqs), timeout=10))
    assert [r.photo_name for r in out] == [r.photo_name for r in reqs]
    E = pb.EnrollResponse
    assert [r.status for r in out] == [E.ACCEPTED, E.ALREADY_ENROLLED, E.REJECTED, E.REJECTED, E.ACCEPTED]
    assert out[1].template_id == out[0].template_id
    assert (out[2].reason, out[2].error_code) == (pb.NO_FACE, "")
    assert (out[3].reason, out[3].error_code) == (pb.REASON_UNSPECIFIED, "INVALID_ARGUMENT")
    assert [(d.other_subject, d.distance) for d in out[4].duplicates] == [("ann", 0.5)]
    assert stub.GetStatus(pb.GetStatusRequest(), timeout=10).templates == 4


def test_cluster_over_grpc(stub):
    photos = [pb.ClusterPhoto(name=n, image=b) for n, b in
              [("r", RED), ("b", BLUE), ("o", ORANGE), ("none", NOBODY), ("c", CYAN)]]
    r = stub.Cluster(pb.ClusterRequest(photos=photos, k=2), timeout=10)
    got = {a.name: (a.cluster, a.reason) for a in r.assignments}
    assert got["none"] == (-1, pb.NO_FACE)
    assert got["r"][0] == got["o"][0] != got["b"][0] == got["c"][0]
    assert all(got[n][1] == pb.REASON_UNSPECIFIED for n in "robc")
    assert r.k == 2 and len(r.centroids) == 2 and len(r.centroids[0].vector) == 128


def test_delete_and_status_over_grpc(stub):
    s = stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    assert (s.subjects, s.templates, s.encoder_version, s.encoder_arithmetic) == (2, 2, VERSION, "float32-fake")
    r = stub.DeleteSubject(pb.DeleteSubjectRequest(subject_id="bob"), timeout=10)
    assert (r.subject_id, r.removed) == ("bob", 1)
    assert code_of(stub.Verify, pb.VerifyRequest(subject_id="bob", image=BLUE)) == grpc.StatusCode.NOT_FOUND
    assert stub.GetStatus(pb.GetStatusRequest(), timeout=10).subjects == 1


@pytest.mark.parametrize("rpc, request_, code", [
    ("Verify", pb.VerifyRequest(subject_id="", image=RED), grpc.StatusCode.INVALID_ARGUMENT),
    ("Verify", pb.VerifyRequest(subject_id="ann", image=b""), grpc.StatusCode.INVALID_ARGUMENT),
    ("Verify", pb.VerifyRequest(subject_id="ann", image=b"not a photo at all"), grpc.StatusCode.INVALID_ARGUMENT),
    ("Verify", pb.VerifyRequest(subject_id="zed", image=RED), grpc.StatusCode.NOT_FOUND),
    ("Verify", pb.VerifyRequest(subject_id="ann", image=RED, site=WORD_SITE, audio=b"RIFF junk"),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("Verify", pb.VerifyRequest(subject_id="ann", image=b"\xff" * (2 * MAX_MESSAGE)),
     grpc.StatusCode.RESOURCE_EXHAUSTED),
    ("Identify", pb.IdentifyRequest(image=RED, k=101), grpc.StatusCode.INVALID_ARGUMENT),
    ("Identify", pb.IdentifyRequest(image=RED, k=-1), grpc.StatusCode.INVALID_ARGUMENT),
    ("DeleteSubject", pb.DeleteSubjectRequest(subject_id="zed"), grpc.StatusCode.NOT_FOUND),
    ("DeleteSubject", pb.DeleteSubjectRequest(subject_id=""), grpc.StatusCode.INVALID_ARGUMENT),
    ("Cluster", pb.ClusterRequest(photos=[], k=0), grpc.StatusCode.INVALID_ARGUMENT),
    ("Cluster", pb.ClusterRequest(photos=[pb.ClusterPhoto(name="r", image=RED)], k=2),
     grpc.StatusCode.INVALID_ARGUMENT),
])
def test_malformed_requests_get_their_status_code_and_the_server_keeps_serving(stub, rpc, request_, code):
    assert code_of(getattr(stub, rpc), request_) == code
    assert stub.Verify(pb.VerifyRequest(subject_id="ann", image=RED), timeout=10).reason == pb.MATCH


def test_a_threshold_of_another_encoder_is_failed_precondition(served, stub):
    served.pipeline.thresholds.put("gym", "day", 0.9, "old-encoder-0")
    with pytest.raises(grpc.RpcError) as e:
        stub.Verify(pb.VerifyRequest(subject_id="ann", image=RED, site="gym"), timeout=10)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "old-encoder-0" in e.value.details()


def test_a_truncated_png_is_invalid_argument(stub):
    bad = pb.VerifyRequest(subject_id="ann", image=b"\x89PNG\r\n\x1a\n garbage")
    assert code_of(stub.Verify, bad) == grpc.StatusCode.INVALID_ARGUMENT


def test_health_says_serving(served):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(served.address) as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="facegate.v1.FaceGate"),
                                                 timeout=10)
    assert r.status == health_pb2.HealthCheckResponse.SERVING


# ---------------------------------------------------------------------------------- the CLI
def cli(capsys, served, *args) -> tuple[int, list[dict]]:
    rc = main([*map(str, args), "--server", served.address, "--json"])
    out = capsys.readouterr().out
    return rc, [json.loads(line) for line in out.splitlines() if line.strip()]


VERIFY_KEYS = {"decision", "reason", "subject", "distance", "threshold", "site", "light_profile",
               "encoder_version", "latency_ms"}


def test_cli_verify_exit_codes(served, capsys, tmp_path):
    (tmp_path / "orange.png").write_bytes(ORANGE)
    (tmp_path / "blue.png").write_bytes(BLUE)
    (tmp_path / "nobody.png").write_bytes(NOBODY)
    rc, [r] = cli(capsys, served, "verify", tmp_path / "orange.png", "--subject", "ann")
    assert rc == 0 and VERIFY_KEYS <= set(r)
    assert (r["decision"], r["reason"], r["distance"], r["threshold"]) == ("ACCEPT", "MATCH", 0.5, THRESHOLD)
    rc, [r] = cli(capsys, served, "verify", tmp_path / "blue.png", "--subject", "ann")
    assert (rc, r["decision"], r["reason"]) == (1, "REJECT", "NO_MATCH")
    rc, [r] = cli(capsys, served, "verify", tmp_path / "nobody.png", "--subject", "ann")
    assert (rc, r["reason"], r["distance"]) == (1, "NO_FACE", None)


def test_cli_verify_errors_are_json_with_exit_code_2(served, capsys, tmp_path):
    (tmp_path / "red.png").write_bytes(RED)
    (tmp_path / "junk.png").write_bytes(b"not a photo")
    rc, [r] = cli(capsys, served, "verify", tmp_path / "red.png", "--subject", "zed")
    assert rc == 2 and r["error"]["code"] == "NOT_FOUND" and "zed" in r["error"]["message"]
    rc, [r] = cli(capsys, served, "verify", tmp_path / "junk.png", "--subject", "ann")
    assert rc == 2 and r["error"]["code"] == "INVALID_ARGUMENT"
    rc, [r] = cli(capsys, served, "verify", tmp_path / "missing.png", "--subject", "ann")
    assert rc == 2 and r["error"]["code"] == "INVALID_ARGUMENT" and "missing.png" in r["error"]["message"]


def test_cli_verify_with_audio_at_a_word_site(served, capsys, tmp_path):
    (tmp_path / "red.png").write_bytes(RED)
    (tmp_path / "silent.wav").write_bytes(wav())
    (tmp_path / "said.wav").write_bytes(wav(word_at=1.0))
    rc, [r] = cli(capsys, served, "verify", tmp_path / "red.png", "--subject", "ann", "--site", WORD_SITE,
                  "--audio", tmp_path / "silent.wav")
    assert (rc, r["reason"], r["site"]) == (1, "TRIGGER_NOT_HEARD", WORD_SITE)
    rc, [r] = cli(capsys, served, "verify", tmp_path / "red.png", "--subject", "ann", "--site", WORD_SITE,
                  "--audio", tmp_path / "said.wav")
    assert (rc, r["reason"]) == (0, "MATCH")


def test_cli_identify_exit_codes(served, capsys, tmp_path):
    (tmp_path / "cyan.png").write_bytes(CYAN)
    (tmp_path / "green.png").write_bytes(GREEN)
    rc, [r] = cli(capsys, served, "identify", tmp_path / "cyan.png")
    assert (rc, r["subject"], r["reason"], r["votes"]) == (0, "bob", "MATCH", 1)
    assert r["neighbours"][0] == {"subject": "bob", "distance": 0.5} and r["threshold"] == IDENTIFY_THRESHOLD
    rc, [r] = cli(capsys, served, "identify", tmp_path / "green.png")
    assert (rc, r["subject"], r["reason"]) == (1, None, "NO_MATCH")
    rc, [r] = cli(capsys, served, "identify", tmp_path / "cyan.png", "--k", "101")
    assert rc == 2 and r["error"]["code"] == "INVALID_ARGUMENT"


def test_cli_enroll_reports_each_kind_of_answer(served, capsys, tmp_path):
    for rel, data in {"cy/1.png": GREEN, "cy/2.png": photo(face("green"), size=(300, 300)),
                      "cy/nobody.png": NOBODY, "dee/1.png": ORANGE, "dee/notes.txt": b"not a photo"}.items():
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    rc, [s] = cli(capsys, served, "enroll", tmp_path)
    assert rc == 0
    assert (s["subjects"], s["accepted"], s["already_enrolled"]) == (2, 3, 0)
    assert [(x["path"], x["reason"]) for x in s["rejected"]] == [(str(tmp_path / "cy/nobody.png"), "NO_FACE")]
    assert [(d["path"], d["subject"], d["other_subject"], d["distance"]) for d in s["duplicate_warnings"]] == [
        (str(tmp_path / "dee/1.png"), "dee", "ann", 0.5)]
    rc, [s] = cli(capsys, served, "enroll", tmp_path)                     # the job again: nothing added
    assert (rc, s["accepted"], s["already_enrolled"]) == (0, 0, 3)


def test_cli_cluster_delete_and_status(served, capsys, tmp_path):
    paths = []
    for name, data in [("r.png", RED), ("o.png", ORANGE), ("b.png", BLUE), ("none.png", NOBODY)]:
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    rc, [r] = cli(capsys, served, "cluster", *paths, "--k", "2")
    assert (rc, r["k"], r["centroids_count"]) == (0, 2, 2)
    a = r["assignments"]
    assert a[3] == {"path": str(paths[3]), "cluster": -1, "reason": "NO_FACE"}
    assert a[0]["cluster"] == a[1]["cluster"] != a[2]["cluster"]
    rc, [r] = cli(capsys, served, "status")
    assert rc == 0 and (r["subjects"], r["templates"], r["encoder_version"]) == (2, 2, VERSION)
    assert isinstance(r["index_version"], str) and r["index_version"]
    status = r
    rc, [r] = cli(capsys, served, "delete", "--subject", "ann")
    assert (rc, r["subject"], r["removed"], r["deleted_by"]) == (0, "ann", 1, "local")
    assert r["removed_from"] == [{"index_version": status["index_version"], "index_name": "index", "templates": 1}]
    rc, [r] = cli(capsys, served, "delete", "--subject", "ann")
    assert rc == 2 and r["error"]["code"] == "NOT_FOUND"
