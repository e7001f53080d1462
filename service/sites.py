"""Site policies: per door, whether the trigger word is required, what Verify does with a photo
of several faces of similar size, and the smallest face it cares about. One JSON file in the data
folder (sites.json), written atomically. A site without an entry of its own follows the default
site's (CONTRACT.md); when that has none either, it requires nothing and refuses such photos."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .thresholds import ThresholdStore, read_json, write_json_atomic

FILE = "sites.json"
REFUSE, CENTRAL_FACE = "refuse", "central_face"
SEVERAL_FACES = (REFUSE, CENTRAL_FACE)
DEFAULT_MIN_FACE_PX = 40          # encoder.align.AlignConfig.min_face_px: the FACE_TOO_SMALL line before sites had one
MIN_FACE_PX_RANGE = (20, 1000)    # 20: the detector's own smallest face (AlignConfig.min_detect_px)


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
    # The smallest face (its box's short side, in the decoded photo's pixels) the door cares about:
    # a smaller one is FACE_TOO_SMALL (or not found: NO_FACE), and Verify/Identify search the photo
    # shrunk so that such a face is the detector's smallest, which makes detection cheaper the
    # larger it is. 40 keeps ID photos (~100x100) and LFW's 250x250 photos working; a kiosk whose
    # users stand close (faces of 80 px or more in a 640x480 frame) sets 80.
    min_face_px: int = DEFAULT_MIN_FACE_PX

    def __post_init__(self):
        if self.several_faces not in SEVERAL_FACES:
            raise SiteError(f"several_faces must be one of {', '.join(SEVERAL_FACES)}, got {self.several_faces!r}")
        if (isinstance(self.min_face_px, bool) or not isinstance(self.min_face_px, int)
                or not MIN_FACE_PX_RANGE[0] <= self.min_face_px <= MIN_FACE_PX_RANGE[1]):
            raise SiteError(f"min_face_px must be a whole number of pixels in {MIN_FACE_PX_RANGE[0]}.."
                            f"{MIN_FACE_PX_RANGE[1]}, got {self.min_face_px!r}")


def sites_of_their_own(sites: "SiteStore", thresholds: ThresholdStore) -> list[dict]:
    """Which sites have a policy or thresholds of their own in a store (every other site follows
    the default site's): [{"site", "policy": bool, "thresholds": [keys]}], by name."""
    policies, thresholds = sites.own(), thresholds.own()
    return [{"site": s, "policy": s in policies, "thresholds": thresholds.get(s, [])}
            for s in sorted({*policies, *thresholds})]


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

    def own(self) -> list[str]:
        """The sites that have a policy of their own."""
        return sorted(self._read())

    def in_force(self, site: str, default_site: str) -> tuple[SitePolicy, str | None]:
        """The policy a site's doors follow and whose it is: the site's own -> (policy, site), else the
        default site's -> (policy, default_site), else the defaults -> (SitePolicy(), None)."""
        data = self._read()
        source = site if site in data else default_site if default_site in data else None
        return (self.get(source) if source else SitePolicy()), source

    def put(self, site: str, **changes) -> SitePolicy:
        data = self._read()
        policy = SitePolicy(**{**data.get(site, {}), **changes})
        data[site] = asdict(policy)
        write_json_atomic(self.path, data)
        return policy
