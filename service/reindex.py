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
            gates: Gates | None = None, embedder: Embedder | None = None, store_url: str | None = None) -> dict:
    """Into the data folder's indexes/NAME, or (store_url) the PostgreSQL store's index version
    NAME (a column of its templates), then the switch; replicas open the new one at their restart."""
    embedder = embedder or Embedder.from_checkpoint(checkpoint)
    photos = list_photo_source(photo_dir)
    if not photos:
        raise FileNotFoundError(f"no photos under {photo_dir}/<subject_id>/")
    name = name or embedder.version
    if store_url:
        return _reindex_shared(photos, store_url, name, switch, gates, embedder)
    data_dir = Path(data_dir)
    folder = new_index_dir(data_dir, name)
    store = TemplateStore(folder, dim=embedder.embedding_dim)
    try:
        summary = _enroll_all(photos, name, embedder, store, Pipeline(
            Settings(data_dir=data_dir), embedder, store, thresholds=None, audit=open_audit_log(data_dir),
            gates=gates), folder)
    finally:
        store.close()
    if switch:
        switch_index(data_dir, name)
    summary["switched"] = switch
    summary["thresholds_to_recalibrate"] = ThresholdStore(data_dir).stale(embedder.version)
    return summary


def _reindex_shared(photos, store_url: str, name: str, switch: bool, gates, embedder) -> dict:
    from .pg_store import PgSiteStore, PgTemplateStore
    from .stores import open_stores_at

    stores = open_stores_at(store=store_url, dim=embedder.embedding_dim, follow=False)
    try:
        store = PgTemplateStore(stores.templates.db, dim=embedder.embedding_dim, index_version=name, follow=False)
        summary = _enroll_all(photos, name, embedder, store, Pipeline(
            Settings(store=store_url), embedder, store, thresholds=None, audit=stores.audit, gates=gates,
            sites=PgSiteStore(stores.templates.db)), f"index version {name!r} of {stores.location}")
        if switch:
            stores.templates.db.switch_index(name)
        summary["switched"] = switch
        summary["thresholds_to_recalibrate"] = stores.thresholds.stale(embedder.version)
    finally:
        stores.close()
    return summary


def _enroll_all(photos, name, embedder, store, pipeline, where) -> dict:
    summary = {"index": name, "encoder_version": embedder.version, "subjects": len({s for s, _ in photos}),
               "accepted": 0, "already_enrolled": 0, "rejected": [], "duplicate_warnings": []}
    other = store.encoder_versions() - {embedder.version}
    if other:
        raise FailedPrecondition(f"{where} already holds templates of encoder {sorted(other)}; "
                                 f"choose another --name")
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
    return summary
