"""The upgrade path to a new encoder: re-enroll the photo source into a new index version,
then switch to it atomically (service/index_layout.py). Each photo is enrolled by the same
function as an Enroll stream's (Pipeline.enroll: TOO_DARK, the face rules, duplicate warnings),
with the new encoder's own calibrated values: the data folder's thresholds belong to the old
encoder until they are calibrated again (listed in the summary). Resumable: run it again and
the photos already done are answered ALREADY_ENROLLED (same subject, same bytes)."""
from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from encoder.embedder import Embedder
from index.template_store import TemplateStore

from .errors import FacegateError, FailedPrecondition
from .index_layout import new_index_dir, switch_index
from .audit import open_audit_log
from .pipeline import Gates, Pipeline
from .settings import Settings
from .thresholds import ThresholdStore


def list_photo_source(root: str | Path) -> list[tuple[str, Path]]:
    """DIR/<subject_id>/<photos> -> (subject_id, photo) pairs, in a stable order."""
    from encoder.face_folders import IMAGE_SUFFIXES

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"photo source {root} is not a folder (expected DIR/<subject_id>/<photos>)")
    return [(d.name, p) for d in sorted(root.iterdir()) if d.is_dir()
            for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]


def reindex(photo_dir, data_dir, checkpoint=None, name: str | None = None, switch: bool = True,
            gates: Gates | None = None, embedder: Embedder | None = None) -> dict:
    embedder = embedder or Embedder.from_checkpoint(checkpoint)
    photos = list_photo_source(photo_dir)
    if not photos:
        raise FileNotFoundError(f"no photos under {photo_dir}/<subject_id>/")
    data_dir = Path(data_dir)
    name = name or embedder.version
    folder = new_index_dir(data_dir, name)
    store = TemplateStore(folder, dim=embedder.embedding_dim)
    summary = {"index": name, "encoder_version": embedder.version, "subjects": len({s for s, _ in photos}),
               "accepted": 0, "already_enrolled": 0, "rejected": [], "duplicate_warnings": []}
    try:
        other = store.encoder_versions() - {embedder.version}
        if other:
            raise FailedPrecondition(f"index {folder} already holds templates of encoder {sorted(other)}; "
                                     f"choose another --name")
        pipeline = Pipeline(Settings(data_dir=data_dir), embedder, store, thresholds=None,
                            audit=open_audit_log(data_dir), gates=gates)
        pipeline.threshold(pipeline.settings.default_site, "day", "verify")   # duplicates are judged by it
        for subject, path in tqdm(photos, desc="reindex", unit="photo", file=sys.stderr):
            try:
                r = pipeline.enroll(subject, path.read_bytes())
            except FacegateError as e:
                summary["rejected"].append({"path": str(path), "reason": e.code, "detail": e.message})
                continue
            if r.status == "REJECTED":
                summary["rejected"].append({"path": str(path), "reason": r.reason.value, "detail": r.detail})
                continue
            summary["already_enrolled" if r.status == "ALREADY_ENROLLED" else "accepted"] += 1
            summary["duplicate_warnings"] += [{"path": str(path), "subject": subject, "other_subject": s,
                                               "distance": round(d, 4)} for s, d in r.duplicates]
        summary["templates"] = store.status()["templates"]
    finally:
        store.close()
    if switch:
        switch_index(data_dir, name)
    summary["switched"] = switch
    summary["thresholds_to_recalibrate"] = ThresholdStore(data_dir).stale(embedder.version)
    return summary
