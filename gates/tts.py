"""Synthetic voices for the trigger-word TRAINING set: espeak-ng and festival, cached as WAV files.

Both are training-time tools only (Debian: `apt-get install espeak-ng festival festvox-kallpc16k
festvox-kdlpc16k festvox-us-slt-hts`; `python -m gates.tts --install` runs that). A festival
voice is named "festival:NAME" (e.g. "festival:kal_diphone"); its speed is a duration stretch
(100 = the voice's own pace) and its pitch is left to augmentation. Every utterance
is written once to the cache (default `.cache/facegate/tts/`, git-ignored) under a name that
holds the text, voice, speed and pitch, so a later run (or a machine without espeak-ng but with
the cache) reads the files instead of calling the program. Synthetic voices never go into
the test set: the test measures real voices only.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import uuid
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


# festival's US English voices from Debian (festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts)
FESTIVAL_VOICES = ("festival:kal_diphone", "festival:ked_diphone", "festival:cmu_us_slt_arctic_hts")
DEBIAN_PACKAGES = ("espeak-ng", "festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts")
# espeak-ng voices that no training run uses: the word-free test audio speaks with them (bench/)
TEST_BASE_VOICES = ("en-029",)
# espeak-ng's voices of other languages reading the English words: English with a Spanish, French,
# German, Italian, Portuguese, Hindi, Swahili, Vietnamese, Polish or Dutch accent (the "accents" recipe)
ACCENT_BASE_VOICES = ("es", "fr-fr", "de", "it", "pt", "hi", "sw", "vi", "pl", "nl")


class TTSUnavailable(RuntimeError):
    """The synthesiser is not installed and the utterance is not in the cache."""


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str          # e.g. "en-us+f3"
    speed: int          # words per minute (espeak -s)
    pitch: int          # 0..99 (espeak -p)

    def file_name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.text.lower()).strip("-")
        return f"{slug}__{self.voice.replace('+', '_').replace(':', '-')}__s{self.speed}__p{self.pitch}.wav"


def all_voices(bases: tuple[str, ...] = BASE_VOICES) -> list[str]:
    return [b + (f"+{v}" if v else "") for b in bases for v in VARIANTS]


def training_voices(accents: bool = False) -> list[str]:
    """The espeak-ng voices training may use: all but the test voices' family (and, with `accents`,
    the other languages' voices of ACCENT_BASE_VOICES after them)."""
    english = all_voices(tuple(b for b in BASE_VOICES if b not in TEST_BASE_VOICES))
    return english + (all_voices(ACCENT_BASE_VOICES) if accents else [])


def test_voices() -> list[str]:
    return all_voices(TEST_BASE_VOICES)


def install(run=subprocess.run) -> None:
    """apt-get install the synthesisers (Debian/Ubuntu, as root); a no-op when all are there."""
    if shutil.which("espeak-ng") and shutil.which("text2wave") and all(
            Path(d).is_dir() for d in ("/usr/share/festival/voices/english/kal_diphone",
                                       "/usr/share/festival/voices/english/ked_diphone",
                                       "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts")):
        return
    run(["apt-get", "install", "-y", "-q", *DEBIAN_PACKAGES], check=True)


def _festival(exe: str, u: Utterance, out: Path) -> None:
    name = u.voice.split(":", 1)[1]
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"not a festival voice name: {name!r}")
    stretch = max(0.5, min(2.0, 100.0 / max(u.speed, 1)))
    subprocess.run([exe, "-eval", f"(voice_{name})", "-eval", f"(Parameter.set 'Duration_Stretch {stretch:.3f})",
                    "-o", str(out)], input=u.text, text=True, check=True, capture_output=True, timeout=60)


def synthesise(u: Utterance, cache: Path = DEFAULT_CACHE) -> np.ndarray:
    """-> mono float32 at 16 kHz, from the cache or (then cached) from espeak-ng."""
    path = Path(cache) / u.file_name()
    if not path.exists():
        festival = u.voice.startswith("festival:")
        tool = "text2wave" if festival else "espeak-ng"
        exe = shutil.which(tool)
        if exe is None:
            raise TTSUnavailable(f"{path.name} is not cached in {cache} and {tool} is not installed "
                                 "(python -m gates.tts --install), or train with --tts-words 0")
        path.parent.mkdir(parents=True, exist_ok=True)
        # its own temporary file: processes or threads filling one cache at once never share one
        tmp = path.with_name(f"{path.stem}.{uuid.uuid4().hex}.tmp")
        if festival:
            _festival(exe, u, tmp)
        else:
            subprocess.run([exe, "-v", u.voice, "-s", str(u.speed), "-p", str(u.pitch), "-w", str(tmp), u.text],
                           check=True, capture_output=True, timeout=30)
        tmp.replace(path)
    return load_wav(path)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="the trigger word's training-time synthesisers")
    ap.add_argument("--install", action="store_true", help="apt-get install " + " ".join(DEBIAN_PACKAGES))
    if ap.parse_args().install:
        install()
    print({"espeak-ng": shutil.which("espeak-ng"), "text2wave": shutil.which("text2wave")})
