"""The fakes of fakes.py do what their docstring says, through the real decoders: a photo's squares
are its faces, their colour the identity, the background's grey the light; a loud beep is the word."""
from __future__ import annotations

import numpy as np
import pytest
from fakes import (NIGHT_BELOW, SQRT2, TOO_DARK_LIGHT, FakeDayNight, FakeEmbedder, FakeTriggerWord, distance,
                   face, photo, wav)

from encoder.images import decode_image
from facegate.reasons import Reason
from gates.trigger_word import AudioError


def test_the_palettes_distances_are_exact():
    assert (distance("red", "orange"), distance("red", "purple"), distance("blue", "cyan")) == (0.5, 1.0, 0.5)
    assert distance("red", "blue") == pytest.approx(SQRT2) and distance("orange", "purple") > 1.0
    assert distance("red", "red") == 0.0


@pytest.mark.parametrize("faces, reason, count", [
    ((), Reason.NO_FACE, 0),
    ((face("red"),), None, 1),
    ((face("red"), face("blue", at=(0.15, 0.5))), Reason.MULTIPLE_FACES, 2),
    ((face("red"), face("blue", side=50, at=(0.15, 0.5))), None, 2),            # a small face behind: not a rival
    ((face("red", side=30),), Reason.FACE_TOO_SMALL, 1),
])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_the_squares_are_the_faces(faces, reason, count, fmt):
    a = FakeEmbedder().align(decode_image(photo(*faces, fmt=fmt)))
    assert (a.reason, a.faces) == (reason, count)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_the_colour_of_the_central_face_is_the_embedding(fmt):
    e = FakeEmbedder()
    a = e.align(decode_image(photo(face("blue", at=(0.2, 0.5)), face("purple"), fmt=fmt)))
    v = e.embed_crops(a.crop[None])
    assert v.shape == (1, 128) and v.dtype == np.float32
    assert np.linalg.norm(v[0]) == 1.0 and np.flatnonzero(v[0]).tolist() == [0, 3, 4, 5]     # purple


@pytest.mark.parametrize("light, label, too_dark", [("day", "day", False), ("night", "night", False),
                                                    ("dark", "night", True)])
def test_the_background_is_the_light(light, label, too_dark):
    r = FakeDayNight().predict(decode_image(photo(face("red"), light=light)))
    assert (r.label, r.too_dark) == (label, too_dark)
    assert (r.light < NIGHT_BELOW) == (label == "night") and (r.light < TOO_DARK_LIGHT) == too_dark


def test_a_loud_beep_is_the_word_and_junk_is_an_audio_error():
    gate = FakeTriggerWord()
    assert gate.predict(wav()) == []
    assert [e.t for e in gate.predict(wav(word_at=1.0))] == [1.0]
    assert [e.t for e in gate.predict(wav(word_at=0.5, rate=44_100))] == [0.5]      # resampled by load_wav
    with pytest.raises(AudioError):
        gate.predict(b"RIFF junk")
