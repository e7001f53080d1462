"""facegate's one vocabulary of reasons: why a photo was let in or turned away.

The members are the proto's `facegate.v1.Reason` values by name (REASON_UNSPECIFIED aside),
kept here as a plain enum so that encoder, gates and the pipeline speak it without protobuf;
tests/service/test_reasons.py fails the moment the two disagree. The kiosk acts on them
(CONTRACT.md): MATCH lets in; NO_FACE, MULTIPLE_FACES, FACE_TOO_SMALL, LOW_QUALITY and
TOO_DARK ask for a retake; TRIGGER_NOT_HEARD asks for the word; NO_MATCH falls back to the card.
"""
from __future__ import annotations

import enum


class Reason(str, enum.Enum):
    MATCH = "MATCH"
    NO_FACE = "NO_FACE"
    MULTIPLE_FACES = "MULTIPLE_FACES"
    FACE_TOO_SMALL = "FACE_TOO_SMALL"
    LOW_QUALITY = "LOW_QUALITY"
    TOO_DARK = "TOO_DARK"
    TRIGGER_NOT_HEARD = "TRIGGER_NOT_HEARD"
    NO_MATCH = "NO_MATCH"

    def __str__(self) -> str:
        return self.value
