"""The grpc.aio server: create_server() for tests (bind 127.0.0.1:0), serve() for the CLI.

Cross-cutting concerns are interceptors with per-request state in a ContextVar; health is the
standard grpc.health.v1 service; reflection is on, so grpcurl works."""
from __future__ import annotations

import asyncio
import os
import logging
import signal
import time
import uuid
from dataclasses import dataclass

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from encoder.embedder import Embedder
from facegate.v1 import facegate_pb2 as pb
from facegate.v1 import facegate_pb2_grpc as pb_grpc
from index.template_store import TemplateStore

from .batching import batch_models
from .index_layout import current_index_dir
from .errors import FailedPrecondition
from .pipeline import AuditLog, Gates, Pipeline, check_encoder_versions
from .servicer import FaceGateServicer, request_id
from .settings import Settings
from .thresholds import ThresholdStore

log = logging.getLogger("facegate.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FaceGate"].full_name


class RequestLogInterceptor(grpc.aio.ServerInterceptor):
    """A request id (the client's x-request-id, or a new one) for every call, unary or the Enroll
    stream, and one log line per call with its method, status and duration. It logs no payload:
    never a photo, never an embedding."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not (handler.unary_unary or handler.stream_stream):
            return handler
        md = dict(details.invocation_metadata or ())
        rid = str(md.get("x-request-id") or uuid.uuid4().hex[:12])[:64]

        def done(context, t0):
            code = context.code() if hasattr(context, "code") else None
            log.info("%s %s %s %.1f ms", rid, details.method, code or "OK", (time.perf_counter() - t0) * 1000)

        if handler.unary_unary:
            inner = handler.unary_unary

            async def logged(request, context):
                request_id.set(rid)
                t0 = time.perf_counter()
                try:
                    return await inner(request, context)
                finally:
                    done(context, t0)

            return grpc.unary_unary_rpc_method_handler(
                logged, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        inner_stream = handler.stream_stream

        async def logged_stream(request_iterator, context):
            request_id.set(rid)
            t0 = time.perf_counter()
            try:
                async for response in inner_stream(request_iterator, context):
                    yield response
            finally:
                done(context, t0)

        return grpc.stream_stream_rpc_method_handler(
            logged_stream, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


@dataclass
class Deps:
    pipeline: Pipeline


def build_deps(settings: Settings) -> Deps:
    """Load the encoder, open the data folder, and refuse a folder made by another encoder."""
    # `workers` requests run the face models at once: give each a share of the cores, so that
    # their intra-op threads do not fight over them (2 workers x 2 threads on 2 cores did)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))
    embedder = batch_models(Embedder.from_checkpoint(settings.checkpoint), settings.batch_window_ms, settings.batch_max)
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    store = TemplateStore(current_index_dir(data), dim=embedder.embedding_dim)
    check_encoder_versions(store, embedder.version)
    pipeline = Pipeline(settings, embedder, store, ThresholdStore(data), AuditLog(data / "audit.jsonl"),
                        load_gates(settings))
    return Deps(pipeline)


def load_gates(settings: Settings) -> Gates:
    """The day/night gate and the trigger-word detector (their shipped checkpoints unless the
    settings name others); a checkpoint that is missing or broken stops the start with its name."""
    if not settings.gates:
        return Gates()
    from gates.daynight import DayNightGate
    from gates.trigger_word import TriggerWordGate

    try:
        return Gates(daynight=DayNightGate.load(settings.daynight_checkpoint),
                     trigger_word=TriggerWordGate.load(settings.trigger_checkpoint))
    except (OSError, ValueError) as e:
        raise FailedPrecondition(f"cannot load a gate: {e}") from None


async def create_server(settings: Settings, deps: Deps) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(
        interceptors=[RequestLogInterceptor()],
        options=[("grpc.max_receive_message_length", settings.max_message_bytes),
                 ("grpc.max_send_message_length", settings.max_message_bytes)])
    pb_grpc.add_FaceGateServicer_to_server(FaceGateServicer(deps.pipeline, settings.workers, settings.max_queue), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise OSError(f"cannot listen on {settings.listen}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


async def _serve(settings: Settings, deps: Deps, ready=None) -> None:
    server, port = await create_server(settings, deps)
    status = deps.pipeline.status()
    log.info("facegate serving on port %d: encoder %s (%s), %d subjects, %d templates, data %s", port,
             status["encoder_version"], deps.pipeline.embedder.arithmetic, status["subjects"], status["templates"],
             settings.data_dir)
    if ready:
        ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down (grace %.1f s)", settings.grace_seconds)
    await server.stop(settings.grace_seconds)


def serve(settings: Settings, ready=None) -> None:
    deps = build_deps(settings)
    asyncio.run(_serve(settings, deps, ready))
