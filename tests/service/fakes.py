"""Stand-ins for the face models and the gates, so that the service's decisions are tested
without LFW, MTCNN or the encoder. A test photo's content decides the answer, visibly:

- A photo is a flat grey background with filled squares on it: each square is a "face".
  `photo(face("red"), face("blue", at=(0.15, 0.5)))` is a photo of two people.
- The fake aligner finds the squares (any colour that is not the background's grey):
  none -> NO_FACE; the one it judges (the largest, most central, by encoder.align.choose_face)
  with a side under MIN_FACE px (or the site's min_face_px) -> FACE_TOO_SMALL; another square with at least
  MULTIPLE_RATIO of its area -> MULTIPLE_FACES (its crop is still the central face's).
- A face's colour is its identity: the fake encoder maps each colour of PALETTE to a fixed
  unit vector. Their distances are exact (dyadic coordinates), so thresholds can straddle them:
      red - orange  = 0.5    (red's "other photo": the same person)
      red - purple  = 1.0    (someone alike)
      blue - cyan   = 0.5
      any other pair of red/orange/purple and blue/cyan/green = sqrt(2)
- The background's grey is the light: "day" (bright), "night" (dim), "dark" (too dark).
  The fake day/night gate calls a photo night when its mean luminance (the real
  gates.daynight.light_level) is under NIGHT_BELOW; `too_dark_light` is TOO_DARK_LIGHT.
- The fake trigger-word detector reads the request's WAV with the real decoder
  (gates.trigger_word.load_wav, so garbage raises the real AudioError) and "hears the word"
  where the audio is loud: `wav(word_at=1.0)` has a loud beep at 1 s, `wav()` only quiet noise.

Photos are encoded as PNG (or JPEG) and go through the pipeline's real decode.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image
from scipy.io import wavfile

from encoder.align import FaceAlignment, choose_face
from facegate.reasons import Reason
from gates.daynight import DayNightResult, light_level
from gates.trigger_word import RATE, Event, Heard, load_wav

DIM = 128
VERSION = "fake-encoder-1"


def _unit(**parts: float) -> np.ndarray:
    """A vector from {"e0": 1.0} or {"e0": 0.875, "e16..e30": 0.125}-style parts."""
    v = np.zeros(DIM, np.float32)
    for name, x in parts.items():
        lo, _, hi = name[1:].partition("_")
        v[int(lo):int(hi or lo) + 1] = x
    assert abs(float(v @ v) - 1.0) < 1e-12, parts       # exact: every coordinate is dyadic
    return v


# colour name -> (the RGB the square is drawn in, the embedding the fake encoder gives it)
PALETTE: dict[str, tuple[tuple[int, int, int], np.ndarray]] = {
    "red": ((220, 40, 40), _unit(e0=1.0)),
    "orange": ((240, 150, 30), _unit(e0=0.875, e16_30=0.125)),        # 1 - 7/8 = 1/8; 15 x 1/64 = 15/64
    "purple": ((150, 50, 200), _unit(e0=0.5, e3_5=0.5)),
    "blue": ((40, 70, 230), _unit(e1=1.0)),
    "cyan": ((40, 200, 220), _unit(e1=0.875, e31_45=0.125)),
    "green": ((40, 190, 60), _unit(e2=1.0)),
}
SQRT2 = float(np.sqrt(2.0))


def distance(a: str, b: str) -> float:
    """The facegate distance (Euclidean, CONTRACT.md) between two colours' embeddings."""
    return float(np.linalg.norm(PALETTE[a][1] - PALETTE[b][1]))


# The fake checkpoint's calibrated thresholds: each lies between two known distances.
THRESHOLD = 0.75                 # red~orange (0.5) match; red~purple (1.0) do not
IDENTIFY_THRESHOLD = 0.6         # stricter, still above 0.5
NIGHT_THRESHOLD = 1.25           # at night red~purple (1.0) match too; red~blue (1.414) never
NIGHT_IDENTIFY_THRESHOLD = 1.1

# ---------------------------------------------------------------------------------- photos
BACKGROUND = {"day": 200, "night": 60, "dark": 3}      # the grey of the background, by light
NIGHT_BELOW = 0.35               # light level under which the fake day/night gate says "night"
TOO_DARK_LIGHT = 0.1             # ...and under which a photo is too dark (the gate's own level)
DETECT_MIN = 10                  # a square smaller than this is not seen at all (JPEG specks)
MIN_FACE = 40                    # a face with a smaller side is FACE_TOO_SMALL
MULTIPLE_RATIO = 0.6             # a second face with this share of the chosen one's area: MULTIPLE_FACES
CROP = 112


@dataclass(frozen=True)
class Face:
    colour: str
    side: int = 100
    at: tuple[float, float] = (0.5, 0.5)      # the centre, as shares of the photo's width and height


def face(colour: str, side: int = 100, at: tuple[float, float] = (0.5, 0.5)) -> Face:
    if colour not in PALETTE:
        raise ValueError(f"unknown colour {colour!r}: one of {', '.join(PALETTE)}")
    return Face(colour, side, at)


def draw(*faces: Face, light: str = "day", size: tuple[int, int] = (400, 300)) -> np.ndarray:
    """An RGB array (height x width x 3): the background's grey, and each face a filled square."""
    w, h = size
    img = np.full((h, w, 3), BACKGROUND[light], np.uint8)
    for f in faces:
        cx, cy = int(round(f.at[0] * w)), int(round(f.at[1] * h))
        x0, y0 = cx - f.side // 2, cy - f.side // 2
        img[max(0, y0):y0 + f.side, max(0, x0):x0 + f.side] = PALETTE[f.colour][0]
    return img


def encode(img: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def photo(*faces: Face, light: str = "day", size: tuple[int, int] = (400, 300), fmt: str = "PNG") -> bytes:
    """The bytes of a photo of these faces (none: a photo of no one)."""
    return encode(draw(*faces, light=light, size=size), fmt)


# ---------------------------------------------------------------------------------- the encoder
class FakeEmbedder:
    """What service.pipeline.Pipeline uses of encoder.embedder.Embedder, with squares for faces
    and colours for identities. Counts its calls, so a test sees which stages ran."""

    embedding_dim = DIM
    arithmetic = "float32-fake"
    norm = None                     # no score normalisation: distances are the exact Euclidean ones above

    def __init__(self, version: str = VERSION, **meta):
        self.version = version
        self.meta = {"version": version, "threshold": THRESHOLD, "identify_threshold": IDENTIFY_THRESHOLD,
                     "night_threshold": NIGHT_THRESHOLD, "night_identify_threshold": NIGHT_IDENTIFY_THRESHOLD}
        self.meta.update(meta)
        self.meta = {k: v for k, v in self.meta.items() if v is not None}   # meta=None drops a key
        self.calls = {"align": 0, "embed": 0}
        self.min_face_seen: int | None = None      # the min_face_px of the last align call

    sized_max_side = 640            # as encoder.align.AlignConfig: a site's photo is decoded near this side

    @property
    def default_threshold(self) -> float | None:
        return self.meta.get("threshold")

    def align(self, img: np.ndarray, min_face_px: int | None = None, id_photo: bool = False) -> FaceAlignment:
        """`min_face_px`: the site's smallest face (None: MIN_FACE), as encoder.align.FaceAligner.align
        (`id_photo` changes only how the real aligner searches, not what it finds)."""
        self.calls["align"] += 1
        self.min_face_seen = min_face_px
        min_face = min_face_px or MIN_FACE
        h, w = img.shape[:2]
        background = img[0, 0].astype(np.int16)
        mask = (np.abs(img.astype(np.int16) - background).max(axis=2) > 30).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh, _ in stats[1:n]
                          if min(bw, bh) >= DETECT_MIN], np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return FaceAlignment(Reason.NO_FACE, detail="no face found")
        i = choose_face(boxes, h, w)
        x0, y0, x1, y1 = boxes[i].astype(int)
        crop = cv2.resize(np.ascontiguousarray(img[y0:y1, x0:x1]), (CROP, CROP), interpolation=cv2.INTER_AREA)
        a = FaceAlignment(None, crop=crop, box=boxes[i], prob=0.99, faces=len(boxes))
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        side = min(x1 - x0, y1 - y0)
        rivals = [j for j in range(len(boxes)) if j != i and areas[j] >= MULTIPLE_RATIO * areas[i]]
        if side < min_face:
            a.reason, a.detail = Reason.FACE_TOO_SMALL, f"face of {side} px, below {min_face} px"
        elif rivals:
            a.reason, a.detail = Reason.MULTIPLE_FACES, f"{1 + len(rivals)} faces of similar size"
        return a

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Each crop's colour (the mean of its middle) -> that colour's unit vector."""
        self.calls["embed"] += 1
        out = []
        for c in np.asarray(crops):
            q = c.shape[0] // 4
            mean = c[q:-q, q:-q].reshape(-1, 3).mean(0)
            name = min(PALETTE, key=lambda k: np.linalg.norm(mean - PALETTE[k][0]))
            if np.linalg.norm(mean - PALETTE[name][0]) > 60:
                raise ValueError(f"a face of colour {mean.round()} is not in the fake encoder's palette")
            out.append(PALETTE[name][1])
        return np.stack(out).astype(np.float32)


# ---------------------------------------------------------------------------------- the gates
class FakeDayNight:
    """Day or night by the light alone: night under NIGHT_BELOW, too dark under too_dark_light."""

    too_dark_light = TOO_DARK_LIGHT

    def __init__(self):
        self.calls = 0

    def predict(self, img: np.ndarray) -> DayNightResult:
        self.calls += 1
        light = light_level(img)
        night = light < NIGHT_BELOW
        return DayNightResult("night" if night else "day", 0.9 if night else 0.1, light,
                              light < self.too_dark_light)


WORD_P = 0.93        # the probability the fake detector gives a word it hears
MUMBLE_P = 0.4       # ... and a word-like sound too quiet to be sure of (its threshold: 0.5, say again from 0.25)


def wav(word_at: float | None = None, seconds: float = 2.0, rate: int = RATE, level: float = 0.8) -> bytes:
    """A 16-bit WAV of quiet noise; with `word_at`, a 0.3 s beep (the "word") of amplitude `level` at that
    second (0.8: heard; 0.25: a mumble, "say it again")."""
    x = np.random.default_rng(0).normal(0, 0.01, int(seconds * rate))
    if word_at is not None:
        t = np.arange(int(0.3 * rate)) / rate
        at = int(word_at * rate)
        x[at:at + len(t)] += level * np.sin(2 * np.pi * 1000 * t)
    buf = io.BytesIO()
    wavfile.write(buf, rate, (np.clip(x, -1, 1) * 32767).astype(np.int16))
    return buf.getvalue()


class FakeTriggerWord:
    """Hears "the word" wherever a 20 ms frame of the audio is loud (RMS over 0.3): one event
    per loud stretch, at its start. Decodes with the real WAV reader."""

    FRAME = RATE // 50

    def __init__(self):
        self.calls = 0

    def predict(self, audio: bytes) -> list[Event]:
        return self.listen(audio).events

    def listen(self, audio: bytes) -> Heard:
        """As the real gate's: the events, and a peak of MUMBLE_P where a frame's RMS is 0.1-0.3."""
        self.calls += 1
        x = load_wav(audio)
        frames = x[: len(x) // self.FRAME * self.FRAME].reshape(-1, self.FRAME)
        level = np.sqrt((frames ** 2).mean(axis=1))
        loud = level > 0.3
        starts = np.flatnonzero(loud & ~np.concatenate([[False], loud[:-1]]))
        found = [Event(round(float(i) * self.FRAME / RATE, 3), WORD_P) for i in starts]
        peak = WORD_P if found else (MUMBLE_P if (level > 0.1).any() else 0.0)
        return Heard(found, peak, 0.5, 0.25)


# ---------------------------------------------------------------------------------- a pipeline
def fake_pipeline(data_dir, embedder: FakeEmbedder | None = None, gates: bool = True, thresholds: bool = True,
                  **settings):
    """A real service.pipeline.Pipeline (real decode, template store, thresholds, site policies,
    audit) in `data_dir`, on the fake encoder and, with `gates`, the fake day/night and trigger word."""
    from index.template_store import TemplateStore
    from service.pipeline import Gates, Pipeline
    from service.settings import Settings
    from service.thresholds import ThresholdStore

    s = Settings(data_dir=data_dir, **settings)
    embedder = embedder or FakeEmbedder()
    return Pipeline(s, embedder, TemplateStore(data_dir / "index", dim=DIM),
                    ThresholdStore(data_dir) if thresholds else None,
                    gates=Gates(daynight=FakeDayNight(), trigger_word=FakeTriggerWord()) if gates else Gates())


class ServerThread:
    """service.server.create_server on a real port (settings.listen, e.g. 127.0.0.1:0), its
    asyncio loop in a thread of this process, around `pipeline` (service.server.Deps). With
    settings.metrics_listen, `metrics` (service.metrics.Metrics) serves /metrics there. `deps`: the
    server's dependencies as service.server.build_deps made them (the real models), else Deps(pipeline)."""

    def __init__(self, pipeline, deps=None):
        import asyncio
        import threading

        from service.server import Deps, create_server

        self.pipeline = pipeline
        self.deps = deps or Deps(pipeline)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        failed: list[BaseException] = []

        def run():
            asyncio.set_event_loop(self.loop)
            try:
                self.server, self.port = self.loop.run_until_complete(
                    create_server(pipeline.settings, self.deps))
            except BaseException as e:          # reported to the test below, not lost in the thread
                failed.append(e)
                return
            finally:
                ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(30), "server did not start"
        if failed:
            raise failed[0]
        self.address = f"127.0.0.1:{self.port}"
        self.metrics = self.deps.metrics

    def stop(self):
        import asyncio
        import gc

        async def stop_and_release():
            # the aio server's objects are freed here, on their loop while it runs, rather than by a
            # later garbage collection on another thread (a failed test's traceback holds them)
            await self.server.stop(None)
            self.server = None
            gc.collect()

        asyncio.run_coroutine_threadsafe(stop_and_release(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        if self.metrics:
            self.metrics.stop_http()


def rpc_error(call, *args, **kw):
    """The grpc.RpcError that a call must end in (10 s at most)."""
    import grpc
    import pytest

    with pytest.raises(grpc.RpcError) as e:
        call(*args, timeout=10, **kw)
    return e.value
