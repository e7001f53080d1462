"""The gated stages through gRPC, on a real server in this process (127.0.0.1:0) so that the
face models can be watched: forward hooks on MTCNN's networks and on the encoder count every
call. Trigger word first, then day/night, then the face models (ARCHITECTURE.md)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

from service.client import Client, RpcFailed
from service.settings import Settings
from service.sites import SiteStore
from service.thresholds import ThresholdStore
from tests.service.fakes import ServerThread

pytestmark = pytest.mark.slow     # the real models in a real server (fakes: test_grpc_decisions.py)

SITE = "pool"
NIGHT_VERIFY, NIGHT_IDENTIFY = 0.777, 0.555      # distinctive, to see which threshold was applied


def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def wav_bytes(x: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    wavfile.write(buf, rate, (np.clip(x, -1, 1) * 32767).astype(np.int16))
    return buf.getvalue()


class InProcessServer(ServerThread):
    """The server on the real models (service.server.build_deps), in a thread of this process."""

    def __init__(self, settings: Settings):
        from service.server import build_deps

        deps = build_deps(settings)
        super().__init__(deps.pipeline, deps)
        self.client = Client(self.address, timeout=60)


class FaceModelCalls:
    """Counts forward calls of MTCNN's three networks and runs of the face encoder (through the
    Embedder, whichever way it computes the network: eagerly or as a frozen graph)."""

    def __init__(self, pipeline):
        self.n = {"mtcnn": 0, "encoder": 0}
        mtcnn = pipeline.embedder.aligner.mtcnn
        for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet):
            net.register_forward_pre_hook(lambda *_: self._count("mtcnn"))
        embed_crops = pipeline.embedder.embed_crops

        def counted(crops):
            self._count("encoder")
            return embed_crops(crops)
        pipeline.embedder.embed_crops = counted

    def _count(self, what):
        self.n[what] += 1

    def reset(self):
        self.n = {"mtcnn": 0, "encoder": 0}


@pytest.fixture(scope="module")
def served(tmp_path_factory, lfw):
    data = tmp_path_factory.mktemp("data")
    # the face models in the server's threads, where their calls can be counted (worker processes
    # run the same pipeline.Eyes.look on their own copies)
    settings = Settings(data_dir=data, listen="127.0.0.1:0", workers=1, worker_processes=False)
    server = InProcessServer(settings)
    calls = FaceModelCalls(server.deps.pipeline)
    version = server.deps.pipeline.version
    SiteStore(data).put(SITE, trigger_word=True)
    store = ThresholdStore(data)
    store.put(SITE, "night", NIGHT_VERIFY, version, kind="verify")
    store.put(SITE, "night", NIGHT_IDENTIFY, version, kind="identify")
    store.put(SITE, "night", 0.04, version, kind="too_dark")
    img = lfw / "images" / "Tom_Cruise"
    r = server.client.enroll([("Tom_Cruise", img / f"Tom_Cruise_{n:04d}.jpg") for n in (1, 2)])
    assert r["accepted"] == 2, r
    yield server, calls
    server.stop()


@pytest.fixture(scope="module")
def audio(data_dir, served):
    """10 s clips of the speaker and background the detector never heard in training: one with
    "activate" at 3 s, one with background alone."""
    from gates.trigger_word import RATE, load_wav

    gate = served[0].deps.pipeline.gates.trigger_word
    held = gate.meta["holdout"]
    tw = data_dir / "trigger_word"
    bg = load_wav(tw / "backgrounds" / held["background"])[: 10 * RATE]
    bg = np.pad(bg, (0, max(0, 10 * RATE - len(bg))))
    word = load_wav(tw / "activates" / held.get("test_activates", held["activates"])[0])
    said = bg.copy()
    at = 3 * RATE
    said[at:at + len(word)] += word
    # a word-like sound the detector is unsure of: the word cut short or spoken far away, whichever
    # first lands between the gate's "say it again" level and its threshold
    unsure = None
    for frac in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3):
        for gain in (1.0, 0.5, 0.25, 0.12, 0.06, 0.03):
            clip = bg.copy()
            part = word[: int(frac * len(word))] * gain
            clip[at:at + len(part)] += part
            if unsure is None and gate.listen(wav_bytes(clip, RATE)).verdict == "say_again":
                unsure = wav_bytes(clip, RATE)
    return {"said": wav_bytes(said, RATE), "silent": wav_bytes(bg, RATE), "word_end_s": 3 + len(word) / RATE,
            "unsure": unsure}


@pytest.fixture(scope="module")
def probe(lfw):
    return (lfw / "images" / "Tom_Cruise" / "Tom_Cruise_0003.jpg").read_bytes()


def names(r):
    return [s["name"] for s in r["stages"]]


def test_word_required_but_no_audio_runs_no_face_model(served, probe):
    server, calls = served
    calls.reset()
    r = server.client.verify("Tom_Cruise", probe, site=SITE)
    assert (r["decision"], r["reason"]) == ("REJECT", "TRIGGER_NOT_HEARD")
    assert names(r) == ["decode", "trigger_word"] and r["stages"][1]["outcome"] == "NO_AUDIO"
    assert calls.n == {"mtcnn": 0, "encoder": 0}


def test_word_not_said_runs_no_face_model(served, probe, audio):
    server, calls = served
    calls.reset()
    r = server.client.verify("Tom_Cruise", probe, site=SITE, audio=audio["silent"])
    assert (r["decision"], r["reason"]) == ("REJECT", "TRIGGER_NOT_HEARD")
    assert names(r) == ["decode", "trigger_word"] and r["stages"][1]["outcome"] == "NOT_HEARD"
    assert calls.n == {"mtcnn": 0, "encoder": 0}
    r = server.client.identify(probe, site=SITE, audio=audio["silent"])
    assert (r["subject"], r["reason"]) == (None, "TRIGGER_NOT_HEARD")
    assert calls.n == {"mtcnn": 0, "encoder": 0}


def test_no_word_and_a_word_like_sound_get_different_details_and_no_face_model(served, probe, audio):
    server, calls = served
    calls.reset()
    r = server.client.verify("Tom_Cruise", probe, site=SITE, audio=audio["silent"])
    assert (r["reason"], r["detail"][:13]) == ("TRIGGER_NOT_HEARD", "no word heard"), r["detail"]
    assert audio["unsure"] is not None, "no cut-short or distant 'activate' fell between say-again and threshold"
    r = server.client.verify("Tom_Cruise", probe, site=SITE, audio=audio["unsure"])
    assert (r["decision"], r["reason"]) == ("REJECT", "TRIGGER_NOT_HEARD")
    assert r["detail"].startswith("say it again") and "peak p" in r["detail"], r["detail"]
    assert names(r) == ["decode", "trigger_word"] and 0 < r["stages"][1]["score"] < 1
    r = server.client.identify(probe, site=SITE, audio=audio["unsure"])
    assert r["reason"] == "TRIGGER_NOT_HEARD" and r["detail"].startswith("say it again")
    assert calls.n == {"mtcnn": 0, "encoder": 0}


def test_word_said_opens_the_cascade(served, probe, audio):
    server, calls = served
    calls.reset()
    r = server.client.verify("Tom_Cruise", probe, site=SITE, audio=audio["said"])
    assert names(r) == ["decode", "trigger_word", "daynight", "detect", "encode", "match"]
    assert r["stages"][1]["outcome"] == "HEARD" and r["stages"][1]["score"] >= 0.5
    assert r["light_profile"] == "day" and r["reason"] in ("MATCH", "NO_MATCH")
    assert calls.n["mtcnn"] > 0 and calls.n["encoder"] > 0


def test_corrupt_audio_is_invalid_argument(served, probe):
    server, _ = served
    with pytest.raises(RpcFailed) as e:
        server.client.verify("Tom_Cruise", probe, site=SITE, audio=b"RIFF\x00\x00not a wave file at all")
    assert e.value.code == "INVALID_ARGUMENT" and "audio" in e.value.message
    assert server.client.status()["subjects"] == 1          # still serving


def test_dark_photo_gets_the_night_profile_and_its_threshold(served, probe, audio):
    from encoder.images import decode_image
    from gates.daynight import darken, light_level

    server, calls = served
    dark = darken(decode_image(probe), np.random.default_rng(3), strength=0.45)
    assert light_level(dark) > 0.04
    r = server.client.verify("Tom_Cruise", jpeg(dark), site=SITE, audio=audio["said"])
    assert r["light_profile"] == "night" and r["threshold"] == pytest.approx(NIGHT_VERIFY, abs=1e-4)
    assert names(r)[:3] == ["decode", "trigger_word", "daynight"] and r["stages"][2]["outcome"] == "night"
    r = server.client.identify(jpeg(dark), site=SITE, audio=audio["said"])
    assert r["light_profile"] == "night" and r["threshold"] == pytest.approx(NIGHT_IDENTIFY, abs=1e-4)
    # the same photo by day, at a site without the word: the day threshold (the checkpoint's)
    r = server.client.verify("Tom_Cruise", probe)
    assert r["light_profile"] == "day" and names(r)[1] == "daynight"
    assert r["threshold"] == pytest.approx(server.deps.pipeline.embedder.meta["threshold"], abs=1e-4)


def test_too_dark_photo_is_rejected_before_the_face_models(served, probe, audio):
    from encoder.images import decode_image
    from gates.daynight import light_level

    server, calls = served
    black = (decode_image(probe).astype(np.float32) * 0.08).astype(np.uint8)
    assert light_level(black) < 0.04
    calls.reset()
    r = server.client.verify("Tom_Cruise", jpeg(black), site=SITE, audio=audio["said"])
    assert (r["decision"], r["reason"]) == ("REJECT", "TOO_DARK")
    assert r["stages"][-1] == {**r["stages"][-1], "name": "daynight", "outcome": "TOO_DARK"}
    assert calls.n == {"mtcnn": 0, "encoder": 0}


def test_too_dark_id_photo_is_not_enrolled(served, lfw, tmp_path):
    from encoder.images import decode_image
    from gates.daynight import light_level

    server, _ = served
    photo = decode_image((lfw / "images" / "Tom_Cruise" / "Tom_Cruise_0004.jpg").read_bytes())
    black = (photo.astype(np.float32) * 0.05).astype(np.uint8)
    level = server.deps.pipeline.too_dark_light(server.deps.pipeline.settings.default_site)
    assert light_level(black) < level
    path = tmp_path / "dark.jpg"
    path.write_bytes(jpeg(black))
    r = server.client.enroll([("Tom_Cruise", path)])
    assert r["accepted"] == 0 and [x["reason"] for x in r["rejected"]] == ["TOO_DARK"]
    assert server.client.status()["templates"] == 2
