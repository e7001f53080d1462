"""The grpc.aio server: create_server() for tests (bind 127.0.0.1:0), serve() for the CLI.

Cross-cutting concerns are interceptors with per-request state in a ContextVar; health is the
standard grpc.health.v1 service; reflection is on, so grpcurl works."""
from __future__ import annotations

import asyncio
import os
import logging
import signal
from dataclasses import dataclass

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from encoder.embedder import Embedder, EncoderCard
from facegate.v1 import facegate_pb2 as pb
from facegate.v1 import facegate_pb2_grpc as pb_grpc
from index.template_store import StoreError

from .auth import AuthInterceptor, check_listen, read_tls_dir, server_credentials
from .device import describe, resolve_device
from .health import HealthPort
from .batching import batch_models
from .errors import FailedPrecondition
from .metrics import Metrics, RequestInterceptor
from .pipeline import Gates, Pipeline
from .servicer import FaceGateServicer
from .settings import Settings
from .stores import Stores, check_encoder_versions, open_stores

log = logging.getLogger("facegate.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FaceGate"].full_name


@dataclass
class Deps:
    pipeline: Pipeline
    metrics: Metrics | None = None     # served at settings.metrics_listen (create_server starts it if need be)
    stores: Stores | None = None


def build_deps(settings: Settings) -> Deps:
    """Load the encoder, open the stores (the data folder's files, or --store's database), and
    refuse templates made by another encoder."""
    metrics = Metrics() if settings.metrics_listen else None
    if metrics:           # before the models load: a metrics port in use stops the start at once
        metrics.start_http(settings.metrics_listen)
    device = resolve_device(settings.device)      # first: without the GPU asked for, nothing else is done
    log.info("face models and gates on %s", describe(device))
    # `workers` requests run the face models at once: give each a share of the cores, so that
    # their intra-op threads do not fight over them (2 workers x 2 threads on 2 cores did)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))
    if uses_worker_processes(settings):     # the models run there: this process needs only their card
        embedder = EncoderCard.from_checkpoint(settings.checkpoint, device=device)
    else:
        embedder = batch_models(Embedder.from_checkpoint(settings.checkpoint, device=device),
                                settings.batch_window_ms, settings.batch_max)
    try:
        stores = open_stores(settings, dim=embedder.embedding_dim)
    except StoreError as e:
        raise FailedPrecondition(str(e)) from None
    log.info("template index: %s (%s), %d templates", stores.templates.index.kind, settings.index_kind,
             len(stores.templates.index))
    try:
        check_encoder_versions(stores.templates, embedder.version)
        pipeline = Pipeline(settings, embedder, stores.templates, stores.thresholds, stores.audit,
                            load_gates(settings, device), stores.sites)
    except BaseException:
        stores.close()
        raise
    try:
        if uses_worker_processes(settings):
            start_worker_processes(settings, pipeline)
    except BaseException:
        stop_worker_processes(pipeline)
        stores.close()
        raise
    if metrics:
        metrics.attach(pipeline)
    return Deps(pipeline, metrics, stores)


def uses_worker_processes(settings: Settings) -> bool:
    """The face models run in worker processes (service/processes.py); micro-batching needs them
    in the server's threads."""
    return settings.worker_processes and settings.batch_max <= 1


def start_worker_processes(settings: Settings, pipeline: Pipeline) -> None:
    """The frames' worker processes (one per model worker) and, for large photos, one at the lowest
    priority (service/processes.py), each with its models loaded before the port opens."""
    from concurrent.futures.process import BrokenProcessPool

    from .processes import LookProcesses

    pipeline.lookers["frames"] = LookProcesses(settings, settings.workers)
    if settings.large_photo_pixels:
        pipeline.lookers["large"] = LookProcesses(settings, 1, idle=True, name="large")
    try:
        for looker in pipeline.lookers.values():
            looker.start()
    except BrokenProcessPool as e:
        raise FailedPrecondition(f"the model worker processes did not start ({e}): see their error above") from None


def stop_worker_processes(pipeline: Pipeline) -> None:
    for looker in pipeline.lookers.values():
        looker.shutdown()
    pipeline.lookers.clear()


def load_gates(settings: Settings, device: str | torch.device = "cpu") -> Gates:
    """The day/night gate and the trigger-word detector (their shipped checkpoints unless the
    settings name others); a checkpoint that is missing or broken stops the start with its name."""
    if not settings.gates:
        return Gates()
    from gates.daynight import DayNightGate
    from gates.trigger_word import TriggerWordGate

    try:
        return Gates(daynight=DayNightGate.load(settings.daynight_checkpoint, device=device),
                     trigger_word=TriggerWordGate.load(settings.trigger_checkpoint, device=device))
    except (OSError, ValueError) as e:
        raise FailedPrecondition(f"cannot load a gate: {e}") from None


async def create_server(settings: Settings, deps: Deps,
                        health_servicer: health.aio.HealthServicer | None = None) -> tuple[grpc.aio.Server, int]:
    """Serve deps on settings.listen -> (the started server, its port). With settings.metrics_listen,
    deps.metrics serves /metrics there (the caller stops it: deps.metrics.stop_http()).
    `health_servicer`: the grpc.health.v1 servicer to serve (a new one when None)."""
    if settings.metrics_listen and deps.metrics is None:
        deps.metrics = Metrics(deps.pipeline)
    if deps.metrics and deps.metrics.http is None and settings.metrics_listen:
        deps.metrics.start_http(settings.metrics_listen)
    check_listen(settings.listen, settings.tls_dir, settings.insecure)
    credentials = server_credentials(settings.tls_dir) if settings.tls_dir else None
    server = grpc.aio.server(
        # the request interceptor outside auth: it counts and logs auth's refusals too
        interceptors=[RequestInterceptor(deps.metrics), *([AuthInterceptor()] if credentials else [])],
        options=[("grpc.max_receive_message_length", settings.max_message_bytes),
                 ("grpc.max_send_message_length", settings.max_message_bytes)])
    servicer = FaceGateServicer(deps.pipeline, settings.workers, settings.max_queue, settings.large_photo_pixels,
                                settings.large_photo_queue)
    if deps.metrics:
        deps.metrics.watch_queue(*servicer.queues())
    pb_grpc.add_FaceGateServicer_to_server(servicer, server)
    health_servicer = health_servicer or health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    port = (server.add_secure_port(settings.listen, credentials) if credentials
            else server.add_insecure_port(settings.listen))
    if port == 0:
        raise OSError(f"cannot listen on {settings.listen}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


async def _serve(settings: Settings, deps: Deps, ready=None) -> None:
    health_servicer = health.aio.HealthServicer()
    server, port = await create_server(settings, deps, health_servicer)
    probes = HealthPort(settings.health_listen, (SERVICE_NAME,)) if settings.health_listen else None
    if probes:
        try:
            log.info("grpc.health.v1 alone, in plaintext, on port %d (--health-listen)", await probes.start())
        except FailedPrecondition:
            await server.stop(None)
            raise
    status = deps.pipeline.status()
    log.info("facegate serving on port %d: encoder %s (%s), %d subjects, %d templates, data %s, %s", port,
             status["encoder_version"], deps.pipeline.embedder.arithmetic, status["subjects"], status["templates"],
             deps.stores.location if deps.stores else settings.data_dir,
             f"mutual TLS ({settings.tls_dir})" if settings.tls_dir else "no TLS (local admin)")
    if deps.metrics and deps.metrics.address:
        log.info("metrics on http://%s:%d/metrics", *deps.metrics.address)
    if ready:
        ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # readiness first: health checks answer NOT_SERVING ("" and FaceGate) from now on, on the service's
    # port and the probes' port, and the Watch streams of load balancers hear it, while the calls in
    # flight finish within the grace
    await health_servicer.enter_graceful_shutdown()
    if probes:
        await probes.draining()
    log.info("shutting down (grace %.1f s): health NOT_SERVING", settings.grace_seconds)
    await server.stop(settings.grace_seconds)
    if probes:
        await probes.stop()
    if deps.metrics:
        await asyncio.to_thread(deps.metrics.stop_http)
    stop_worker_processes(deps.pipeline)
    if deps.stores:
        deps.stores.close()
    log.info("stopped")


def serve(settings: Settings, ready=None) -> None:
    check_listen(settings.listen, settings.tls_dir, settings.insecure)      # before the models load
    if settings.tls_dir:
        read_tls_dir(settings.tls_dir)
    deps = build_deps(settings)
    asyncio.run(_serve(settings, deps, ready))
