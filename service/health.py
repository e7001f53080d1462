"""The standard grpc.health.v1 service, asked and answered outside the service's own port.

- `HealthPort`: `serve --health-listen HOST:PORT` answers grpc.health.v1 (and nothing else) in
  plaintext there. Orchestrators' probes (Kubernetes' `grpc` probes, a container's HEALTHCHECK)
  cannot present a client certificate, so with mutual TLS on the service's port they ask here.
  It opens once the models are loaded and the service's port is up (SERVING), and turns
  NOT_SERVING as soon as shutdown begins, so that a load balancer stops sending requests.
- `check`: the client side, for `facegate health` (exit 0 SERVING, 1 not serving, 2 error).
"""
from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .client import RpcFailed, make_channel
from .errors import FailedPrecondition

SERVING = "SERVING"


class HealthPort:
    def __init__(self, listen: str, services: tuple[str, ...]):
        self.listen, self.services = listen, ("", *services)
        self.servicer = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        # no SO_REUSEPORT: a second server on a taken port is refused, not handed half the probes
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.server)
        try:
            self.port = self.server.add_insecure_port(self.listen)
        except RuntimeError:      # grpc's "Failed to bind": in use, or not a HOST:PORT
            self.port = 0
        if self.port == 0:
            raise FailedPrecondition(f"cannot listen on {self.listen} (--health-listen): the port is taken or "
                                     f"the address is not a HOST:PORT of this machine")
        await self.server.start()
        for name in self.services:
            await self.servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def draining(self) -> None:
        """Shutdown has begun: NOT_SERVING for every service, while the port still answers."""
        await self.servicer.enter_graceful_shutdown()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)


def check(address: str, service: str = "", timeout: float = 5.0, tls_dir: str | Path | None = None,
          client: str | None = None) -> str:
    """The server's answer for `service` ("" = the server as a whole): SERVING, NOT_SERVING, ...
    A server that cannot be reached, or that does not know the service, raises RpcFailed."""
    channel = make_channel(address, tls_dir, client)
    try:
        r = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                      timeout=timeout)
    except grpc.RpcError as e:
        raise RpcFailed(e.code().name, e.details() or str(e)) from None
    finally:
        channel.close()
    return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
