"""The thresholds store: data, not constants. One JSON file in the data folder, per site and
light profile, each with the encoder version it was calibrated for. Written atomically."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

FILE = "thresholds.json"


class ThresholdError(ValueError):
    pass


class ThresholdStore:
    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / FILE

    def _read(self) -> dict:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text())
        except json.JSONDecodeError as e:
            raise ThresholdError(f"{self.path} is not valid JSON: {e}") from None

    @staticmethod
    def _key(profile: str, kind: str) -> str:
        if kind not in ("verify", "identify"):
            raise ValueError(f"threshold kind must be verify or identify, got {kind!r}")
        return profile if kind == "verify" else f"identify/{profile}"

    def put(self, site: str, profile: str, threshold: float, encoder_version: str, kind: str = "verify",
            **info) -> dict:
        profile = self._key(profile, kind)
        data = self._read()
        entry = {"threshold": float(threshold), "encoder_version": encoder_version,
                 "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info}
        data.setdefault(site, {})[profile] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(data, indent=1, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return entry

    def get(self, site: str, profile: str, encoder_version: str, kind: str = "verify") -> float | None:
        """The site's threshold for this profile (Verify's, or Identify's stricter one), or None if
        it has none. A threshold calibrated for another encoder version is refused: distances of
        two encoders are not comparable."""
        entry = self._read().get(site, {}).get(self._key(profile, kind))
        if entry is None:
            return None
        if entry["encoder_version"] != encoder_version:
            raise ThresholdError(
                f"{self.path}: the threshold of site {site!r} ({profile}) was calibrated for encoder "
                f"{entry['encoder_version']}, not {encoder_version}; run `facegate calibrate ... "
                f"--site {site} --profile {profile} --kind {kind} --data-dir {self.path.parent}` again")
        return float(entry["threshold"])
