"""The upgrade path to a new encoder: re-enroll the photo source into a new index version,
then switch to it atomically (service/index_layout.py). Resumable: run it again and the
photos already done are skipped (same subject, same bytes)."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from tqdm import tqdm

from encoder.embedder import Embedder
from encoder.images import ImageError, decode_image
from index.template_store import TemplateStore

from .errors import FailedPrecondition
from .index_layout import new_index_dir, switch_index
from .thresholds import FILE as THRESHOLDS_FILE


def list_photo_source(root: str | Path) -> list[tuple[str, Path]]:
    from encoder.face_folders import IMAGE_SUFFIXES

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"photo source {root} is not a folder (expected DIR/<subject_id>/<photos>)")
    return [(d.name, p) for d in sorted(root.iterdir()) if d.is_dir()
            for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]


def reindex(photo_dir, data_dir, checkpoint=None, name: str | None = None, switch: bool = True) -> dict:
    embedder = Embedder.from_checkpoint(checkpoint)
    photos = list_photo_source(photo_dir)
    if not photos:
        raise FileNotFoundError(f"no photos under {photo_dir}/<subject_id>/")
    name = name or embedder.version
    folder = new_index_dir(data_dir, name)
    store = TemplateStore(folder, dim=embedder.model.config.embedding_dim)
    other = store.encoder_versions() - {embedder.version}
    if other:
        raise FailedPrecondition(f"index {folder} already holds templates of encoder {sorted(other)}; choose another --name")
    summary = {"index": name, "encoder_version": embedder.version, "subjects": len({s for s, _ in photos}),
               "accepted": 0, "already_enrolled": 0, "rejected": []}
    try:
        for subject, path in tqdm(photos, desc="reindex", unit="photo", file=sys.stderr):
            data = path.read_bytes()
            try:
                e = embedder.embed(decode_image(data))
            except ImageError as err:
                summary["rejected"].append({"path": str(path), "reason": "INVALID_ARGUMENT", "detail": str(err)})
                continue
            if e.vector is None:
                summary["rejected"].append({"path": str(path), "reason": e.alignment.reason.value})
                continue
            r = store.add(subject, e.vector, hashlib.sha256(data).hexdigest(), embedder.version)
            summary["already_enrolled" if r.already_enrolled else "accepted"] += 1
        summary["templates"] = store.status()["templates"]
    finally:
        store.close()
    if switch:
        switch_index(data_dir, name)
    summary["switched"] = switch
    thresholds = Path(data_dir) / THRESHOLDS_FILE
    stale = []
    if thresholds.exists():
        for site, profiles in json.loads(thresholds.read_text()).items():
            stale += [f"{site}/{p}" for p, entry in profiles.items() if entry["encoder_version"] != embedder.version]
    summary["thresholds_to_recalibrate"] = stale
    return summary
