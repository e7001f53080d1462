"""Site policies: per door, whether the trigger word is required. One JSON file in the data
folder (sites.json), written atomically; a site without an entry requires nothing."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .thresholds import read_json, write_json_atomic

FILE = "sites.json"


@dataclass(frozen=True)
class SitePolicy:
    trigger_word: bool = False      # the door wakes only when "activate" is heard in the request's audio


class SiteError(ValueError):
    pass


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
