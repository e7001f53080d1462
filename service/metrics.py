"""Prometheus metrics and the per-call log line: one interceptor sees every call and its answer.

`serve --metrics-listen HOST:PORT` serves the Prometheus text format at http://HOST:PORT/metrics
(prometheus-client's HTTP server, in its own daemon thread: a scrape never waits on the event
loop, nor the event loop on a scrape). Each server has its own CollectorRegistry.

    facegate_requests_total{rpc,code}                  calls of the FaceGate service by gRPC status
                                                       (Enroll: one per stream, with the stream's status)
    facegate_decisions_total{rpc,site,decision,reason} Verify and Identify answers, in the proto's names
    facegate_request_seconds{rpc}                      histogram, 10 ms - 10 s (Enroll: each photo's answer)
    facegate_stage_seconds{stage}                      histogram of the answers' stages (detect, encode, ...)
    facegate_inflight_requests                         calls being served now
    facegate_enroll_photos_total{status,reason}        each Enroll photo's answer (reason: the proto's,
                                                       or the photo's error_code when refused with one)
    facegate_templates, facegate_subjects, facegate_index_generation, facegate_index_info{index_version}
                                                       the pipeline's status, read at each scrape
    facegate_build_info{version,encoder_version,encoder_arithmetic,grpc,python}
    process_*, python_*                                the process: CPU, memory, open files, GC
    facegate_worker_processes{pool}, facegate_worker_cpu_seconds_total{pool},
    facegate_worker_resident_memory_bytes{pool}        the model worker processes (service/processes.py),
                                                       "frames" and "large": how many are alive, their CPU
                                                       time and resident memory, summed (a replaced process
                                                       takes its CPU time with it: a counter reset)

Calls that gRPC refuses before the service sees them (a message over the size limit, an unknown
method) are not counted: the client sees them, the server's handlers never run.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import platform
import time
import uuid
from importlib import metadata

import grpc
import psutil
from prometheus_client import (CollectorRegistry, Counter, Gauge, GCCollector, Histogram, Info, PlatformCollector,
                               ProcessCollector, start_http_server)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from facegate.v1 import facegate_pb2 as pb

from .caller import current_caller
from .errors import FailedPrecondition, InvalidArgument
from .logs import current_rpc
from .servicer import request_id

log = logging.getLogger("facegate.metrics")
requests_log = logging.getLogger("facegate.requests")

SERVICE = pb.DESCRIPTOR.services_by_name["FaceGate"]
RPCS = tuple(m.name for m in SERVICE.methods)       # Verify, Identify, Enroll, DeleteSubject, Cluster, GetStatus
DECIDING = ("Verify", "Identify")
REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_SITES = 100       # distinct site labels; a request names its site freely, so later ones count as "other"
QUIET = ("/grpc.health.v1.Health/", "/grpc.reflection.")   # probes every few seconds: logged at DEBUG


def parse_listen(listen: str) -> tuple[str, int]:
    """"HOST:PORT" (IPv6 as "[::]:9100") -> (host, port); anything else is INVALID_ARGUMENT."""
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise InvalidArgument(f"--metrics-listen {listen!r}: expected HOST:PORT, e.g. 0.0.0.0:9100")
    return host, int(port)


def _version() -> str:
    try:
        return metadata.version("facegate")
    except metadata.PackageNotFoundError:
        return "unknown"


class _StatusCollector(Collector):
    """The pipeline's status at scrape time (a count in the template store: no model runs)."""

    def __init__(self, metrics: "Metrics"):
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        pipeline = self.metrics.pipeline
        if pipeline is None:
            return
        try:
            s = pipeline.status()
        except Exception:      # a store that cannot answer now: this scrape lacks them, the rest is served
            log.warning("the pipeline's status is unavailable for /metrics", exc_info=True)
            return
        yield GaugeMetricFamily("facegate_templates", "Templates in the serving index.", value=s["templates"])
        yield GaugeMetricFamily("facegate_subjects", "Enrolled subjects.", value=s["subjects"])
        yield GaugeMetricFamily("facegate_index_generation", "The index's generation (it grows with every change).",
                                value=s["generation"])
        yield InfoMetricFamily("facegate_index", "The serving index version.",
                               value={"index_version": str(s["index_version"])})


class _WorkerProcessCollector(Collector):
    """The model worker processes' count, CPU time and memory at scrape time (psutil), per pool:
    process_* covers the server's own process only, where the models' work and most of the memory
    are in its worker processes."""

    def __init__(self, metrics: "Metrics"):
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        lookers = getattr(self.metrics.pipeline, "lookers", None) or {}
        alive = GaugeMetricFamily("facegate_worker_processes", "Model worker processes alive.", labels=["pool"])
        cpu = CounterMetricFamily("facegate_worker_cpu_seconds", "User and system CPU time of the model worker "
                                  "processes alive now.", labels=["pool"])
        rss = GaugeMetricFamily("facegate_worker_resident_memory_bytes", "Resident memory of the model worker "
                                "processes, summed (pages they share counted in each).", labels=["pool"])
        for pool, looker in lookers.items():
            n, seconds, memory = 0, 0.0, 0
            for pid in looker.pids():
                try:
                    proc = psutil.Process(pid)
                    with proc.oneshot():
                        t, m = proc.cpu_times(), proc.memory_info()
                except psutil.Error:          # ended between the listing and the reading
                    continue
                n, seconds, memory = n + 1, seconds + t.user + t.system, memory + m.rss
            alive.add_metric([pool], n)
            cpu.add_metric([pool], seconds)
            rss.add_metric([pool], memory)
        yield from (alive, cpu, rss)


class Metrics:
    """The service's metrics in their own registry, and (start_http) the endpoint that serves them."""

    def __init__(self, pipeline=None):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("facegate_requests", "Calls of the FaceGate service by RPC and gRPC status "
                                "(Enroll: one per stream).", ["rpc", "code"], registry=r)
        self.decisions = Counter("facegate_decisions", "Verify and Identify answers by site, decision and reason.",
                                 ["rpc", "site", "decision", "reason"], registry=r)
        self.request_seconds = Histogram("facegate_request_seconds", "Time to answer a call (Enroll: each photo).",
                                         ["rpc"], buckets=REQUEST_BUCKETS, registry=r)
        self.stage_seconds = Histogram("facegate_stage_seconds", "Time of each stage of a Verify or Identify answer.",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.inflight = Gauge("facegate_inflight_requests", "Calls of the FaceGate service being served.",
                              registry=r)
        self.enroll_photos = Counter("facegate_enroll_photos", "Enroll answers by status and reason (or error code).",
                                     ["status", "reason"], registry=r)
        self.build = Info("facegate_build", "The server's build.", registry=r)
        self.queue = Gauge("facegate_queue_requests", "Camera requests (Verify, Identify, Cluster) running on a "
                           "model worker or waiting for one, large photos' included; beyond workers + max_queue: "
                           "RESOURCE_EXHAUSTED.", registry=r)
        self.queue.set_function(lambda: sum(q.admitted for q in self.models))
        self.models = []           # the servicer's ModelQueues (service/admission.py), set by watch_queue
        for rpc in RPCS:           # every RPC shows from the start, so that rate() has a first sample
            self.requests.labels(rpc, "OK")
            self.request_seconds.labels(rpc)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        r.register(_StatusCollector(self))
        r.register(_WorkerProcessCollector(self))
        self._sites: set[str] = set()
        self.pipeline = None
        self.http = None
        self.address: tuple[str, int] | None = None
        if pipeline is not None:
            self.attach(pipeline)

    def attach(self, pipeline) -> None:
        """Read the templates gauges from `pipeline`, and its encoder into the build info."""
        self.pipeline = pipeline
        self.build.info({"version": _version(), "encoder_version": str(pipeline.version),
                         "encoder_arithmetic": str(getattr(pipeline.embedder, "arithmetic", "")),
                         "grpc": grpc.__version__, "python": platform.python_version()})

    def watch_queue(self, *queues) -> None:
        """Read facegate_queue_requests from the servicer's bounded queues."""
        self.models = list(queues)

    # ------------------------------------------------------------------------------ the endpoint
    def start_http(self, listen: str) -> tuple[str, int]:
        """Serve /metrics on `listen` (HOST:PORT; port 0: a free one) -> (host, port). A port in
        use, or a host this machine does not have, is FAILED_PRECONDITION (serve exits 2)."""
        host, port = parse_listen(listen)
        try:
            self.http, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise FailedPrecondition(f"cannot serve metrics on {listen}: {e.strerror or e}") from None
        self.address = (host, self.http.server_port)
        return self.address

    def stop_http(self) -> None:
        """Stop serving /metrics and free the port (waits for the serving thread, 0.5 s at most)."""
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            self.http = None

    # ------------------------------------------------------------------------------ observations
    def site(self, site: str) -> str:
        if site in self._sites:
            return site
        if len(self._sites) < MAX_SITES:
            self._sites.add(site)
            return site
        return "other"

    def call(self, rpc: str, code: str, seconds: float, response) -> None:
        """One call of the FaceGate service ended with `code`; `response` is its answer (None if none)."""
        self.requests.labels(rpc, code).inc()
        if rpc != "Enroll":
            self.request_seconds.labels(rpc).observe(seconds)
        if rpc in DECIDING and response is not None:
            self.decisions.labels(rpc, self.site(response.site), pb.Decision.Name(response.decision),
                                  pb.Reason.Name(response.reason)).inc()
            for s in response.stages:
                self.stage_seconds.labels(s.name).observe(s.seconds)

    def photo(self, response, seconds: float) -> None:
        """One answer of an Enroll stream."""
        self.request_seconds.labels("Enroll").observe(seconds)
        self.enroll_photos.labels(pb.EnrollResponse.Status.Name(response.status), _photo_reason(response)).inc()


def _photo_reason(r) -> str:
    return r.error_code if r.error_code and not r.reason else pb.Reason.Name(r.reason)


def _code_name(context) -> str | None:
    code = context.code()
    if code is None:
        return None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))


def _ended(context, error: BaseException | None) -> str:
    """The gRPC status a call ended with, as its name."""
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):     # the client went away, or its deadline
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    code = _code_name(context)
    if error is None:
        return code or "OK"
    return code if code and code != "OK" else "UNKNOWN"


class RequestInterceptor(grpc.aio.ServerInterceptor):
    """For every call, unary or stream: a request id (the client's x-request-id, or a new one) in
    service.servicer.request_id; one JSON log line when the call ends (request_id, rpc, code, ms,
    caller; a Verify's or Identify's site, decision and reason); with `metrics`, the counts and
    times of calls of the FaceGate service. An Enroll stream also logs and counts each photo's
    answer (its position in the stream, status, reason: never its name, which may be a person's).
    It logs no payload: never a photo, an embedding or audio."""

    def __init__(self, metrics: Metrics | None = None):
        self.metrics = metrics

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not (handler.unary_unary or handler.stream_stream):
            return handler
        method = details.method
        ours = method.startswith(f"/{SERVICE.full_name}/")
        rpc = method.rsplit("/", 1)[-1] if ours else method.lstrip("/")
        metrics = self.metrics if ours else None
        level = logging.DEBUG if method.startswith(QUIET) else logging.INFO
        md = dict(details.invocation_metadata or ())
        rid = str(md.get("x-request-id") or uuid.uuid4().hex[:12])[:64]

        def begin() -> float:
            request_id.set(rid)
            current_rpc.set(rpc)
            if metrics:
                metrics.inflight.inc()
            return time.perf_counter()

        def end(context, t0: float, error: BaseException | None, response=None, **fields) -> None:
            seconds = time.perf_counter() - t0
            code = _ended(context, error)
            if metrics:                         # counted before it leaves the in-flight gauge
                metrics.call(rpc, code, seconds, response)
                metrics.inflight.dec()
            if rpc in DECIDING and response is not None:
                fields.update(site=response.site, decision=pb.Decision.Name(response.decision),
                              reason=pb.Reason.Name(response.reason))
            ms = round(seconds * 1000, 1)
            requests_log.log(level, "%s %s %.1f ms", rpc, code, ms,
                             extra={"request_id": rid, "rpc": rpc, "code": code, "ms": ms,
                                    "caller": current_caller.get().name, "peer": context.peer(), **fields})

        if handler.unary_unary:
            inner = handler.unary_unary

            async def observed(request, context):
                t0, response, error = begin(), None, None
                try:
                    response = await inner(request, context)
                    return response
                except BaseException as e:
                    error = e
                    raise
                finally:
                    end(context, t0, error, response)

            return grpc.unary_unary_rpc_method_handler(
                observed, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        inner_stream = handler.stream_stream

        async def observed_stream(request_iterator, context):
            t0, error, answered = begin(), None, 0
            arrived: collections.deque[float] = collections.deque()

            async def timed():          # when the service took each request: a photo's answer time starts there
                async for req in request_iterator:
                    arrived.append(time.perf_counter())
                    yield req

            try:
                async for response in inner_stream(timed(), context):
                    answered += 1
                    if rpc == "Enroll":
                        self._photo(response, arrived.popleft() if arrived else t0, answered, level)
                    yield response
            except BaseException as e:
                error = e
                raise
            finally:
                end(context, t0, error, photos=answered)

        return grpc.stream_stream_rpc_method_handler(
            observed_stream, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def _photo(self, response, t_in: float, n: int, level: int) -> None:
        seconds = time.perf_counter() - t_in
        if self.metrics:
            self.metrics.photo(response, seconds)
        status = pb.EnrollResponse.Status.Name(response.status)
        code = response.error_code or "OK"
        ms = round(seconds * 1000, 1)
        requests_log.log(level, "Enroll photo %d %s %.1f ms", n, status, ms,
                         extra={"request_id": request_id.get(), "rpc": "Enroll", "code": code, "ms": ms,
                                "caller": current_caller.get().name, "photo": n, "status": status,
                                "reason": _photo_reason(response)})
