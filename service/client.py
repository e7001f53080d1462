"""A small synchronous client for the CLI: protobuf in and out of plain dicts (CONTRACT.md's keys);
every RpcError becomes one exception type with the status name and the server's message."""
from __future__ import annotations

import sys
from pathlib import Path

import grpc
from tqdm import tqdm

from facegate.v1 import facegate_pb2 as pb
from facegate.v1 import facegate_pb2_grpc as pb_grpc


def _stages(stages) -> list[dict]:
    """Which stages ran, in order, and what each found (score: p(night), p(word), detection
    probability or distance, by stage)."""
    return [{"name": s.name, "outcome": s.outcome, "score": round(s.score, 4), "ms": round(s.seconds * 1000, 1)}
            for s in stages]


class RpcFailed(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _reason(v: int) -> str:
    return pb.Reason.Name(v) if v else ""


CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def channel_credentials(tls_dir: str | Path, client: str) -> grpc.ChannelCredentials:
    """Mutual TLS as a client of a `serve --tls-dir` server: DIR's `ca.crt` to trust the server,
    `NAME.crt` and `NAME.key` (made by `facegate certs issue DIR NAME`) to be known by it."""
    d = Path(tls_dir)
    try:
        return grpc.ssl_channel_credentials(root_certificates=(d / "ca.crt").read_bytes(),
                                            private_key=(d / f"{client}.key").read_bytes(),
                                            certificate_chain=(d / f"{client}.crt").read_bytes())
    except OSError as e:
        raise RpcFailed("INVALID_ARGUMENT", f"cannot read the client certificate {client!r} in {d}: {e.strerror} "
                                            f"({e.filename}); make it with `facegate certs issue {d} {client} "
                                            f"--role ...`") from None


def make_channel(address: str, tls_dir: str | Path | None = None, client: str | None = None, aio: bool = False):
    """A channel to a facegate server: plaintext, or mutual TLS when `tls_dir` and `client` are given
    (both or neither). `aio=True` gives a grpc.aio channel (the load test's)."""
    if (tls_dir is None) != (client is None):
        raise RpcFailed("INVALID_ARGUMENT", "--tls-dir and --client go together: the CA folder and the name "
                                            "of a client certificate in it")
    g = grpc.aio if aio else grpc
    if tls_dir is None:
        return g.insecure_channel(address, options=CHANNEL_OPTIONS)
    return g.secure_channel(address, channel_credentials(tls_dir, client), options=CHANNEL_OPTIONS)


class Client:
    def __init__(self, address: str, timeout: float = 60.0, tls_dir: str | Path | None = None,
                 client: str | None = None):
        self.channel = make_channel(address, tls_dir, client)
        self.stub = pb_grpc.FaceGateStub(self.channel)
        self.timeout = timeout
        self.address = address

    def _call(self, method, request, **kw):
        try:
            return method(request, timeout=self.timeout, **kw)
        except grpc.RpcError as e:
            raise RpcFailed(e.code().name, e.details() or str(e)) from None

    def verify(self, subject: str, image: bytes, site: str = "", audio: bytes = b"") -> dict:
        r = self._call(self.stub.Verify, pb.VerifyRequest(subject_id=subject, image=image, site=site, audio=audio))
        return {"decision": pb.Decision.Name(r.decision), "reason": _reason(r.reason), "subject": r.subject_id,
                "distance": None if r.distance < 0 else round(r.distance, 4), "threshold": round(r.threshold, 4),
                "site": r.site, "light_profile": r.light_profile, "encoder_version": r.encoder_version,
                "latency_ms": round(r.latency_ms, 1), "detail": r.detail, "stages": _stages(r.stages)}

    def identify(self, image: bytes, site: str = "", k: int = 0, audio: bytes = b"") -> dict:
        r = self._call(self.stub.Identify, pb.IdentifyRequest(image=image, site=site, k=k, audio=audio))
        return {"subject": r.subject_id or None, "decision": pb.Decision.Name(r.decision), "reason": _reason(r.reason),
                "votes": r.votes, "votes_needed": r.votes_needed,
                "neighbours": [{"subject": n.subject_id, "distance": round(n.distance, 4)} for n in r.neighbours],
                "threshold": round(r.threshold, 4), "site": r.site, "light_profile": r.light_profile,
                "encoder_version": r.encoder_version, "latency_ms": round(r.latency_ms, 1), "detail": r.detail,
                "stages": _stages(r.stages)}

    def cluster(self, photos: list[tuple[str, bytes]], k: int = 0) -> dict:
        r = self._call(self.stub.Cluster, pb.ClusterRequest(
            photos=[pb.ClusterPhoto(name=n, image=b) for n, b in photos], k=k))
        out = []
        for a in r.assignments:
            row = {"path": a.name, "cluster": a.cluster}
            if a.cluster < 0:
                row["reason"] = _reason(a.reason)
            out.append(row)
        return {"k": r.k, "assignments": out, "centroids_count": len(r.centroids),
                "silhouette": round(r.silhouette, 4)}

    def delete(self, subject: str) -> dict:
        r = self._call(self.stub.DeleteSubject, pb.DeleteSubjectRequest(subject_id=subject))
        return {"subject": r.subject_id, "removed": r.removed,
                "removed_from": [{"index_version": x.index_version, "index_name": x.index_name,
                                  "templates": x.templates} for x in r.removed_from],
                "deleted_at": r.deleted_at, "deleted_by": r.deleted_by, "receipt_id": r.receipt_id}

    def status(self) -> dict:
        r = self._call(self.stub.GetStatus, pb.GetStatusRequest())
        return {"subjects": r.subjects, "templates": r.templates, "encoder_version": r.encoder_version,
                "index_version": r.index_version, "generation": r.generation,
                "encoder_arithmetic": r.encoder_arithmetic}

    def enroll(self, photos: list[tuple[str, Path]]) -> dict:
        """Streams every photo; one result per photo comes back once it is durable."""
        def requests():
            for subject, path in photos:
                yield pb.EnrollRequest(subject_id=subject, image=Path(path).read_bytes(), photo_name=str(path))

        summary = {"subjects": len({s for s, _ in photos}), "accepted": 0, "already_enrolled": 0,
                   "rejected": [], "duplicate_warnings": []}
        try:
            for r in tqdm(self.stub.Enroll(requests()), total=len(photos), desc="enroll", unit="photo",
                          file=sys.stderr):
                if r.status == pb.EnrollResponse.ACCEPTED:
                    summary["accepted"] += 1
                elif r.status == pb.EnrollResponse.ALREADY_ENROLLED:
                    summary["already_enrolled"] += 1
                else:
                    summary["rejected"].append({"path": r.photo_name, "reason": _reason(r.reason) or r.error_code,
                                                "detail": r.detail})
                for d in r.duplicates:
                    summary["duplicate_warnings"].append({"path": r.photo_name, "subject": r.subject_id,
                                                          "other_subject": d.other_subject,
                                                          "distance": round(d.distance, 4)})
        except grpc.RpcError as e:
            raise RpcFailed(e.code().name, e.details() or str(e)) from None
        return summary
