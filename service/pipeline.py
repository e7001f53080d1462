"""The request pipeline of ARCHITECTURE.md, in plain Python: bytes in, decisions out.

validate -> gates (trigger word if the site asks, then day/night) -> detect -> encode -> match
-> decide -> record. The gates are a cascade: cheap stages first, so a request the trigger word
or the light level turns away never reaches the face models.
What the photo itself causes is an answer (REJECT with a reason); a malformed request is a
domain error (service.errors), mapped to a gRPC status at the edge. No protobuf here.
"""
from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from encoder.embedder import Embedder, EncoderCard
from facegate.reasons import Reason
from encoder.images import Decoded, ImageError, decode_reduced
from encoder.score_norm import claim_distance, euclidean, scorer
from index.kmeans import choose_k, choose_k_by_distance, kmeans
from index.knn_vote import knn_vote
from index.template_store import Neighbour, TemplateStore

from .audit import AuditLog, open_audit_log
from .erasure import RemovedFrom, erase_subject
from .errors import FailedPrecondition, InvalidArgument, NotFound
from .settings import Settings
from .sites import CENTRAL_FACE, SiteError, SitePolicy, SiteStore
from .thresholds import ThresholdError, ThresholdStore

log = logging.getLogger("facegate.pipeline")

ACCEPT, REJECT = "ACCEPT", "REJECT"
# Identify's "unknown", in words, by the k-NN vote's outcome (index.knn_vote)
UNKNOWN_BECAUSE = {
    "NONE_WITHIN": "no enrolled face lies within the identify threshold",
    "TOO_FEW_VOTES": "the nearest enrolled subject has too few of the k nearest templates",
    "AMBIGUOUS": "two enrolled subjects are equally close: fall back to the card",
}


@dataclass
class Stage:
    name: str
    outcome: str
    seconds: float
    score: float = 0.0


@dataclass
class VerifyResult:
    decision: str
    reason: Reason
    subject: str
    distance: float | None
    threshold: float
    site: str
    light_profile: str
    encoder_version: str
    latency_ms: float
    detail: str = ""
    stages: list[Stage] = field(default_factory=list)


@dataclass
class IdentifyResult:
    decision: str
    reason: Reason
    subject: str | None
    votes: int
    votes_needed: int
    neighbours: list[tuple[str, float]]
    threshold: float
    site: str
    light_profile: str
    encoder_version: str
    latency_ms: float
    detail: str = ""
    stages: list[Stage] = field(default_factory=list)


@dataclass
class EnrollResult:
    subject: str
    status: str                  # ACCEPTED, ALREADY_ENROLLED, REJECTED
    reason: Reason | None = None  # why REJECTED
    detail: str = ""
    template_id: int = -1
    duplicates: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class ClusterResult:
    k: int
    assignments: list[tuple[int, Reason | None]]   # (cluster, None) or (-1, why not) per photo, in order
    centroids: np.ndarray
    silhouette: float | None


@dataclass
class Gates:
    """The gated stages in front of the face models (gates/): any may be absent."""
    daynight: object | None = None          # gates.daynight.DayNightGate
    trigger_word: object | None = None      # gates.trigger_word.TriggerWordGate


@dataclass
class GateVerdict:
    reject: Reason | None       # TRIGGER_NOT_HEARD or TOO_DARK, or None: go on to the face models
    detail: str
    profile: str                # the light profile ("" when day/night did not run)


@dataclass
class LookRequest:
    """What the face models need to look at one photo, resolved from the stores beforehand, so that
    the looking can run anywhere (Eyes: in this process, or a worker process's: service/processes.py)."""
    image: bytes
    kind: str = "photo"            # "site" (Verify, Identify), "id_photo" (Enroll) or "photo" (Cluster)
    audio: bytes = b""
    trigger_word: bool = False     # the site waits for the word
    too_dark: float | None = None  # the light level below which the photo is TOO_DARK (None: not judged)
    min_face_px: int | None = None
    central_of_several: bool = False
    site: str = ""                 # for messages only


@dataclass
class Look:
    """What the face models saw: the stages run, the gates' verdict, the face (its chip dropped
    when it comes from another process) and its embedding (None: none usable, or a gate said no)."""
    stages: list[Stage]
    gate: GateVerdict
    alignment: object | None = None       # encoder.align.FaceAlignment
    vector: np.ndarray | None = None


@dataclass
class DeleteReceipt:
    """What DeleteSubject removed, where, when and by whom; `receipt_id` is the hash of its audit line."""
    subject: str
    removed: int                         # templates, in every index version together
    removed_from: list[RemovedFrom]
    deleted_at: str                      # RFC 3339
    deleted_by: str                      # the caller
    receipt_id: str


class Eyes:
    """The face models' side of a call: decoding, the gates and the face, given a LookRequest; no
    store, no threshold, no audit (Pipeline decides with what they saw). Runs in the server's
    threads, or in worker processes of their own (service/processes.py)."""

    def __init__(self, settings: Settings, embedder: Embedder, gates: Gates):
        self.settings = settings
        self.embedder = embedder
        self.gates = gates

    def decode(self, data: bytes, stages: list[Stage] | None = None) -> np.ndarray:
        """The photo, upright RGB; a large one reduced while it is decoded (encoder.images.decode_reduced).
        With `stages`, the decode stage: REDUCED (score: the factor) or OK."""
        t0 = time.perf_counter()
        try:
            d = decode_reduced(data, self.settings.max_pixels)
        except ImageError as e:
            raise InvalidArgument(str(e)) from None
        if stages is not None:
            stages.append(Stage("decode", "REDUCED" if d.factor > 1 else "OK", time.perf_counter() - t0, float(d.factor)))
        return d.image

    def decode_for_site(self, data: bytes, stages: list[Stage]) -> Decoded:
        """Verify's and Identify's photo. Their faces are searched at a camera frame's long side at
        most (encoder.align.AlignConfig.sized_max_side), so a large photo is decoded reduced to
        about that side (a 40-megapixel JPEG at 1/8: 25 ms, where 1/4 took 38), and searched as a
        frame of the site's camera enlarged (`face`)."""
        t0 = time.perf_counter()
        try:
            d = decode_reduced(data, self.settings.max_pixels, reduce_to=self.embedder.sized_max_side)
        except ImageError as e:
            raise InvalidArgument(str(e)) from None
        stages.append(Stage("decode", "REDUCED" if d.factor > 1 else "OK", time.perf_counter() - t0, float(d.factor)))
        return d

    def gates_verdict(self, req: LookRequest, img: np.ndarray, stages: list[Stage]) -> GateVerdict:
        """Trigger word (if the site's policy asks), then day/night; cheap stages first."""
        site, audio = req.site, req.audio
        if req.trigger_word:
            gate = self.gates.trigger_word
            if gate is None:
                raise FailedPrecondition(f"site {site!r} requires the trigger word, but no trigger-word detector "
                                         f"is loaded")
            t0 = time.perf_counter()
            if not audio:
                stages.append(Stage("trigger_word", "NO_AUDIO", time.perf_counter() - t0))
                return GateVerdict(Reason.TRIGGER_NOT_HEARD, "no audio was sent: this door wakes on the word \"activate\"", "")
            if len(audio) > self.settings.max_audio_bytes:
                raise InvalidArgument(f"audio of {len(audio)} bytes, more than the limit of "
                                      f"{self.settings.max_audio_bytes} (about 10 s of speech are expected)")
            from gates.trigger_word import AudioError

            try:
                heard = gate.listen(audio)
            except AudioError as e:
                raise InvalidArgument(f"audio: {e}") from None
            stages.append(Stage("trigger_word", "HEARD" if heard.events else "NOT_HEARD", time.perf_counter() - t0,
                                max((e.p for e in heard.events), default=heard.peak)))
            if not heard.events:     # detail: "say it again: ..." (a word-like sound) or "no word heard: ..."
                return GateVerdict(Reason.TRIGGER_NOT_HEARD, heard.message(), "")
        if self.gates.daynight is None:
            return GateVerdict(None, "", "day")
        t0 = time.perf_counter()
        r = self.gates.daynight.predict(img)
        limit = req.too_dark or 0.0
        dark = r.light < limit
        stages.append(Stage("daynight", Reason.TOO_DARK.value if dark else r.label, time.perf_counter() - t0, r.p_night))
        if dark:
            return GateVerdict(Reason.TOO_DARK, f"light level {r.light:.3f} is below {limit:.3f}: retake with more light",
                               r.label)
        return GateVerdict(None, "", r.label)

    def face(self, img: np.ndarray, stages: list[Stage], central_of_several: bool = False,
              min_face_px: int | None = None, id_photo: bool = False, decoded: Decoded | None = None):
        """The photo's usable face and its embedding, or (alignment, None) with the reason why not.
        `central_of_several`: a photo of several faces of similar size gives its central face too.
        `min_face_px`: the site's smallest face (SitePolicy); None: the aligner's own rule (Enroll, Cluster).
        `id_photo` (Enroll): its large face is searched for first (encoder.align.FaceAligner.detect).
        `decoded`: how img was decoded (decode_for_site). A photo decoded reduced, larger than any
        camera frame, is searched as a frame of the site's camera enlarged: its smallest face is the
        share of its long side that `min_face_px` is of a frame's (Embedder.sized_max_side), so that
        its search costs what a frame's does, and its chip is made as a frame's, from the decode."""
        t0 = time.perf_counter()
        d = decoded
        if min_face_px and d is not None and d.factor > 1:
            smallest = min_face_px * max(d.size) / self.embedder.sized_max_side      # in the photo's pixels
            a = self.embedder.align(img, max(1, math.floor(smallest / d.factor)), id_photo)
            if a.reason is Reason.FACE_TOO_SMALL:
                side = float(min(a.box[2] - a.box[0], a.box[3] - a.box[1])) * d.factor
                a.detail = (f"face of {side:.0f} px, below {smallest:.0f} px (this site's {min_face_px} px in a "
                            f"{self.embedder.sized_max_side} px frame)")
        else:
            a = self.embedder.align(img, min_face_px, id_photo)
        t1 = time.perf_counter()
        stages.append(Stage("detect", a.outcome, t1 - t0, a.prob))
        if not (a.ok or (central_of_several and a.reason is Reason.MULTIPLE_FACES)):
            return a, None
        v = self.embedder.embed_crops(a.crop[None])[0]
        stages.append(Stage("encode", "OK", time.perf_counter() - t1))
        return a, v

    def look(self, req: LookRequest) -> Look:
        stages: list[Stage] = []
        decoded = None
        if req.kind == "site":
            decoded = self.decode_for_site(req.image, stages)
            img = decoded.image
            gate = self.gates_verdict(req, img, stages)
        else:
            img = self.decode(req.image)
            gate = GateVerdict(None, "", "")
            if req.kind == "id_photo" and req.too_dark is not None:
                from gates.daynight import light_level

                if (light := light_level(img)) < req.too_dark:
                    gate = GateVerdict(Reason.TOO_DARK, f"light level {light:.3f} is below {req.too_dark:.3f}: an ID "
                                                        f"photo needs good light", "")
        if gate.reject:
            return Look(stages, gate)
        a, v = self.face(img, stages, req.central_of_several, req.min_face_px, req.kind == "id_photo", decoded)
        return Look(stages, gate, a, v)


class Pipeline:
    """The service's decisions: stores, thresholds, audit. The face models' part of each call is
    `look`ed at by its worker processes where the server has them (`lookers`; `embedder` is then the
    encoder's card, encoder.embedder.EncoderCard: its version and calibrated values, no networks),
    else by `eyes` in the calling thread."""

    def __init__(self, settings: Settings, embedder: Embedder | EncoderCard, store: TemplateStore,
                 thresholds: ThresholdStore | None, audit: AuditLog | None = None, gates: Gates | None = None,
                 sites: SiteStore | None = None):
        self.settings = settings
        self.embedder = embedder
        self.store = store
        self.thresholds = thresholds      # None: the encoder checkpoint's own calibrated values only
        self.audit = audit or open_audit_log(settings.data_dir)
        self.gates = gates or Gates()
        self.sites = sites or SiteStore(settings.data_dir)
        self.version = embedder.version
        self._enrolling = threading.Lock()   # an Enroll's duplicate search and its add, as one step
        self.eyes = Eyes(settings, embedder, self.gates)
        # worker processes that look in its stead (service/processes.py): "frames" and "large"
        self.lookers: dict[str, object] = {}

    # ------------------------------------------------------------------ building blocks
    def decode(self, data: bytes, stages: list[Stage] | None = None) -> np.ndarray:
        return self.eyes.decode(data, stages)

    def look(self, req: LookRequest, large: bool = False) -> Look:
        """The face models' part of a call: in a worker process where the server has them
        (`lookers`: the frames' and, with `large`, the large photos'), else in this thread."""
        looker = (self.lookers.get("large") if large else None) or self.lookers.get("frames") or self.eyes
        return looker.look(req)

    def _calibrated(self, site: str, profile: str, kind: str) -> float | None:
        """The site's calibrated value, else the default site's (a site with no thresholds of its own
        uses the default site's: CONTRACT.md), else None."""
        if self.thresholds is None:
            return None
        try:
            for s in dict.fromkeys((site, self.settings.default_site)):
                t = self.thresholds.get(s, profile, self.version, kind)
                if t is not None:
                    return t
            return None
        except ThresholdError as e:
            raise FailedPrecondition(str(e)) from None

    def _distances(self, v: np.ndarray, templates: np.ndarray) -> np.ndarray:
        """The probe's distance to each template, as every threshold is calibrated: normalised
        against the release's cohort (encoder/score_norm.py), else Euclidean."""
        norm = self.embedder.norm
        return norm.distances(v, templates) if norm is not None else euclidean(templates, np.reshape(v, (1, -1)))

    def _nearest(self, v: np.ndarray, k: int) -> list[Neighbour]:
        """The index's k nearest templates, their distances as `_distances` measures them, nearest first."""
        nb = self.store.search(v, k, self.version)
        if self.embedder.norm is None or not nb:
            return nb
        d = self._distances(v, np.stack([n.vector for n in nb]))
        return sorted((replace(n, distance=float(x)) for n, x in zip(nb, d)), key=lambda n: n.distance)

    def threshold(self, site: str, profile: str, kind: str) -> float:
        """The site's calibrated threshold (data folder), else the default site's, else the encoder
        checkpoint's own."""
        t = self._calibrated(site, profile, kind)
        if t is not None:
            return t
        key = {"verify": "threshold", "identify": "identify_threshold"}[kind]
        t = self.embedder.meta.get(key if profile == "day" else f"{profile}_{key}")
        if t is None:
            raise FailedPrecondition(f"no {kind} threshold for site {site!r} ({profile}) and none in the encoder "
                                     f"checkpoint: run `facegate calibrate ... --site {site} --profile {profile} "
                                     f"--kind {kind}`")
        return float(t)

    def too_dark_light(self, site: str) -> float:
        """The light level below which a photo is TOO_DARK: the site's (calibrated for this encoder),
        else the default site's, else the encoder checkpoint's, else the day/night gate's own; 0.0 = never."""
        t = self._calibrated(site, "night", "too_dark")
        if t is None:
            t = self.embedder.meta.get("too_dark_light")
        if t is None and self.gates.daynight is not None:
            t = self.gates.daynight.too_dark_light
        return float(t or 0.0)

    def policy(self, site: str) -> SitePolicy:
        """The site's own policy, else the default site's (CONTRACT.md), else SitePolicy()'s defaults."""
        try:
            return self.sites.in_force(site, self.settings.default_site)[0]
        except SiteError as e:
            raise FailedPrecondition(str(e)) from None

    # ------------------------------------------------------------------ RPCs as functions
    def _site_look(self, image: bytes, site: str, audio: bytes, large: bool, central: bool = False) -> Look:
        policy = self.policy(site)
        too_dark = self.too_dark_light(site) if self.gates.daynight is not None else None
        return self.look(LookRequest(image, "site", audio, policy.trigger_word, too_dark, policy.min_face_px,
                                     central and policy.several_faces == CENTRAL_FACE, site), large)

    def verify(self, subject: str, image: bytes, site: str = "", audio: bytes = b"",
               large: bool = False) -> VerifyResult:
        """`large`: a large photo's call (service/admission.py), looked at by the large photos' worker."""
        t0 = time.perf_counter()
        if not subject:
            raise InvalidArgument("subject_id is empty")
        site = site or self.settings.default_site
        if not self.store.has_subject(subject):     # before the models: a claim of no one costs them nothing
            raise NotFound(f"subject {subject!r} is not enrolled")
        look = self._site_look(image, site, audio, large, central=True)
        stages, gate = look.stages, look.gate
        profile = gate.profile
        threshold = self.threshold(site, profile or "day", "verify")
        distance = None
        a, v = look.alignment, look.vector
        if gate.reject:
            decision, reason, detail = REJECT, gate.reject, gate.detail
        elif v is None:
            decision, reason, detail = REJECT, a.reason, a.detail
        else:
            t1 = time.perf_counter()
            t = self.store.subject_vectors(subject, self.version)
            if len(t) == 0 and not self.store.has_subject(subject):    # deleted a moment ago (another replica)
                raise NotFound(f"subject {subject!r} is not enrolled")
            if len(t) == 0:
                raise FailedPrecondition(f"subject {subject!r} has no template of encoder {self.version}: re-enroll")
            distance = claim_distance(self._distances(v, t))
            stages.append(Stage("match", "OK", time.perf_counter() - t1, distance))
            ok = distance <= threshold
            if a.ok:
                decision, reason, detail = (ACCEPT, Reason.MATCH, "") if ok else (REJECT, Reason.NO_MATCH, "")
            elif ok:            # several faces, the central one judged (site policy central_face)
                decision, reason, detail = ACCEPT, Reason.MATCH, f"{a.detail}: the central one is the card's owner"
            else:               # ...and it is not the owner: the kiosk asks for a retake alone
                decision, reason, detail = REJECT, a.reason, (f"{a.detail}: the central one is not the "
                                                                    f"card's owner, retake alone")
        r = VerifyResult(decision, reason, subject, distance, threshold, site, profile, self.version,
                         (time.perf_counter() - t0) * 1000, detail, stages)
        self.audit.record("Verify", site=site, subject=subject, decision=decision, reason=reason,
                          distance=distance, threshold=threshold, faces=a.faces if a else None,
                          light_profile=profile,
                          encoder_version=self.version, index_version=self.store.index_version,
                          stages=[{"name": s.name, "outcome": s.outcome} for s in stages],
                          latency_ms=round(r.latency_ms, 2))
        return r

    def identify(self, image: bytes, site: str = "", k: int = 0, audio: bytes = b"",
                 large: bool = False) -> IdentifyResult:
        t0 = time.perf_counter()
        if k < 0 or k > 100:
            raise InvalidArgument(f"k must lie in 0..100 (0 = the server's default), got {k}")
        k = k or self.settings.identify_k
        site = site or self.settings.default_site
        look = self._site_look(image, site, audio, large)
        stages, gate = look.stages, look.gate
        profile = gate.profile
        threshold = self.threshold(site, profile or "day", "identify")
        a, v = look.alignment, look.vector
        if gate.reject or v is None:
            reason, detail = (gate.reject, gate.detail) if gate.reject else (a.reason, a.detail)
            r = IdentifyResult(REJECT, reason, None, 0, 0, [], threshold, site, profile, self.version,
                               (time.perf_counter() - t0) * 1000, detail, stages)
        else:
            t1 = time.perf_counter()
            nb = self._nearest(v, k)
            counts = self.store.template_counts([n.subject for n in nb])
            vote = knn_vote([(n.subject, n.distance) for n in nb], threshold, counts, self.settings.identify_min_votes)
            stages.append(Stage("match", vote.outcome, time.perf_counter() - t1, nb[0].distance if nb else 0.0))
            decision = ACCEPT if vote.subject else REJECT
            reason = Reason.MATCH if vote.subject else Reason.NO_MATCH
            r = IdentifyResult(decision, reason, vote.subject, vote.votes, vote.needed,
                               [(n.subject, n.distance) for n in nb], threshold, site, profile, self.version,
                               (time.perf_counter() - t0) * 1000, UNKNOWN_BECAUSE.get(vote.outcome, ""), stages)
        self.audit.record("Identify", site=site, subject=r.subject, decision=r.decision, reason=r.reason,
                          votes=r.votes, nearest=r.neighbours[0][1] if r.neighbours else None, threshold=threshold,
                          light_profile=profile, encoder_version=self.version,
                          index_version=self.store.index_version,
                          stages=[{"name": s.name, "outcome": s.outcome} for s in stages],
                          latency_ms=round(r.latency_ms, 2))
        return r

    def enroll(self, subject: str, image: bytes) -> EnrollResult:
        """One photo of an enrollment stream. Rejections are results; malformed input raises."""
        if not subject:
            raise InvalidArgument("subject_id is empty")
        if len(subject) > 256:
            raise InvalidArgument("subject_id is longer than 256 characters")
        digest = hashlib.sha256(image).hexdigest()
        too_dark = self.too_dark_light(self.settings.default_site) if self.gates.daynight is not None else None
        look = self.look(LookRequest(image, "id_photo", too_dark=too_dark))
        if look.gate.reject:
            return EnrollResult(subject, "REJECTED", look.gate.reject, look.gate.detail)
        a, v = look.alignment, look.vector
        if v is None:
            return EnrollResult(subject, "REJECTED", a.reason, a.detail)
        same_person = self.threshold(self.settings.default_site, "day", "verify")
        dups: dict[str, float] = {}          # another subject -> its nearest template's distance
        with self._enrolling:                # photos enrolled side by side each see the ones before
            for n in self._nearest(v, 5):
                if n.subject != subject and n.distance <= same_person:
                    dups.setdefault(n.subject, n.distance)
            added = self.store.add(subject, v, digest, self.version)
        status = "ALREADY_ENROLLED" if added.already_enrolled else "ACCEPTED"
        self.audit.record("Enroll", subject=subject, status=status, template_id=added.template_id,
                          duplicates=list(dups), encoder_version=self.version)
        return EnrollResult(subject, status, None, "", added.template_id, list(dups.items()))

    def delete(self, subject: str) -> DeleteReceipt:
        """Erase a subject from every index version of the data folder (service/erasure.py), then
        one audit line, whose hash is the receipt's id. A subject enrolled nowhere: NOT_FOUND, and
        no audit line (nothing was deleted)."""
        if not subject:
            raise InvalidArgument("subject_id is empty")
        removed_from = erase_subject(self.store, Path(self.settings.data_dir), subject)
        n = sum(r.templates for r in removed_from)
        if n == 0:
            raise NotFound(f"subject {subject!r} is not enrolled in any index version")
        entry = self.audit.record("DeleteSubject", subject=subject, removed=n,
                                  removed_from=[{"index_version": r.index_version, "index_name": r.index_name,
                                                 "templates": r.templates} for r in removed_from])
        return DeleteReceipt(subject, n, removed_from, entry["ts"], entry["caller"], entry["hash"])

    def cluster(self, photos: list[bytes], k: int) -> ClusterResult:
        if not photos:
            raise InvalidArgument("no photos to cluster")
        if len(photos) > self.settings.max_cluster_photos:
            raise InvalidArgument(f"{len(photos)} photos, more than the limit of {self.settings.max_cluster_photos}")
        if k < 0:
            raise InvalidArgument(f"k must be >= 0 (0 = choose k), got {k}")
        vecs, rows = [], []
        for i, data in enumerate(photos):
            try:
                look = self.look(LookRequest(data))
            except InvalidArgument as e:
                raise InvalidArgument(f"photo {i + 1} of {len(photos)}: {e.message}") from None
            a, v = look.alignment, look.vector
            rows.append(a.reason if v is None else None)
            if v is not None:
                vecs.append(v)
        n = len(vecs)
        if k > n:
            raise InvalidArgument(f"k={k} but only {n} of the photos have a usable face")
        if n == 0:
            return ClusterResult(0, [(-1, r) for r in rows], np.zeros((0, self.embedder.embedding_dim), np.float32), None)
        x = np.stack(vecs)
        cut = self.embedder.meta.get("cluster")
        if k:
            c = kmeans(x, k)
        elif cut:      # calibrated for this encoder on people apart from any test (bench/cluster_tune.py)
            c = choose_k_by_distance(x, cut["cut"], cut["method"])
        else:
            c = choose_k(x, same_distance=self.threshold(self.settings.default_site, "day", "verify"),
                         measure=scorer(self.embedder.norm))     # the threshold's unit, normalised or not
        labels = iter(c.labels.tolist())
        assignments = [(next(labels), None) if r is None else (-1, r) for r in rows]
        return ClusterResult(c.k, assignments, c.centroids, c.silhouette)

    def status(self) -> dict:
        s = self.store.status()
        return {"subjects": s["subjects"], "templates": s["templates"], "encoder_version": self.version,
                "encoder_arithmetic": self.embedder.arithmetic,
                "index_version": s["index_version"], "generation": s["generation"]}


def check_encoder_versions(store: TemplateStore, version: str) -> None:
    """serve refuses an index whose templates were made by another encoder (CONTRACT.md)."""
    other = store.encoder_versions() - {version}
    if other:
        raise FailedPrecondition(
            f"the data folder {store.folder} holds templates of encoder {', '.join(sorted(other))}, but the loaded "
            f"encoder is {version}: distances of two encoders cannot be compared. Re-enroll the photo source with "
            f"this encoder into a new index version and switch to it: `facegate reindex PHOTO_DIR --data-dir "
            f"{store.folder.parent.parent} --checkpoint CHECKPOINT`; or serve this folder with the checkpoint "
            f"that made it (--checkpoint).")
