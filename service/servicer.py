"""The gRPC servicer: thin. Protobuf in, plain call to the pipeline (in a worker thread, so
the event loop keeps serving), protobuf out; domain errors become status codes here, once.

No call ends in UNKNOWN: an exception that is not a domain error is a bug below the edge, and
it is answered INTERNAL with the request id (its traceback goes to the log under that id, its
text never to the client); in an Enroll stream it is that photo's answer, and the stream goes on."""
from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import logging

import grpc

from facegate.v1 import facegate_pb2 as pb
from facegate.v1 import facegate_pb2_grpc as pb_grpc

from facegate.reasons import Reason

from encoder.images import photo_pixels

from .admission import ModelQueue
from .errors import FacegateError
from .pipeline import Pipeline

log = logging.getLogger("facegate.servicer")
# set per call by service.server.RequestLogInterceptor: the client's x-request-id, or a new one
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

STATUS = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
    "INTERNAL": grpc.StatusCode.INTERNAL,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "DEADLINE_EXCEEDED": grpc.StatusCode.DEADLINE_EXCEEDED,
}
ENROLL_STATUS = {"ACCEPTED": pb.EnrollResponse.ACCEPTED, "ALREADY_ENROLLED": pb.EnrollResponse.ALREADY_ENROLLED,
                 "REJECTED": pb.EnrollResponse.REJECTED}


def _reason(reason: Reason | None) -> int:
    """The proto's value of one of facegate's reasons (None: no reason, REASON_UNSPECIFIED). The two
    vocabularies are one (tests/service/test_reasons.py): a name the proto lacks is a bug, and raises."""
    return pb.REASON_UNSPECIFIED if reason is None else pb.Reason.Value(Reason(reason).value)


def internal_error(where: str) -> str:
    """Log the exception being handled with its traceback, under the request id -> the message
    the client gets (the id, never the exception's text)."""
    rid = request_id.get()
    log.exception("request %s: unexpected error in %s", rid, where)
    return f"internal error in {where} (request id {rid}): the server logged it; please report the id"


def answered(rpc):
    """A unary RPC whose every ending is a status the contract names: a domain error's code, or
    INTERNAL for anything else (never UNKNOWN)."""
    @functools.wraps(rpc)
    async def wrapper(self, request, context):
        try:
            return await rpc(self, request, context)
        except grpc.aio.AbortError:           # context.abort() already chose the status
            raise
        except FacegateError as e:
            await context.abort(STATUS[e.code], e.message)
        except Exception:
            await context.abort(grpc.StatusCode.INTERNAL, internal_error(rpc.__name__))
    return wrapper


def _stages(stages):
    return [pb.StageResult(name=s.name, outcome=s.outcome, score=s.score, seconds=s.seconds) for s in stages]


class FaceGateServicer(pb_grpc.FaceGateServicer):
    def __init__(self, pipeline: Pipeline, workers: int = 2, max_queue: int = 16, large_photo_pixels: int = 0,
                 large_photo_queue: int = 4):
        self.pipeline = pipeline
        # the model workers behind a bounded queue, and the large photos' own (service/admission.py)
        self.models = ModelQueue(workers, max_queue, prefetch=1 if pipeline.lookers else 0)
        self.large_photo_pixels = large_photo_pixels
        # the lowest priority belongs to the looking: in a worker process when there is one (this
        # thread then only decides, with the store's lock, which it must never hold while starved)
        self.large = (ModelQueue(1, large_photo_queue, "facegate-large", idle=not pipeline.lookers)
                      if large_photo_pixels else None)

    def queues(self) -> list[ModelQueue]:
        return [q for q in (self.models, self.large) if q is not None]

    def _queue_for(self, image: bytes) -> ModelQueue:
        """The large photos' queue for a photo whose header says it has more than large_photo_pixels."""
        if self.large is not None and photo_pixels(image) > self.large_photo_pixels:
            return self.large
        return self.models

    async def _call(self, context, fn, *args, bounded: bool = False, queue: ModelQueue | None = None):
        """fn(*args) on a model worker (of `queue`, else the frames'), in the call's ContextVars (its
        caller, its request id) as in the handler. `bounded` (the camera RPCs): RESOURCE_EXHAUSTED
        when the queue is full, DEADLINE_EXCEEDED when the caller's deadline is too near once a
        worker is free."""
        run = functools.partial(contextvars.copy_context().run, fn, *args)
        return await (queue or self.models).run(
            run, name=getattr(fn, "__name__", type(fn).__name__), bounded=bounded,
            deadline_left=context.time_remaining() if context is not None else None)

    @answered
    async def Verify(self, request, context):
        queue = self._queue_for(request.image)
        r = await self._call(context, self.pipeline.verify, request.subject_id, request.image, request.site,
                             request.audio, queue is self.large, bounded=True, queue=queue)
        return pb.VerifyResponse(
            decision=pb.Decision.Value(r.decision), reason=_reason(r.reason), subject_id=r.subject,
            distance=-1.0 if r.distance is None else r.distance, threshold=r.threshold, site=r.site,
            light_profile=r.light_profile, encoder_version=r.encoder_version, latency_ms=r.latency_ms,
            detail=r.detail, stages=_stages(r.stages))

    @answered
    async def Identify(self, request, context):
        queue = self._queue_for(request.image)
        r = await self._call(context, self.pipeline.identify, request.image, request.site, request.k, request.audio,
                             queue is self.large, bounded=True, queue=queue)
        return pb.IdentifyResponse(
            decision=pb.Decision.Value(r.decision), reason=_reason(r.reason), subject_id=r.subject or "",
            votes=r.votes, votes_needed=r.votes_needed,
            neighbours=[pb.Neighbour(subject_id=s, distance=d) for s, d in r.neighbours], threshold=r.threshold,
            site=r.site, light_profile=r.light_profile, encoder_version=r.encoder_version, latency_ms=r.latency_ms,
            detail=r.detail, stages=_stages(r.stages))

    async def Enroll(self, request_iterator, context):
        """The photos of a stream run side by side, one per model worker, with as many more waiting
        for a worker (a worker that finishes one finds the next at once); each is answered in the
        order it came, once its template is durable (or it is rejected). A stream that ends early
        (its caller gone) cancels its photos still running or waiting."""
        running: collections.deque[asyncio.Future] = collections.deque()
        try:
            async for req in request_iterator:
                running.append(asyncio.ensure_future(self._enroll_one(req)))
                while running and (len(running) > 2 * self.models.workers or running[0].done()):
                    yield await running.popleft()
            while running:
                yield await running.popleft()
        finally:
            for f in running:
                f.cancel()

    async def _enroll_one(self, req) -> pb.EnrollResponse:
        """One photo of a stream. One bad photo does not end the job: it is answered (REJECTED
        with its error_code), and the stream goes on."""
        def refused(code: str, message: str) -> pb.EnrollResponse:
            return pb.EnrollResponse(photo_name=req.photo_name, subject_id=req.subject_id,
                                     status=pb.EnrollResponse.REJECTED, detail=message, error_code=code)
        try:
            r = await self._call(None, self.pipeline.enroll, req.subject_id, req.image)
            return pb.EnrollResponse(
                photo_name=req.photo_name, subject_id=r.subject, status=ENROLL_STATUS[r.status],
                reason=_reason(r.reason), detail=r.detail, template_id=r.template_id,
                duplicates=[pb.DuplicateWarning(other_subject=s, distance=d) for s, d in r.duplicates])
        except FacegateError as e:
            return refused(e.code, e.message)
        except Exception:
            return refused("INTERNAL", internal_error("Enroll"))

    @answered
    async def DeleteSubject(self, request, context):
        r = await self._call(context, self.pipeline.delete, request.subject_id)
        return pb.DeleteSubjectResponse(
            subject_id=r.subject, removed=r.removed, deleted_at=r.deleted_at, deleted_by=r.deleted_by,
            receipt_id=r.receipt_id,
            removed_from=[pb.RemovedFrom(index_version=x.index_version, index_name=x.index_name,
                                         templates=x.templates) for x in r.removed_from])

    @answered
    async def Cluster(self, request, context):
        r = await self._call(context, self.pipeline.cluster, [p.image for p in request.photos], request.k,
                             bounded=True)
        return pb.ClusterResponse(
            k=r.k,
            assignments=[pb.ClusterAssignment(name=p.name, cluster=c, reason=_reason(reason))
                         for p, (c, reason) in zip(request.photos, r.assignments)],
            centroids=[pb.Centroid(vector=c.tolist()) for c in r.centroids],
            silhouette=r.silhouette if r.silhouette is not None else 0.0)

    @answered
    async def GetStatus(self, request, context):
        s = await self._call(context, self.pipeline.status)
        return pb.GetStatusResponse(subjects=s["subjects"], templates=s["templates"],
                                    encoder_version=s["encoder_version"], index_version=s["index_version"],
                                    generation=s["generation"], encoder_arithmetic=s["encoder_arithmetic"])
