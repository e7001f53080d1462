"""Listing training photos: folder-per-person data sets, optionally limited to a people list,
and folders of unlabelled faces."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp"}
UNLABELLED = ""


@dataclass(frozen=True)
class Photo:
    path: str
    identity: str   # "<data set>/<person>", or UNLABELLED


def read_people_list(path: str | Path) -> list[str]:
    """LFW's peopleDevTrain.txt format (a count line, then `name<TAB>n_photos`), or one name per line."""
    names = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if not parts or (len(parts) == 1 and parts[0].isdigit()):
            continue
        names.append(parts[0])
    if not names:
        raise ValueError(f"{path}: no people listed")
    return names


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def list_person_folders(root: str | Path, people: list[str] | None = None) -> list[Photo]:
    """root/<person>/<photos>; with `people`, only those folders (each must exist)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    tag = root.name if root.name not in ("images", "") else root.parent.name
    if people is None:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
    else:
        folders = [root / name for name in people]
        missing = [str(f) for f in folders if not f.is_dir()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} listed people have no folder under {root}, e.g. {missing[0]}")
    return [Photo(str(p), f"{tag}/{f.name}") for f in folders for p in _images(f)]


def list_unlabelled(root: str | Path) -> list[Photo]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    return [Photo(str(p), UNLABELLED) for p in _images(root)]
