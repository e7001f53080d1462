"""Synthetic voices for the trigger-word TRAINING set: espeak-ng, cached as WAV files.

espeak-ng is a training-time tool only (Debian: `apt-get install espeak-ng`). Every utterance
is written once to the cache (default `.cache/facegate/tts/`, git-ignored) under a name that
holds the text, voice, speed and pitch, so a later run (or a machine without espeak-ng but with
the cache) reads the files instead of calling the program. Synthetic voices never go into
the test set: the test measures real voices only.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .trigger_word import load_wav

DEFAULT_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "facegate" / "tts"

# espeak-ng's own English voices (the mbrola ones need extra packages) and voice variants
# (`+name`: other formants, breathiness, pitch ranges; m* male, f* female, others mixed).
BASE_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
               "en-029", "en-us-nyc")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "klatt4", "croak", "whisper", "whisperf", "Andy", "Annie", "aunty", "Denis", "john",
            "linda", "max", "Michael", "paul", "rob", "steph", "travis", "grandma", "grandpa", "edward")


class TTSUnavailable(RuntimeError):
    """espeak-ng is not installed and the utterance is not in the cache."""


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str          # e.g. "en-us+f3"
    speed: int          # words per minute (espeak -s)
    pitch: int          # 0..99 (espeak -p)

    def file_name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.text.lower()).strip("-")
        return f"{slug}__{self.voice.replace('+', '_')}__s{self.speed}__p{self.pitch}.wav"


def all_voices() -> list[str]:
    return [b + (f"+{v}" if v else "") for b in BASE_VOICES for v in VARIANTS]


def synthesise(u: Utterance, cache: Path = DEFAULT_CACHE) -> np.ndarray:
    """-> mono float32 at 16 kHz, from the cache or (then cached) from espeak-ng."""
    path = Path(cache) / u.file_name()
    if not path.exists():
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise TTSUnavailable(f"{path.name} is not cached in {cache} and espeak-ng is not installed "
                                 "(apt-get install espeak-ng), or train with --tts-words 0")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        subprocess.run([exe, "-v", u.voice, "-s", str(u.speed), "-p", str(u.pitch), "-w", str(tmp), u.text],
                       check=True, capture_output=True, timeout=30)
        tmp.replace(path)
    return load_wav(path)
