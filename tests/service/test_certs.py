"""The private CA of service/certs.py and `facegate certs`: what the files hold (read back with the
`cryptography` package, as an outside tool would), their modes, and every refusal."""
from __future__ import annotations

import ipaddress
import json
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from service import certs
from service.caller import Caller
from service.certs import CertError, NoRole, caller_of
from service.cli import main


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca(tmp_path):
    d = tmp_path / "tls"
    certs.init(d, ["gate.example.edu", "10.0.0.5"])
    return d


def test_init_writes_a_ca_and_a_server_certificate_for_the_hosts(ca):
    root, server = load(ca / "ca.crt"), load(ca / "server.crt")
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server.verify_directly_issued_by(root)                            # raises if the CA did not sign it
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "gate.example.edu"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                       ipaddress.ip_address("10.0.0.5")]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert (mode(ca / "ca.key"), mode(ca / "server.key")) == (0o600, 0o600)
    assert not list(ca.glob("*.tmp"))


def test_init_never_replaces_a_ca(ca):
    before = {p.name: p.read_bytes() for p in ca.iterdir()}
    with pytest.raises(CertError) as e:
        certs.init(ca)
    assert e.value.code == "ALREADY_EXISTS"
    assert {p.name: p.read_bytes() for p in ca.iterdir()} == before
    (ca / "ca.crt").unlink()                     # half a CA is a CA too: its key would be lost
    with pytest.raises(CertError):
        certs.init(ca)
    assert (ca / "ca.key").read_bytes() == before["ca.key"]


@pytest.mark.parametrize("role, site", [("door", "lab"), ("enroller", None), ("admin", None)])
def test_issue_puts_the_role_and_a_doors_site_in_the_certificate(ca, role, site):
    out = certs.issue(ca, "c1", role, site)
    cert = load(ca / "c1.crt")
    cert.verify_directly_issued_by(load(ca / "ca.crt"))
    subject = {a.oid: a.value for a in cert.subject}
    assert subject[NameOID.COMMON_NAME] == "c1" and subject[NameOID.ORGANIZATIONAL_UNIT_NAME] == role
    assert subject.get(NameOID.LOCALITY_NAME) == site
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert mode(ca / "c1.key") == 0o600
    assert caller_of((ca / "c1.crt").read_bytes()) == Caller("c1", role, site)
    assert (out["role"], out["site"], out["certificate"]) == (role, site, str(ca / "c1.crt"))


def test_the_servers_certificate_names_no_caller(ca):
    with pytest.raises(NoRole):
        caller_of((ca / "server.crt").read_bytes())


@pytest.mark.parametrize("args, code, words", [
    (("d1", "door", None), "INVALID_ARGUMENT", "--site"),
    (("e1", "enroller", "lab"), "INVALID_ARGUMENT", "doors only"),
    (("x", "janitor", None), "INVALID_ARGUMENT", "--role"),
    (("../evil", "admin", None), "INVALID_ARGUMENT", "client name"),
    (("ca", "admin", None), "INVALID_ARGUMENT", "client name"),
    (("server", "admin", None), "INVALID_ARGUMENT", "client name"),
])
def test_issue_refuses_what_it_cannot_make(ca, args, code, words):
    with pytest.raises(CertError) as e:
        certs.issue(ca, *args)
    assert e.value.code == code and words in e.value.message
    assert sorted(p.name for p in ca.iterdir()) == ["ca.crt", "ca.key", "server.crt", "server.key"]


def test_issue_needs_a_ca_and_replaces_a_certificate_only_when_forced(ca, tmp_path):
    with pytest.raises(CertError) as e:
        certs.issue(tmp_path / "empty", "ops", "admin")
    assert e.value.code == "FAILED_PRECONDITION" and "certs init" in e.value.message
    certs.issue(ca, "ops", "admin")
    first = (ca / "ops.crt").read_bytes()
    with pytest.raises(CertError) as e:
        certs.issue(ca, "ops", "enroller")
    assert e.value.code == "ALREADY_EXISTS" and (ca / "ops.crt").read_bytes() == first
    certs.issue(ca, "ops", "enroller", force=True)
    assert caller_of((ca / "ops.crt").read_bytes()).role == "enroller"


def test_certs_cli(tmp_path, capsys):
    d = str(tmp_path / "tls")
    assert main(["certs", "init", d, "--host", "gate.example.edu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hosts"] == ["localhost", "127.0.0.1", "gate.example.edu"]
    assert main(["certs", "issue", d, "door-7", "--role", "door", "--site", "library", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["site"] == "library"
    assert main(["certs", "issue", d, "door-8", "--role", "door", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "INVALID_ARGUMENT"
    assert main(["certs", "init", d, "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "ALREADY_EXISTS"
