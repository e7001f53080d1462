"""Where the templates live in a data folder, and the atomic switch to a new index version.

  DATA/CURRENT              the name of the index in use (one line), replaced atomically
  DATA/indexes/NAME/        one index version: templates.sqlite (see index/template_store.py)
  DATA/thresholds.json      per site and light profile, with the encoder version
  DATA/sites.json           per-site policies
  DATA/audit.jsonl          one hash-chained line per decision, enrollment, deletion (service/audit.py)
  DATA/audit.key            the key of the audit's subject pseudonyms (0600; keep it with backups)

A new encoder cannot use the old templates (their distances are not comparable), so an
upgrade re-enrolls every photo of the photo source with the new encoder into a new index
version (`facegate reindex`), and then points CURRENT at it in one rename. The old version
stays on disk until removed, so a rollback is one switch back.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

CURRENT = "CURRENT"
INDEXES = "indexes"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def current_index_dir(data_dir: str | Path, create: bool = True) -> Path:
    data = Path(data_dir)
    pointer = data / CURRENT
    if pointer.exists():
        name = pointer.read_text().strip()
        if not _NAME.match(name):
            raise ValueError(f"{pointer} names no index ({name!r})")
        folder = data / INDEXES / name
        if not folder.is_dir():
            raise FileNotFoundError(f"{pointer} names index {name!r}, but {folder} does not exist")
        return folder
    if not create:
        raise FileNotFoundError(f"{data} has no {CURRENT} index pointer")
    return new_index_dir(data, "initial", switch=True)


def new_index_dir(data_dir: str | Path, name: str, switch: bool = False) -> Path:
    if not _NAME.match(name):
        raise ValueError(f"index name {name!r} must be 1-128 of A-Z a-z 0-9 . _ -")
    folder = Path(data_dir) / INDEXES / name
    folder.mkdir(parents=True, exist_ok=True)
    if switch:
        switch_index(data_dir, name)
    return folder


def switch_index(data_dir: str | Path, name: str) -> None:
    """Point CURRENT at `name`, atomically (write, fsync, rename, fsync the folder)."""
    data = Path(data_dir)
    if not (data / INDEXES / name).is_dir():
        raise FileNotFoundError(f"no index {name!r} under {data / INDEXES}")
    tmp = data / (CURRENT + ".tmp")
    with open(tmp, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, data / CURRENT)
    fd = os.open(data, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
