"""The thresholds store: data, not constants. One JSON file in the data folder, per site and
light profile, each with the encoder version it was calibrated for. Written atomically."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

FILE = "thresholds.json"
KINDS = ("verify", "identify", "too_dark")


class ThresholdError(ValueError):
    pass


def write_json_atomic(path: Path, data: dict) -> None:
    """Write, fsync, rename: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=1, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path, error: type[Exception]) -> dict:
    """The file's JSON object, {} if there is no file yet; `error` names a file that is not JSON."""
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON: {e}") from None


class ThresholdStore:
    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / FILE

    def _read(self) -> dict:
        return read_json(self.path, ThresholdError)

    @staticmethod
    def _key(profile: str, kind: str) -> str:
        """verify: a distance, per profile; identify: Identify's stricter distance, per profile;
        too_dark: a light level (mean luminance 0..1) below which a photo is answered TOO_DARK,
        one per site (it depends on the encoder, so it carries the version like the others)."""
        if kind not in KINDS:
            raise ValueError(f"threshold kind must be one of {', '.join(KINDS)}, got {kind!r}")
        return {"verify": profile, "identify": f"identify/{profile}", "too_dark": "too_dark"}[kind]

    def put(self, site: str, profile: str, threshold: float, encoder_version: str, kind: str = "verify",
            **info) -> dict:
        profile = self._key(profile, kind)
        data = self._read()
        entry = {"threshold": float(threshold), "encoder_version": encoder_version,
                 "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info}
        data.setdefault(site, {})[profile] = entry
        write_json_atomic(self.path, data)
        return entry

    def entry(self, site: str, profile: str, kind: str = "verify") -> dict | None:
        """The site's stored entry for this profile and kind as written (threshold, encoder
        version, what it was calibrated on), whatever its encoder; None if it has none."""
        return self._read().get(site, {}).get(self._key(profile, kind))

    def own(self) -> dict[str, list[str]]:
        """The sites with thresholds of their own -> their entries' keys ("day", "identify/day", ...)."""
        return {site: sorted(entries) for site, entries in sorted(self._read().items()) if entries}

    def stale(self, encoder_version: str) -> list[str]:
        """The entries ("site/profile") calibrated for another encoder than this one."""
        return [f"{site}/{key}" for site, entries in sorted(self._read().items())
                for key, entry in sorted(entries.items()) if entry["encoder_version"] != encoder_version]

    def get(self, site: str, profile: str, encoder_version: str, kind: str = "verify") -> float | None:
        """The site's threshold for this profile (Verify's, or Identify's stricter one), or None if
        it has none. A threshold calibrated for another encoder version is refused: distances of
        two encoders are not comparable."""
        entry = self.entry(site, profile, kind)
        if entry is None:
            return None
        if entry["encoder_version"] != encoder_version:
            raise ThresholdError(
                f"{self.path}: the threshold of site {site!r} ({profile}) was calibrated for encoder "
                f"{entry['encoder_version']}, not {encoder_version}; run `facegate calibrate ... "
                f"--site {site} --profile {profile} --kind {kind} {self.store_option()}` again")
        return float(entry["threshold"])

    def store_option(self) -> str:
        """The CLI option that names this store (in messages)."""
        return f"--data-dir {self.path.parent}"
