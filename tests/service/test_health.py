"""`facegate health` (exit 0 SERVING, 1 not serving, 2 error) and the plaintext health port
(`serve --health-listen`), against real grpc.aio servers on 127.0.0.1."""
from __future__ import annotations

import asyncio
import json
import socket
import threading

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.cli import main
from service.errors import FailedPrecondition
from service.health import HealthPort

SERVICE = "facegate.v1.FaceGate"


class LoopThread:
    """An asyncio loop in a thread, for grpc.aio servers while the test calls them synchronously."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop():
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def probes(loop):
    port = HealthPort("127.0.0.1:0", (SERVICE,))
    loop.run(port.start())
    yield port
    loop.run(port.stop())


def cli(capsys, *argv) -> tuple[int, dict]:
    rc = main(["health", *argv, "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_the_health_port_answers_serving_for_the_server_and_the_service(probes, capsys):
    address = f"127.0.0.1:{probes.port}"
    assert cli(capsys, "--server", address) == (0, {"server": address, "service": "", "status": "SERVING"})
    assert cli(capsys, "--server", address, "--service", SERVICE)[1]["status"] == "SERVING"


def test_draining_turns_every_service_not_serving_and_the_cli_exits_1(probes, loop, capsys):
    loop.run(probes.draining())
    address = f"127.0.0.1:{probes.port}"
    assert cli(capsys, "--server", address) == (1, {"server": address, "service": "", "status": "NOT_SERVING"})
    assert cli(capsys, "--server", address, "--service", SERVICE)[0] == 1


def test_the_health_port_serves_nothing_but_health(probes):
    from facegate.v1 import facegate_pb2 as pb
    from facegate.v1 import facegate_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{probes.port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.FaceGateStub(ch).GetStatus(pb.GetStatusRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_an_unknown_service_and_an_unreachable_server_are_errors(probes, capsys):
    rc, out = cli(capsys, "--server", f"127.0.0.1:{probes.port}", "--service", "no.such.Service")
    assert rc == 2 and out["error"]["code"] == "NOT_FOUND"
    with socket.socket() as s:          # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    rc, out = cli(capsys, "--server", f"127.0.0.1:{free}", "--timeout", "3")
    assert rc == 2 and out["error"]["code"] == "UNAVAILABLE"


def test_a_server_that_says_unknown_is_not_serving(loop, capsys):
    """Any answer but SERVING is a clean "no" (exit 1), not an error."""
    async def start():
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await servicer.set("", health_pb2.HealthCheckResponse.UNKNOWN)
        return server, port

    server, port = loop.run(start())
    try:
        assert cli(capsys, "--server", f"127.0.0.1:{port}")[0:2] == (1, {"server": f"127.0.0.1:{port}",
                                                                         "service": "", "status": "UNKNOWN"})
    finally:
        loop.run(server.stop(None))


def test_a_taken_health_port_or_a_bad_address_is_a_clear_failed_precondition(probes, loop):
    with pytest.raises(FailedPrecondition, match="--health-listen"):
        loop.run(HealthPort(f"127.0.0.1:{probes.port}", ()).start())
    with pytest.raises(FailedPrecondition, match="not a HOST:PORT"):
        loop.run(HealthPort("nonsense:::", ()).start())


def test_the_tls_flags_go_together(capsys):
    rc, out = cli(capsys, "--server", "127.0.0.1:1", "--tls-dir", "/nonexistent")
    assert rc == 2 and out["error"]["code"] == "INVALID_ARGUMENT" and "--client" in out["error"]["message"]


def _mtls_folder(d):
    """A private CA, a server certificate for 127.0.0.1 and a client certificate `door1`, as
    `facegate certs` lays them out (ca.crt, server.crt/.key, NAME.crt/.key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(name, key, issuer, issuer_key, ca=False, server=False):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
             .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        if not ca:
            usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def write(name, key, crt):
        (d / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        (d / f"{name}.crt").write_bytes(crt.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    write("ca", ca_key, cert("test CA", ca_key, ca_name, ca_key, ca=True))
    for name, server in (("server", True), ("door1", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        write(name, key, cert(name, key, ca_name, ca_key, server=server))


def test_health_over_mutual_tls_with_a_client_certificate(loop, tmp_path, capsys):
    pytest.importorskip("cryptography")
    _mtls_folder(tmp_path)

    async def start():
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        creds = grpc.ssl_server_credentials([((tmp_path / "server.key").read_bytes(),
                                              (tmp_path / "server.crt").read_bytes())],
                                            root_certificates=(tmp_path / "ca.crt").read_bytes(),
                                            require_client_auth=True)
        port = server.add_secure_port("127.0.0.1:0", creds)
        await server.start()
        return server, port

    server, port = loop.run(start())
    address = f"127.0.0.1:{port}"
    try:
        assert cli(capsys, "--server", address, "--tls-dir", str(tmp_path), "--client", "door1")[0:2] == (
            0, {"server": address, "service": "", "status": "SERVING"})
        rc, out = cli(capsys, "--server", address, "--timeout", "3")      # plaintext to a TLS port: no answer
        assert rc == 2 and out["error"]["code"] == "UNAVAILABLE"
    finally:
        loop.run(server.stop(None))
