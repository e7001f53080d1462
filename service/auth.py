"""Who may call what (CONTRACT.md): mutual TLS, the caller's role, and the loopback rule.

With `serve --tls-dir DIR` the TLS handshake admits only clients whose certificate DIR's CA
signed (others fail at the handshake: UNAVAILABLE at the client). AuthInterceptor then reads
the verified certificate of each call, sets service.caller.current_caller for it, and applies
the role's rules:

    door      Verify, Identify, GetStatus; always for the site in its certificate (a request
              naming another site is refused, an empty site means its own); its Identify
              answers name no one but the person identified (no neighbours, no nearest distance)
    enroller  Enroll, DeleteSubject, Cluster, GetStatus
    admin     everything

An RPC a role may not call ends in PERMISSION_DENIED, naming the role and the RPC. Health and
reflection are open to every client the handshake admitted. A FaceGate RPC this table does not
name (a newer one) is the admin's until it is added here.

Without --tls-dir there is no certificate to go by: every caller is the local admin, so the
server listens only on loopback unless `--insecure` says the network is trusted.
"""
from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import grpc

from facegate.v1 import facegate_pb2 as pb

from .caller import ADMIN, DOOR, ENROLLER, Caller, current_caller
from .certs import CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, caller_of
from .errors import FailedPrecondition, InvalidArgument

log = logging.getLogger("facegate.auth")
PREFIX = "/" + pb.DESCRIPTOR.services_by_name["FaceGate"].full_name + "/"
RPCS = tuple(m.name for m in pb.DESCRIPTOR.services_by_name["FaceGate"].methods)
ALLOWED: dict[str, frozenset[str]] = {
    DOOR: frozenset({"Verify", "Identify", "GetStatus"}),
    ENROLLER: frozenset({"Enroll", "DeleteSubject", "Cluster", "GetStatus"}),
    ADMIN: frozenset(RPCS),
}
SITE_BOUND = frozenset({"Verify", "Identify"})     # the RPCs whose request names a site


def may_call(role: str, rpc: str) -> bool:
    return role == ADMIN or rpc in ALLOWED.get(role, ())


# ------------------------------------------------------------------------------ the listening side
def read_tls_dir(tls_dir: str | Path) -> tuple[bytes, bytes, bytes]:
    """The server's side of DIR: (ca.crt, server.key, server.crt), or an error that says how to make them."""
    d = Path(tls_dir)
    try:
        return tuple((d / n).read_bytes() for n in (CA_CERT, SERVER_KEY, SERVER_CERT))
    except OSError as e:
        raise FailedPrecondition(f"--tls-dir {d}: cannot read {e.filename} ({e.strerror}); make the CA and the "
                                 f"server's certificate with `facegate certs init {d} --host HOST`") from None


def server_credentials(tls_dir: str | Path) -> grpc.ServerCredentials:
    """TLS with the server's certificate, and a client certificate signed by DIR's CA required."""
    d = Path(tls_dir)
    ca, key, chain = read_tls_dir(d)
    if (d / CA_KEY).exists():
        log.warning("the CA's private key %s lies beside the server's certificate: anyone who reads it can make "
                    "certificates of any role; keep it on the machine that issues them", d / CA_KEY)
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=True)


def _host(listen: str) -> str:
    if listen.startswith("["):                       # [::1]:50051
        return listen[1:].partition("]")[0]
    host, sep, _ = listen.rpartition(":")
    return host if sep else listen


def is_loopback(listen: str) -> bool:
    """Whether a --listen address (HOST:PORT, [V6]:PORT, unix:PATH) is reachable from this machine only.
    A host name other than localhost is not: it may resolve to any interface."""
    if listen.startswith(("unix:", "unix-abstract:")):
        return True
    host = _host(listen)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(listen: str, tls_dir: Path | None, insecure: bool) -> None:
    """Without mutual TLS every caller is an admin: refuse to listen beyond loopback unless the
    operator says the network is trusted (--insecure)."""
    if tls_dir is not None or is_loopback(listen):
        return
    if insecure:
        log.warning("listening on %s without TLS (--insecure): every client that reaches it is an admin", listen)
        return
    raise InvalidArgument(
        f"--listen {listen} is reachable from other machines, and without --tls-dir every caller is an admin "
        f"(no certificate says who it is). Serve with mutual TLS (`facegate certs init DIR --host HOST`, then "
        f"`serve --tls-dir DIR`), listen on loopback (127.0.0.1:PORT), or add --insecure if this network is trusted")


# ------------------------------------------------------------------------------ per call
def redact_for_door(response: pb.IdentifyResponse) -> None:
    """A door learns who stands in front of it, and nothing about anyone else: no neighbours, no
    nearest distance (with no one identified it is another person's, and a score to climb), and,
    when no one is identified, no vote count (the nearest other person's)."""
    del response.neighbours[:]
    if not response.subject_id:
        response.votes = 0
    for s in response.stages:
        if s.name == "match":
            s.score = 0.0


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """The caller of every FaceGate call from its verified client certificate, and its role's rules."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not details.method.startswith(PREFIX):
            return handler                              # health, reflection: any admitted client
        rpc = details.method[len(PREFIX):]

        async def admit(context) -> Caller:
            caller = await self._caller(context)
            current_caller.set(caller)                  # a refusal is logged under the caller's own name
            if not may_call(caller.role, rpc):
                allowed = ", ".join(sorted(ALLOWED.get(caller.role, ()))) or "nothing"
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"{caller.role} {caller.name!r} may not call {rpc} (a {caller.role} may call "
                                    f"{allowed})")
            return caller

        async def bind_site(request, caller: Caller, context) -> None:
            if caller.role != DOOR or rpc not in SITE_BOUND:
                return
            if request.site and request.site != caller.site:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"door {caller.name!r} is at site {caller.site!r} and may not call {rpc} for "
                                    f"site {request.site!r}")
            request.site = caller.site

        kw = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary_unary(request, context):
                caller = await admit(context)
                await bind_site(request, caller, context)
                response = await inner(request, context)
                if caller.role == DOOR and rpc == "Identify":
                    redact_for_door(response)
                return response
            return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
        if handler.stream_stream:
            inner_ss = handler.stream_stream

            async def stream_stream(request_iterator, context):
                await admit(context)
                async for response in inner_ss(request_iterator, context):
                    yield response
            return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(request, context):
                caller = await admit(context)
                await bind_site(request, caller, context)
                async for response in inner_us(request, context):
                    yield response
            return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)
        inner_su = handler.stream_unary

        async def stream_unary(request_iterator, context):
            await admit(context)
            return await inner_su(request_iterator, context)
        return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)

    @staticmethod
    async def _caller(context) -> Caller:
        pem = (context.auth_context() or {}).get("x509_pem_cert")
        if not pem:             # the handshake requires a certificate; this is a server set up without TLS
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no client certificate: connect with "
                                                                 "--tls-dir DIR --client NAME")
        try:
            return caller_of(pem[0])
        except ValueError as e:          # NoRole, or a certificate that does not parse
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
