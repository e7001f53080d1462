"""One factory for the stores a server (or a CLI command) works on, of either kind:

- the embedded default (Settings.store None): the data folder's files: templates in
  `D/indexes/<CURRENT>/templates.sqlite`, `D/thresholds.json`, `D/sites.json`, `D/audit.jsonl`;
- `postgresql://...` (service/pg_store.py): the same, in one database shared by several
  `serve` replicas, each replica's FAISS index following the template rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from index.template_store import StoreError, TemplateStore

from .errors import FailedPrecondition
from .index_layout import current_index_dir
from .audit import AuditLog, open_audit_log
from .pipeline import check_encoder_versions as check_folder_encoder_versions
from .sites import SiteStore
from .thresholds import ThresholdStore


@dataclass
class Stores:
    templates: object          # TemplateStore | PgTemplateStore
    thresholds: object         # ThresholdStore | PgThresholdStore
    sites: object              # SiteStore | PgSiteStore
    audit: object              # what Pipeline.audit.record(...) writes to
    location: str              # the data folder, or the database's URL without its password
    audit_lines: object = None  # the PostgreSQL store's AuditLines (None for the data folder's file)
    _close: list = field(default_factory=list)

    def close(self) -> None:
        for c in reversed(self._close):
            c()
        self._close.clear()


def open_stores(settings, dim: int = 128, follow: bool = True, create: bool = True) -> Stores:
    """The stores named by `settings.store` (None: the files of `settings.data_dir`).
    `follow`: a PostgreSQL template index follows other replicas' writes (a server); a one-shot
    command does not need to. `create`: make the data folder's first index if it has none."""
    return open_stores_at(settings.data_dir, settings.store, dim, follow, create, workers=settings.workers,
                          index_kind=settings.index_kind)


def open_stores_at(data_dir=None, store: str | None = None, dim: int = 128, follow: bool = False,
                   create: bool = True, workers: int = 1, index_kind: str = "auto") -> Stores:
    """open_stores for a CLI command: its --data-dir, or its --store URL."""
    if store is None:
        if data_dir is None:
            raise StoreError("name the store: --data-dir DIR (the data folder's files) or --store postgresql://...")
        data = Path(data_dir)
        if create:
            data.mkdir(parents=True, exist_ok=True)
        templates = TemplateStore(current_index_dir(data, create=create), dim=dim, index_kind=index_kind)
        return Stores(templates, ThresholdStore(data), SiteStore(data), open_audit_log(data), str(data),
                      _close=[templates.close])
    from .pg_store import PgAuditLines, PgDatabase, PgSiteStore, PgTemplateStore, PgThresholdStore, is_pg_url

    if not is_pg_url(store):
        raise StoreError(f"--store must be a postgresql://USER@HOST:PORT/DBNAME URL (or omitted: the data "
                         f"folder's files), got a {store.split('//', 1)[0]!r} URL")
    # the face-model workers, the listener's catch-up, and a spare
    db = PgDatabase(store, max_size=workers + 3)
    try:
        templates = PgTemplateStore(db, dim=dim, follow=follow, index_kind=index_kind)
    except BaseException:
        db.close()
        raise
    lines = PgAuditLines(db)
    return Stores(templates, PgThresholdStore(db), PgSiteStore(db), AuditLog(lines, lines.key()), db.location,
                  audit_lines=lines, _close=[db.close, templates.close])


def check_encoder_versions(store, version: str) -> None:
    """serve refuses templates of another encoder (CONTRACT.md), in either kind of store."""
    if isinstance(store, TemplateStore):
        return check_folder_encoder_versions(store, version)
    other = store.encoder_versions() - {version}
    if other:
        raise FailedPrecondition(
            f"the store {store.location} (index version {store.index_version}) holds templates of encoder "
            f"{', '.join(sorted(other))}, but the loaded encoder is {version}: distances of two encoders cannot "
            f"be compared. Re-enroll the photo source with this encoder into a new index version and switch to "
            f"it: `facegate reindex PHOTO_DIR --store URL --checkpoint CHECKPOINT`; or serve this store with the "
            f"checkpoint that made it (--checkpoint).")
