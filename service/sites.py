"""Site policies: per door, whether the trigger word is required and what Verify does with a photo
of several faces of similar size. One JSON file in the data folder (sites.json), written
atomically; a site without an entry requires nothing and refuses such photos."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .thresholds import read_json, write_json_atomic

FILE = "sites.json"
REFUSE, CENTRAL_FACE = "refuse", "central_face"
SEVERAL_FACES = (REFUSE, CENTRAL_FACE)


class SiteError(ValueError):
    pass


@dataclass(frozen=True)
class SitePolicy:
    trigger_word: bool = False      # the door wakes only when "activate" is heard in the request's audio
    # Verify, when the photo shows several faces of similar size (MULTIPLE_FACES):
    #   refuse        REJECT MULTIPLE_FACES: the kiosk asks for a retake alone (the tailgating rule);
    #   central_face  compare the face the photo is about (the largest, most central: the one in front
    #                 of the kiosk) with the card's owner, as in a photo of one face, at the same
    #                 threshold; if it is not the owner, MULTIPLE_FACES as above. One face is compared,
    #                 so an impostor's claim has the one chance it has on a photo of one face.
    several_faces: str = REFUSE

    def __post_init__(self):
        if self.several_faces not in SEVERAL_FACES:
            raise SiteError(f"several_faces must be one of {', '.join(SEVERAL_FACES)}, got {self.several_faces!r}")


class SiteStore:
    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / FILE

    def _read(self) -> dict:
        return read_json(self.path, SiteError)

    def get(self, site: str) -> SitePolicy:
        entry = self._read().get(site, {})
        try:
            return SitePolicy(**entry)
        except TypeError as e:
            raise SiteError(f"{self.path}: site {site!r} has an unknown setting: {e}") from None

    def put(self, site: str, **changes) -> SitePolicy:
        data = self._read()
        policy = SitePolicy(**{**data.get(site, {}), **changes})
        data[site] = asdict(policy)
        write_json_atomic(self.path, data)
        return policy
