"""A private certificate authority for mutual TLS (CONTRACT.md, "Who may call what").

`init(DIR)` writes the CA (`ca.crt`, `ca.key`) and the server's `server.crt`/`server.key`;
`issue(DIR, NAME, role, site)` writes a client's `NAME.crt`/`NAME.key`, signed by DIR's CA.

Where the role lives: in the client certificate's subject, which the CA's signature covers:
    CN = the client's name   (the caller's name in logs and the audit)
    OU = its role            (door, enroller or admin)
    L  = a door's site       (localityName: where the door is; absent for other roles)
    O  = "facegate client"
so `openssl x509 -noout -subject -in NAME.crt` shows them. The server trusts these fields only
in a certificate that its TLS handshake has verified against DIR's `ca.crt`.

Keys are ECDSA P-256, written with mode 0600; an existing CA is never replaced.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .caller import DOOR, ROLES, Caller

CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.crt", "ca.key", "server.crt", "server.key"
CLIENT_ORG = "facegate client"
ALWAYS_HOSTS = ("localhost", "127.0.0.1")
CA_DAYS, CERT_DAYS = 3650, 825
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RESERVED = {"ca", "server"}


class CertError(Exception):
    """A certificate request that cannot be honoured; `code` is the gRPC status name the CLI prints."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    not_after: dt.datetime


# ------------------------------------------------------------------------------------ writing
def _write(path: Path, data: bytes, private: bool) -> None:
    """Write atomically (tmp, fsync, rename); a private key is 0600 from its first byte."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        if private:
            os.fchmod(fd, 0o600)        # whatever the umask or an older tmp file said
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = _now()
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))        # a little clock skew between hosts
            .not_valid_after(now + dt.timedelta(days=days)))


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _leaf(builder: x509.CertificateBuilder, ca_cert: x509.Certificate, usage) -> x509.CertificateBuilder:
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False))


# ------------------------------------------------------------------------------------ the CA
def init(folder: str | Path, hosts: list[str] = (), days: int = CERT_DAYS) -> dict:
    """A new CA and the server's certificate, valid for `hosts` and always localhost and 127.0.0.1.
    Refuses a folder that already holds a CA: its clients' certificates would stop working."""
    d = Path(folder)
    for name in (CA_CERT, CA_KEY):
        if (d / name).exists():
            raise CertError("ALREADY_EXISTS", f"{d / name} exists: {d} already holds a CA, and replacing it would "
                                              f"invalidate every certificate it signed. Issue client certificates "
                                              f"with `facegate certs issue {d} NAME --role ...`, or choose an "
                                              f"empty folder")
    bad = [h for h in hosts if not h or "/" in h or " " in h]
    if bad:
        raise CertError("INVALID_ARGUMENT", f"--host {bad[0]!r} is not a host name or IP address")
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "facegate"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"facegate CA {d.resolve().name}")])
    ca_cert = (_builder(ca_name, ca_name, ca_key.public_key(), CA_DAYS)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    _write(d / CA_KEY, _key_pem(ca_key), private=True)
    _write(d / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)

    names = list(dict.fromkeys([*ALWAYS_HOSTS, *hosts]))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "facegate"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "facegate server")])
    cert = (_leaf(_builder(subject, ca_cert.subject, key.public_key(), days), ca_cert,
                  ExtendedKeyUsageOID.SERVER_AUTH)
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(d / SERVER_KEY, _key_pem(key), private=True)
    _write(d / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return {"dir": str(d), "ca": str(d / CA_CERT), "ca_key": str(d / CA_KEY), "server": str(d / SERVER_CERT),
            "server_key": str(d / SERVER_KEY), "hosts": names,
            "not_after": cert.not_valid_after_utc.isoformat()}


def _load_ca(d: Path):
    try:
        ca_cert = x509.load_pem_x509_certificate((d / CA_CERT).read_bytes())
        ca_key = serialization.load_pem_private_key((d / CA_KEY).read_bytes(), password=None)
    except FileNotFoundError as e:
        raise CertError("FAILED_PRECONDITION", f"{e.filename} does not exist: make the CA first with "
                                               f"`facegate certs init {d}`") from None
    except ValueError as e:
        raise CertError("FAILED_PRECONDITION", f"cannot read the CA in {d}: {e}") from None
    return ca_cert, ca_key


def issue(folder: str | Path, name: str, role: str, site: str | None = None, days: int = CERT_DAYS,
          force: bool = False) -> dict:
    """A client certificate `NAME.crt`/`NAME.key` signed by the folder's CA, with its role (and a
    door's site) in its subject."""
    d = Path(folder)
    if not NAME_RE.match(name or "") or name.lower() in RESERVED:
        raise CertError("INVALID_ARGUMENT", f"client name {name!r}: use 1-64 letters, digits, '.', '_' or '-' "
                                            f"(not starting with '.' or '-'), other than {' or '.join(RESERVED)}")
    if role not in ROLES:
        raise CertError("INVALID_ARGUMENT", f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    if role == DOOR and not site:
        raise CertError("INVALID_ARGUMENT", "a door certificate names its site: --site S (a door answers only "
                                            "for the site in its certificate)")
    if role != DOOR and site:
        raise CertError("INVALID_ARGUMENT", f"--site is for doors only; a {role} is not bound to a site")
    if days < 1:
        raise CertError("INVALID_ARGUMENT", f"--days must be at least 1, got {days}")
    cert_path, key_path = d / f"{name}.crt", d / f"{name}.key"
    if not force and (cert_path.exists() or key_path.exists()):
        raise CertError("ALREADY_EXISTS", f"{cert_path} exists: give --force to replace it (renewal), or "
                                          f"choose another name")
    ca_cert, ca_key = _load_ca(d)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, CLIENT_ORG),
             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role)]
    if site:
        attrs.append(x509.NameAttribute(NameOID.LOCALITY_NAME, site))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_leaf(_builder(x509.Name(attrs), ca_cert.subject, key.public_key(), days), ca_cert,
                  ExtendedKeyUsageOID.CLIENT_AUTH)
            .sign(ca_key, hashes.SHA256()))
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return {"name": name, "role": role, "site": site, "certificate": str(cert_path), "key": str(key_path),
            "not_after": cert.not_valid_after_utc.isoformat()}


# ------------------------------------------------------------------------------------ reading
class NoRole(ValueError):
    """A certificate (signed by the CA) that names no facegate role: the server's own, or a stranger's."""


@lru_cache(maxsize=1024)
def caller_of(pem: bytes) -> Caller:
    """The caller a verified client certificate names: CN, OU (role) and, for a door, L (site)."""
    cert = x509.load_pem_x509_certificate(pem)

    def field(oid) -> str | None:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else None

    name, role, site = field(NameOID.COMMON_NAME), field(NameOID.ORGANIZATIONAL_UNIT_NAME), field(NameOID.LOCALITY_NAME)
    if field(NameOID.ORGANIZATION_NAME) != CLIENT_ORG or role not in ROLES or not name:
        raise NoRole(f"the certificate {cert.subject.rfc4514_string()!r} is not a facegate client certificate "
                     f"(no role): issue one with `facegate certs issue DIR NAME --role door|enroller|admin`")
    if role == DOOR and not site:
        raise NoRole(f"the door certificate {name!r} names no site")
    return Caller(name, role, site if role == DOOR else None)
