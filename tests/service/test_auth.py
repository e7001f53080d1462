"""Who may call what (CONTRACT.md), over real mutual TLS on a real port: the server
(service.server.create_server with settings.tls_dir, in a thread of this process) around a real
pipeline on the fake encoder of fakes.py, and clients holding real certificates made by
`service.certs` (a door at site "lab", an enroller, an admin; a second CA's admin; the server's
own certificate, which carries no role)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from fakes import ServerThread, face, fake_pipeline, photo
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from facegate.v1 import facegate_pb2 as pb
from facegate.v1 import facegate_pb2_grpc as pb_grpc
from service import certs
from service.caller import LOCAL, Caller, current_caller
from service.cli import main

ROOT = Path(__file__).resolve().parents[2]
RED, ORANGE, BLUE, CYAN, GREEN = (photo(face(c)) for c in ("red", "orange", "blue", "cyan", "green"))
DOOR_SITE = "lab"
CLIENTS = {"door": ("door-lab", DOOR_SITE), "enroller": ("enroll-job", None), "admin": ("ops", None)}
# CONTRACT.md's table, written out here (not imported from service.auth) so that a change there fails here
MAY = {"door": {"Verify", "Identify", "GetStatus"},
       "enroller": {"Enroll", "DeleteSubject", "Cluster", "GetStatus"},
       "admin": {"Verify", "Identify", "Enroll", "DeleteSubject", "Cluster", "GetStatus"}}
RPCS = ["Verify", "Identify", "Enroll", "DeleteSubject", "Cluster", "GetStatus"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """DIR: the service's CA, the server's certificate and one client per role; OTHER: another CA."""
    d = tmp_path_factory.mktemp("tls")
    certs.init(d)
    for role, (name, site) in CLIENTS.items():
        certs.issue(d, name, role, site)
    other = tmp_path_factory.mktemp("other-ca")
    certs.init(other)
    certs.issue(other, "ops", "admin")
    return d, other


@pytest.fixture(scope="module")
def served(pki, tmp_path_factory):
    p = fake_pipeline(tmp_path_factory.mktemp("data"), listen="127.0.0.1:0", workers=1, tls_dir=pki[0])
    p.enroll("ann", RED)
    p.enroll("bob", BLUE)
    server = ServerThread(p)
    yield server
    server.stop()


def credentials(d: Path, name: str | None, ca: Path | None = None) -> grpc.ChannelCredentials:
    """Trust `ca` (default: d's CA); present d's NAME.crt (None: no client certificate)."""
    root = ((ca or d) / "ca.crt").read_bytes()
    if name is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=(d / f"{name}.key").read_bytes(),
                                        certificate_chain=(d / f"{name}.crt").read_bytes())


@pytest.fixture(scope="module")
def stubs(pki, served):
    """A FaceGate stub per role, each over its own mutual-TLS channel."""
    channels = {role: grpc.secure_channel(served.address, credentials(pki[0], name))
                for role, (name, _) in CLIENTS.items()}
    yield {role: pb_grpc.FaceGateStub(ch) for role, ch in channels.items()}
    for ch in channels.values():
        ch.close()


def call(stub, rpc: str, served, role: str):
    """One call of `rpc` that succeeds when it is allowed; returns what it answered."""
    if rpc == "Verify":
        return stub.Verify(pb.VerifyRequest(subject_id="ann", image=ORANGE), timeout=10)
    if rpc == "Identify":
        return stub.Identify(pb.IdentifyRequest(image=CYAN), timeout=10)
    if rpc == "Enroll":
        return list(stub.Enroll(iter([pb.EnrollRequest(subject_id=f"new-{role}", image=GREEN, photo_name="g.png")]),
                                timeout=10))
    if rpc == "DeleteSubject":
        served.pipeline.enroll(f"leaver-{role}", GREEN)
        return stub.DeleteSubject(pb.DeleteSubjectRequest(subject_id=f"leaver-{role}"), timeout=10)
    if rpc == "Cluster":
        return stub.Cluster(pb.ClusterRequest(photos=[pb.ClusterPhoto(name="r", image=RED),
                                                      pb.ClusterPhoto(name="b", image=BLUE)], k=2), timeout=10)
    return stub.GetStatus(pb.GetStatusRequest(), timeout=10)


@pytest.mark.parametrize("role", list(CLIENTS))
@pytest.mark.parametrize("rpc", RPCS)
def test_each_role_may_call_its_rpcs_and_no_other(stubs, served, role, rpc):
    store = served.pipeline.store
    if rpc in MAY[role]:
        r = call(stubs[role], rpc, served, role)
        if rpc == "Enroll":
            assert [x.status for x in r] == [pb.EnrollResponse.ACCEPTED] and store.has_subject(f"new-{role}")
            store.remove_subject(f"new-{role}")
        elif rpc == "DeleteSubject":
            assert r.removed == 1 and not store.has_subject(f"leaver-{role}")
        elif rpc == "Verify":
            assert (r.decision, r.reason) == (pb.ACCEPT, pb.MATCH)
        elif rpc == "Identify":
            assert r.subject_id == "bob"
        elif rpc == "Cluster":
            assert r.k == 2
        else:
            assert r.subjects == 2
        return
    with pytest.raises(grpc.RpcError) as e:
        call(stubs[role], rpc, served, role)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert role in e.value.details() and rpc in e.value.details()
    assert not store.has_subject(f"new-{role}")                          # a refused Enroll enrolled nothing
    if rpc == "DeleteSubject":                                           # ...and a refused delete removed nothing
        assert store.has_subject(f"leaver-{role}")
        store.remove_subject(f"leaver-{role}")


# ---------------------------------------------------------------------------------- a door's site
def test_a_door_answers_for_its_own_site_only(stubs):
    door = stubs["door"]
    for site in ("", DOOR_SITE):          # empty: its own
        r = door.Verify(pb.VerifyRequest(subject_id="ann", image=ORANGE, site=site), timeout=10)
        assert (r.decision, r.site) == (pb.ACCEPT, DOOR_SITE)
        assert door.Identify(pb.IdentifyRequest(image=CYAN, site=site), timeout=10).site == DOOR_SITE
    for rpc, request in [("Verify", pb.VerifyRequest(subject_id="ann", image=ORANGE, site="gym")),
                         ("Identify", pb.IdentifyRequest(image=CYAN, site="gym"))]:
        with pytest.raises(grpc.RpcError) as e:
            getattr(door, rpc)(request, timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "gym" in e.value.details() and DOOR_SITE in e.value.details()


def test_other_roles_name_any_site(stubs):
    admin = stubs["admin"]
    assert admin.Verify(pb.VerifyRequest(subject_id="ann", image=ORANGE), timeout=10).site == "default"
    assert admin.Verify(pb.VerifyRequest(subject_id="ann", image=ORANGE, site="gym"), timeout=10).site == "gym"


def test_a_doors_identify_names_no_one_else(stubs):
    admin = stubs["admin"].Identify(pb.IdentifyRequest(image=CYAN), timeout=10)
    door = stubs["door"].Identify(pb.IdentifyRequest(image=CYAN), timeout=10)
    assert [n.subject_id for n in admin.neighbours] == ["bob", "ann"]
    assert (door.subject_id, door.decision, list(door.neighbours)) == ("bob", pb.ACCEPT, [])
    assert [s.score for s in admin.stages if s.name == "match"] == [pytest.approx(0.5)]
    assert [s.score for s in door.stages if s.name == "match"] == [0.0]      # no nearest distance either
    unknown = stubs["door"].Identify(pb.IdentifyRequest(image=GREEN), timeout=10)
    assert (unknown.subject_id, list(unknown.neighbours)) == ("", [])
    assert "ann" not in str(unknown) and "bob" not in str(unknown)


def test_what_a_door_is_not_told():
    from service.auth import redact_for_door

    def answer(subject: str) -> pb.IdentifyResponse:
        return pb.IdentifyResponse(subject_id=subject, votes=1, votes_needed=2, decision=pb.ACCEPT if subject else
                                   pb.REJECT, neighbours=[pb.Neighbour(subject_id="ann", distance=0.4)],
                                   stages=[pb.StageResult(name="detect", score=0.99),
                                           pb.StageResult(name="match", score=0.4)])
    unknown, known = answer(""), answer("ann")
    redact_for_door(unknown)
    redact_for_door(known)
    assert (list(unknown.neighbours), unknown.votes, [s.score for s in unknown.stages]) == ([], 0, [
        pytest.approx(0.99), 0.0])
    assert (known.subject_id, known.votes, known.votes_needed, list(known.neighbours)) == ("ann", 1, 2, [])


# ---------------------------------------------------------------------------------- the caller
def test_the_pipeline_sees_the_certificates_caller(stubs, served, monkeypatch):
    """current_caller reaches the pipeline's worker thread, for a unary call and the Enroll stream."""
    seen = []
    p = served.pipeline
    status, enroll = p.status, p.enroll
    monkeypatch.setattr(p, "status", lambda: (seen.append(current_caller.get()), status())[1])
    monkeypatch.setattr(p, "enroll", lambda *a: (seen.append(current_caller.get()), enroll(*a))[1])
    stubs["door"].GetStatus(pb.GetStatusRequest(), timeout=10)
    stubs["admin"].GetStatus(pb.GetStatusRequest(), timeout=10)
    list(stubs["enroller"].Enroll(iter([pb.EnrollRequest(subject_id="ann", image=RED, photo_name="a.png")]),
                                  timeout=10))
    assert seen == [Caller("door-lab", "door", DOOR_SITE), Caller("ops", "admin"), Caller("enroll-job", "enroller")]
    assert current_caller.get() == LOCAL                       # nothing leaked into this thread


# ---------------------------------------------------------------------------------- who gets in
def test_health_and_reflection_are_open_to_every_client(pki, served):
    with grpc.secure_channel(served.address, credentials(pki[0], "door-lab")) as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="facegate.v1.FaceGate"),
                                                 timeout=10)
        assert r.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                              timeout=10))
        assert "facegate.v1.FaceGate" in {s.name for s in resp.list_services_response.service}


def roleless_certificate(d: Path, name: str) -> None:
    """A client certificate signed by d's CA (so the handshake admits it) that names no role: made
    by hand, as another tool than `certs issue` would."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))


def test_a_certificate_without_a_role_is_refused(pki, served):
    roleless_certificate(pki[0], "printer")
    with grpc.secure_channel(served.address, credentials(pki[0], "printer")) as ch:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.FaceGateStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "no role" in e.value.details()


@pytest.mark.parametrize("how", ["plaintext", "no client certificate", "another CA's certificate",
                                 "the server's certificate"])
def test_the_handshake_refuses_strangers(pki, served, how):
    d, other = pki
    if how == "plaintext":
        ch = grpc.insecure_channel(served.address)
    elif how == "no client certificate":
        ch = grpc.secure_channel(served.address, credentials(d, None))
    elif how == "another CA's certificate":       # trusts our server, presents a certificate our CA never signed
        ch = grpc.secure_channel(served.address, credentials(other, "ops", ca=d))
    else:       # signed by our CA, but for a server (extended key usage serverAuth): no client's
        ch = grpc.secure_channel(served.address, credentials(d, "server"))
    with ch:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.FaceGateStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


# ---------------------------------------------------------------------------------- the CLI
def test_cli_calls_with_a_client_certificate(pki, served, capsys):
    d = str(pki[0])
    assert main(["status", "--server", served.address, "--tls-dir", d, "--client", "door-lab", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["subjects"] == 2
    assert main(["delete", "--server", served.address, "--subject", "ann", "--tls-dir", d, "--client",
                 "door-lab", "--json"]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert err["code"] == "PERMISSION_DENIED" and "DeleteSubject" in err["message"]
    assert main(["status", "--server", served.address, "--json"]) == 2                     # no certificate
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "UNAVAILABLE"
    assert main(["status", "--server", served.address, "--tls-dir", d, "--json"]) == 2       # --client missing
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "INVALID_ARGUMENT"
    assert main(["status", "--server", served.address, "--tls-dir", d, "--client", "nobody", "--json"]) == 2
    assert "certs issue" in json.loads(capsys.readouterr().out)["error"]["message"]


def test_a_doors_enroll_through_the_cli_is_refused(pki, served, tmp_path):
    (tmp_path / "cy").mkdir()
    (tmp_path / "cy" / "1.png").write_bytes(GREEN)
    p = subprocess.run([sys.executable, "-m", "service.cli", "enroll", str(tmp_path), "--server", served.address,
                        "--tls-dir", str(pki[0]), "--client", "door-lab", "--json"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    err = json.loads(p.stdout)["error"]
    assert err["code"] == "PERMISSION_DENIED" and "door" in err["message"] and "Enroll" in err["message"]
    assert not served.pipeline.store.has_subject("cy")


def test_every_client_command_takes_the_tls_flags():
    from service.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    clients = [name for name, p in sub.items() if any(a.dest == "server" for a in p._actions)]
    assert {"enroll", "verify", "identify", "cluster", "delete", "status"} <= set(clients)
    for name in clients:
        assert {"tls_dir", "client"} <= {a.dest for a in sub[name]._actions}, name


# ---------------------------------------------------------------------------------- without TLS: loopback only
@pytest.mark.parametrize("listen, loopback", [
    ("127.0.0.1:50051", True), ("127.0.0.9:1", True), ("localhost:50051", True), ("[::1]:50051", True),
    ("unix:/run/facegate.sock", True), ("0.0.0.0:50051", False), ("[::]:50051", False), (":50051", False),
    ("192.168.1.20:50051", False), ("gate.example.edu:50051", False), ("localhost.evil.example:1", False)])
def test_which_addresses_are_loopback(listen, loopback):
    from service.auth import is_loopback

    assert is_loopback(listen) is loopback


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "gate.example.edu:50051"])
def test_serve_beyond_loopback_without_tls_exits_2(listen, tmp_path):
    p = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--listen", listen, "--data-dir",
                        str(tmp_path / "data")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    err = json.loads(p.stdout)["error"]
    assert err["code"] == "INVALID_ARGUMENT" and "--tls-dir" in err["message"] and "--insecure" in err["message"]
    assert not (tmp_path / "data").exists()             # refused before anything was opened


def test_serve_beyond_loopback_with_insecure_or_tls(pki, tmp_path):
    """create_server itself refuses a plaintext port beyond loopback, and listens there with
    --insecure (every caller the local admin) or with mutual TLS."""
    from service.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        ServerThread(fake_pipeline(tmp_path / "a", listen="0.0.0.0:0", gates=False))
    for name, extra in [("insecure", {"insecure": True}), ("tls", {"tls_dir": pki[0]})]:
        s = ServerThread(fake_pipeline(tmp_path / name, listen="0.0.0.0:0", gates=False, **extra))
        try:
            creds = credentials(pki[0], "ops") if name == "tls" else None
            ch = grpc.secure_channel(s.address, creds) if creds else grpc.insecure_channel(s.address)
            with ch:
                assert pb_grpc.FaceGateStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10).subjects == 0
        finally:
            s.stop()


def test_serve_with_a_tls_dir_lacking_the_servers_certificate_exits_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--listen", "127.0.0.1:0", "--tls-dir",
                        str(tmp_path), "--data-dir", str(tmp_path / "data")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    err = json.loads(p.stdout)["error"]
    assert err["code"] == "FAILED_PRECONDITION" and "certs init" in err["message"]
