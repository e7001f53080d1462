"""Load tests (CONTRACT.md, "Load tests"): cameras hammering a running server with Verify,
Identify or a mix of both, and what they saw: throughput, latency percentiles, errors by gRPC
code, the decisions' reasons, and the server's own time per stage.

Two ways to load it:
- closed loop (`cameras`): N cameras, each sending its next request when the answer to the last
  one arrives. Never more than N in flight; the throughput is what the server sustains for N.
- open loop (`rate`): R requests per second in all, each leaving at its scheduled time
  (start + i / R) whatever the ones before it do. Coordinated omission is handled: a request's
  latency runs from its scheduled time, not from when it actually left, so a stall of the server
  (or of this generator) counts in full against every request that should have left during it.

Warm-up: the run lasts `warmup_s + seconds`; requests scheduled in the first `warmup_s` (1 s by
default) are sent but not counted (the server's first calls build its models' kernels and caches).

The generator is light, as it shares the machine with the server in the capacity runs: every
photo is read (and, for camera frames, composed and encoded as JPEG) once before the run, and
each request message is built then too; a request costs only the gRPC call.

Why grpc.aio in one process and not Locust: an open loop needs each request to leave at its own
scheduled time and to be timed from that time, while Locust's users are sequential loops that
pace themselves by waiting (its constant_throughput is per user, and a slow answer delays the next
request: the coordinated omission this tool must avoid); Locust's gRPC users also need gevent
patching of grpcio. A single asyncio loop keeps any number of requests in flight at the cost of
one coroutine each, and uses the product's own channel (service.client.make_channel, mutual TLS
included).
"""
from __future__ import annotations

import asyncio
import io
import os
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import FacegateError, InvalidArgument

ROOT = Path(__file__).resolve().parents[1]
RPCS = ("verify", "identify", "mix")
# a few LFW people (DevTest: never trained on), two photos each: the default load
DEFAULT_PHOTOS = [f"{name}/{name}_{n:04d}.jpg" for name, ns in
                  {"Abdullah_Gul": (1, 2), "Reese_Witherspoon": (1, 2), "Tom_Cruise": (1, 3),
                   "AJ_Lamas": (1,)}.items() for n in ns]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# MTCNN's face box is about half an LFW photo's side high (measured: 110-136 px on 250 x 250):
# the scale that gives a pasted photo's face the height asked for
FACE_SHARE = 0.5
FRAME_FACE_PX = (150, 200)


class Unavailable(FacegateError):
    code = "UNAVAILABLE"


@dataclass(frozen=True)
class Photo:
    subject: str    # the folder the photo came from: the id a Verify claims when no --subject is given
    name: str
    data: bytes     # encoded once, before the run


# -------------------------------------------------------------------------------------- photos
def data_root() -> Path:
    """Where the real data sets are: $FACEGATE_DATA, else ../shared/data beside the checkout."""
    return Path(os.environ.get("FACEGATE_DATA", ROOT.parent / "shared" / "data"))


def default_photos() -> list[Photo]:
    images = data_root() / "faces" / "lfw" / "images"
    missing = [p for p in DEFAULT_PHOTOS if not (images / p).is_file()]
    if missing:
        raise InvalidArgument(f"no --photos given, and the default LFW photos are not under {images} "
                              f"({missing[0]} is missing): give --photos DIR or set FACEGATE_DATA")
    return [Photo(p.split("/")[0], p, (images / p).read_bytes()) for p in DEFAULT_PHOTOS]


def load_photos(folder: str | Path, limit: int = 100, seed: int = 0) -> list[Photo]:
    """The photos under `folder` (any depth), at most `limit` of them, drawn with `seed`. A photo's
    subject is its folder's name (DIR/<subject>/<photo>, as `facegate enroll DIR` reads it)."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidArgument(f"--photos {root} is not a folder")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise InvalidArgument(f"no photos ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    if len(paths) > limit:
        paths = sorted(random.Random(seed).sample(paths, limit))
    photos = []
    for p in paths:
        data = p.read_bytes()
        if not data:
            raise InvalidArgument(f"{p} is empty")
        photos.append(Photo(p.parent.name, str(p.relative_to(root)), data))
    return photos


def parse_size(text: str) -> tuple[int, int]:
    """"640x480" -> (640, 480)."""
    w, sep, h = text.lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit()) or not (64 <= int(w) <= 8000 and 64 <= int(h) <= 8000):
        raise InvalidArgument(f"--frames {text!r}: expected WIDTHxHEIGHT, e.g. 640x480, each side 64..8000 px")
    return int(w), int(h)


def background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible doorway scene behind the person: a shaded wall in a muted colour, a floor, a
    door frame and a notice board, soft light falling off, sensor noise. RGB uint8."""
    import cv2

    wall = rng.uniform(120, 210) * (1 + rng.uniform(-0.08, 0.08, 3))       # off-white to grey, a slight tint
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(wall * (1.08 - 0.25 * y), (height, width, 3)).astype(np.float32).copy()
    floor = int(height * rng.uniform(0.78, 0.92))
    img[floor:] = rng.uniform(50, 120) * (1 + rng.uniform(-0.1, 0.1, 3))
    fx = int(width * rng.uniform(0.02, 0.2))                    # a door frame at the side
    img[: floor, fx: fx + max(4, width // 40)] = wall * 0.55
    bx, by = int(width * rng.uniform(0.65, 0.8)), int(height * rng.uniform(0.15, 0.35))
    img[by: by + height // 5, bx: bx + width // 6] = rng.uniform(60, 240, 3)    # a notice board
    light = cv2.resize(rng.normal(1.0, 0.08, (4, 6)).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    img *= light[..., None]
    img += rng.normal(0, 3.0, img.shape).astype(np.float32)
    return np.clip(cv2.GaussianBlur(img, (0, 0), 1.2), 0, 255).astype(np.uint8)


def camera_frame(photo: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """`photo` (RGB) pasted into a width x height scene, scaled so that its face is 150-200 px
    high (less when the frame is too small for that), its edges feathered into the scene."""
    import cv2

    ph, pw = photo.shape[:2]
    scale = rng.uniform(*FRAME_FACE_PX) / (FACE_SHARE * min(ph, pw))
    scale = min(scale, 0.95 * height / ph, 0.95 * width / pw)
    sw, sh = max(1, round(pw * scale)), max(1, round(ph * scale))
    small = cv2.resize(photo, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    frame = background(width, height, rng)
    x0 = int(np.clip((width - sw) / 2 + rng.uniform(-0.15, 0.15) * width, 0, width - sw))
    y0 = int(np.clip((height - sh) * rng.uniform(0.2, 0.6), 0, height - sh))
    mask = np.zeros((sh, sw), np.float32)               # an ellipse, blurred: no hard rectangle
    cv2.ellipse(mask, (sw // 2, sh // 2), (int(sw * 0.36), int(sh * 0.38)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.04 * min(sw, sh)))[..., None]
    region = frame[y0: y0 + sh, x0: x0 + sw].astype(np.float32)
    frame[y0: y0 + sh, x0: x0 + sw] = (mask * small + (1 - mask) * region).astype(np.uint8)
    return frame


def to_frames(photos: list[Photo], size: tuple[int, int], seed: int = 0, quality: int = 90) -> list[Photo]:
    """Each photo as a camera frame of `size`, encoded as JPEG once (here, not per request)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    rng = np.random.default_rng(seed)
    out = []
    for p in photos:
        try:
            img = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(p.data))).convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise InvalidArgument(f"{p.name}: cannot be read as an image ({e})") from None
        buf = io.BytesIO()
        Image.fromarray(camera_frame(img, *size, rng)).save(buf, "JPEG", quality=quality)
        out.append(Photo(p.subject, p.name, buf.getvalue()))
    return out


# ------------------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class LoadConfig:
    rpc: str = "verify"                 # verify | identify | mix (Verify and Identify in turn)
    cameras: int = 1                    # closed loop: requests in flight; open loop: photo streams
    seconds: float = 10.0               # measured, after the warm-up
    rate: float | None = None           # requests per second in all: an open loop
    subject: str | None = None          # Verify's claimed id (None: each photo's folder name)
    deadline_ms: float | None = None    # the gRPC deadline of each request (None: none)
    warmup_s: float = 1.0               # sent, not counted
    drain_s: float = 30.0               # after the run, how long answers still in flight are awaited
    site: str = ""

    def check(self) -> None:
        if self.rpc not in RPCS:
            raise InvalidArgument(f"--rpc {self.rpc!r}: one of {', '.join(RPCS)}")
        if self.cameras < 1:
            raise InvalidArgument(f"--cameras must be at least 1, got {self.cameras}")
        if not self.seconds > 0:
            raise InvalidArgument(f"--seconds must be > 0, got {self.seconds}")
        if self.rate is not None and not self.rate > 0:
            raise InvalidArgument(f"--rate must be > 0 requests per second, got {self.rate}")
        if self.deadline_ms is not None and not self.deadline_ms > 0:
            raise InvalidArgument(f"--deadline-ms must be > 0, got {self.deadline_ms}")
        if self.warmup_s < 0:
            raise InvalidArgument(f"--warmup must be >= 0 seconds, got {self.warmup_s}")
        if self.subject == "":
            raise InvalidArgument("--subject is empty")


@dataclass
class Sample:
    scheduled: float        # seconds since the start at which the request was due to leave
    latency: float          # seconds from `scheduled` to the answer
    rpc: str                # Verify | Identify
    code: str               # gRPC status name
    reason: str = ""        # OK answers: the proto's Reason name
    decision: str = ""
    server_ms: float = 0.0  # the server's own latency_ms
    stages: list[tuple[str, float]] = field(default_factory=list)    # (name, seconds)


@dataclass
class RunRecord:
    samples: list[Sample] = field(default_factory=list)
    sent: int = 0
    unanswered: list[float] = field(default_factory=list)   # scheduled times of requests never answered
    max_in_flight: int = 0
    max_send_lag: float = 0.0       # open loop: the latest any request left after its scheduled time
    elapsed: float = 0.0
    cpu_seconds: float = 0.0        # this process's CPU time during the run (the generator's own cost)


def build_requests(photos: list[Photo], config: LoadConfig):
    """Each photo's request messages, built once: [(Verify request, Identify request)]."""
    from facegate.v1 import facegate_pb2 as pb

    return [(pb.VerifyRequest(subject_id=config.subject or p.subject, image=p.data, site=config.site),
             pb.IdentifyRequest(image=p.data, site=config.site)) for p in photos]


class _Load:
    def __init__(self, stub, photos: list[Photo], config: LoadConfig, progress: bool):
        from facegate.v1 import facegate_pb2 as pb

        self.pb, self.config = pb, config
        self.requests = build_requests(photos, config)
        self.methods = {"Verify": stub.Verify, "Identify": stub.Identify}
        self.record = RunRecord()
        self.in_flight = 0
        self.total = config.warmup_s + config.seconds
        self.timeout = None if config.deadline_ms is None else config.deadline_ms / 1000
        self.progress = progress
        self.errors = 0

    def kind(self, n: int) -> str:
        if self.config.rpc == "mix":
            return ("Verify", "Identify")[n % 2]
        return "Verify" if self.config.rpc == "verify" else "Identify"

    def request(self, n: int):
        kind = self.kind(n)
        verify, identify = self.requests[n % len(self.requests)]
        return kind, verify if kind == "Verify" else identify

    async def one(self, n: int, scheduled: float) -> None:
        import grpc

        kind, req = self.request(n)
        self.record.sent += 1
        self.in_flight += 1
        self.record.max_in_flight = max(self.record.max_in_flight, self.in_flight)
        try:
            r = await self.methods[kind](req, timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            s = Sample(scheduled, self.now() - scheduled, kind, e.code().name)
            self.errors += 1
        except asyncio.CancelledError:      # still in flight when the drain ran out
            self.record.unanswered.append(scheduled)
            raise
        else:
            s = Sample(scheduled, self.now() - scheduled, kind, "OK",
                       self.pb.Reason.Name(r.reason), self.pb.Decision.Name(r.decision), r.latency_ms,
                       [(st.name, st.seconds) for st in r.stages])
        finally:
            self.in_flight -= 1
        self.record.samples.append(s)

    def now(self) -> float:
        return time.perf_counter() - self.t0

    async def closed_loop(self) -> list[asyncio.Task]:
        async def camera(k: int):
            n = k                     # each camera starts at its own photo; in a mix, half on each RPC
            while (t := self.now()) < self.total:
                await self.one(n, t)
                n += self.config.cameras
        return [asyncio.create_task(camera(k)) for k in range(self.config.cameras)]

    async def open_loop(self) -> list[asyncio.Task]:
        tasks = []
        n = 0
        while (due := n / self.config.rate) < self.total:
            wait = due - self.now()
            if wait > 0:
                await asyncio.sleep(wait)
            self.record.max_send_lag = max(self.record.max_send_lag, self.now() - due)
            tasks.append(asyncio.create_task(self.one(n, due)))
            n += 1
        return tasks

    async def show_progress(self):
        from tqdm import tqdm

        mode = f"{self.config.rate:g}/s" if self.config.rate else f"{self.config.cameras} cameras"
        with tqdm(total=round(self.total, 1), desc=f"loadtest {self.config.rpc} {mode}", unit="s", file=sys.stderr,
                  bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s {postfix}", disable=not self.progress) as bar:
            def show():
                bar.n = round(min(self.now(), self.total), 1)
                bar.set_postfix(answered=len(self.record.samples), errors=self.errors, in_flight=self.in_flight,
                                refresh=False)
                bar.refresh()
            try:
                while True:
                    show()
                    await asyncio.sleep(0.5)
            finally:        # the last answers, as the run ends
                show()

    async def run(self) -> RunRecord:
        self.t0, cpu0 = time.perf_counter(), time.process_time()
        ticker = asyncio.create_task(self.show_progress())
        try:
            tasks = await (self.open_loop() if self.config.rate else self.closed_loop())
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=max(0.0, self.total - self.now()) + self.config.drain_s)
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            self.record.elapsed = self.now()
            self.record.cpu_seconds = time.process_time() - cpu0
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        return self.record


async def run_load(address: str, photos: list[Photo], config: LoadConfig, tls_dir=None, client=None,
                   progress: bool = True, connect_timeout: float = 10.0) -> RunRecord:
    """Run the load against the server at `address` -> what every request got."""
    from facegate.v1 import facegate_pb2_grpc as pb_grpc

    from .client import make_channel

    config.check()
    if not photos:
        raise InvalidArgument("no photos to send")
    channel = make_channel(address, tls_dir, client, aio=True)
    try:
        try:
            await asyncio.wait_for(channel.channel_ready(), connect_timeout)
        except asyncio.TimeoutError:
            raise Unavailable(f"cannot connect to {address} within {connect_timeout:g} s: is `facegate serve` "
                              f"running there (and, with --tls-dir, does it trust this client)?") from None
        return await _Load(pb_grpc.FaceGateStub(channel), photos, config, progress).run()
    finally:
        await channel.close()


# --------------------------------------------------------------------------------- the summary
def _ms(x: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(x, q)) * 1000, 1) if len(x) else None


def _latencies(samples: list[Sample]) -> dict:
    lat = np.array([s.latency for s in samples])
    return {"requests": len(samples), "p50_ms": _ms(lat, 50), "p95_ms": _ms(lat, 95), "p99_ms": _ms(lat, 99),
            "max_ms": round(float(lat.max()) * 1000, 1) if len(lat) else None}


def summarise(record: RunRecord, config: LoadConfig, photos: int = 0, frames: str | None = None) -> dict:
    """The JSON of a run (CONTRACT.md's keys first). Only requests due after the warm-up count.
    Latency percentiles are over every answer, OK or error (a camera waits for either); `rps` is
    the answers counted over `duration_s`, from the end of the warm-up to the last of them."""
    measured = [s for s in record.samples if s.scheduled >= config.warmup_s]
    ok = [s for s in measured if s.code == "OK"]
    stage_s: dict[str, list[float]] = defaultdict(list)
    for s in ok:
        for name, sec in s.stages:
            stage_s[name].append(sec)
    last = max((s.scheduled + s.latency for s in measured), default=config.warmup_s + config.seconds)
    duration = max(last, config.warmup_s + config.seconds) - config.warmup_s
    lat = _latencies(measured)
    out = {
        "rpc": {"verify": "Verify", "identify": "Identify", "mix": "mix"}[config.rpc],
        "cameras": config.cameras,
        "requests": lat["requests"],
        "rps": round(len(measured) / duration, 2),
        "p50_ms": lat["p50_ms"], "p95_ms": lat["p95_ms"], "p99_ms": lat["p99_ms"],
        "errors": dict(sorted(Counter(s.code for s in measured if s.code != "OK").items())),
        "reasons": dict(sorted(Counter(s.reason for s in ok).items())),
        "stages": {name: round(float(np.median(v)) * 1000, 1) for name, v in stage_s.items()},
        "mode": "open" if config.rate else "closed",
        "rate": config.rate,
        "seconds": config.seconds,
        "warmup_s": config.warmup_s,
        "duration_s": round(duration, 2),
        "ok": len(ok),
        "max_ms": lat["max_ms"],
        "server_p50_ms": round(float(np.median([s.server_ms for s in ok])), 1) if ok else None,
        "decisions": dict(sorted(Counter(s.decision for s in ok).items())),
        "unanswered": sum(t >= config.warmup_s for t in record.unanswered),
        "sent": record.sent,
        "max_in_flight": record.max_in_flight,
        "client_cpu_ms_per_request": round(record.cpu_seconds * 1000 / max(1, record.sent), 2),
        "deadline_ms": config.deadline_ms,
        "photos": photos,
        "frames": frames,
    }
    if config.rate:
        out["max_send_lag_ms"] = round(record.max_send_lag * 1000, 1)
    if config.rpc == "mix":
        out["by_rpc"] = {k: _latencies([s for s in measured if s.rpc == k]) for k in ("Verify", "Identify")}
    return out


def plot(record: RunRecord, config: LoadConfig, summary: dict, path: str | Path) -> None:
    """Latency over the run (each answer, and rolling p50/p99 per second) and its histogram, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([s.scheduled for s in record.samples])
    ms = np.array([s.latency * 1000 for s in record.samples])
    ok = np.array([s.code == "OK" for s in record.samples], bool)
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    if len(t):
        a.scatter(t[ok], ms[ok], s=6, alpha=0.4, label="OK")
        if (~ok).any():
            a.scatter(t[~ok], ms[~ok], s=8, alpha=0.6, color="tab:red", marker="x", label="error")
        bins = np.floor(t).astype(int)
        secs = np.unique(bins)
        for q, style in ((50, "-"), (99, "--")):
            a.plot(secs + 0.5, [np.percentile(ms[bins == k], q) for k in secs], style, color="k", label=f"p{q} per s")
    a.axvspan(0, config.warmup_s, color="0.85", label="warm-up (not counted)")
    a.set_xlabel("scheduled send time, s")
    a.set_ylabel("latency, ms")
    mode = f"open loop, {config.rate:g} requests/s" if config.rate else f"closed loop, {config.cameras} cameras"
    a.set_title(f"{summary['rpc']}: {mode}: {summary['rps']} answers/s")
    a.legend(loc="upper left", fontsize=8)
    measured = ms[t >= config.warmup_s] if len(t) else ms
    if len(measured):
        b.hist(measured, bins=min(60, max(10, len(measured) // 5)), color="tab:blue", alpha=0.8)
        for key, style in (("p50_ms", "-"), ("p95_ms", ":"), ("p99_ms", "--")):
            b.axvline(summary[key], color="k", linestyle=style, label=f"{key[:3]} {summary[key]} ms")
        b.legend(fontsize=8)
    b.set_xlabel("latency, ms (after the warm-up)")
    b.set_ylabel("requests")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
