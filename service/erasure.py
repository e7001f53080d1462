"""Erasure: a DeleteSubject removes the subject from every index version of the data folder.

The data folder keeps older index versions for a rollback (service/index_layout.py): a subject
erased from the one being served only would come back with a `switch-index`. So the templates go
from each version under `D/indexes/`, and from the store being served (whose in-memory index is
updated with its rows). The audit keeps one line for the deletion, with a keyed pseudonym only
(service/audit.py): no past line names the subject, none needs rewriting.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from index.template_store import DB_NAME, StoreError, TemplateStore, remove_subject_at

from .errors import FailedPrecondition
from .index_layout import INDEXES


@dataclass(frozen=True)
class RemovedFrom:
    index_version: str      # the store's index_version (as GetStatus names it)
    index_name: str         # its folder under D/indexes/
    templates: int


def other_index_folders(data_dir: Path, served: Path) -> list[Path]:
    """Every index version under D/indexes/ but the one being served, by name."""
    root = Path(data_dir) / INDEXES
    if not root.is_dir():
        return []
    here = served.resolve()
    return [d for d in sorted(root.iterdir()) if (d / DB_NAME).is_file() and d.resolve() != here]


def erase_subject(store: TemplateStore, data_dir: Path, subject: str) -> list[RemovedFrom]:
    """Remove `subject` from the other index versions first, then from the one being served
    (so a failure half-way leaves it findable, and the request can be repeated) -> where
    templates were removed, the served version first."""
    if hasattr(store, "erase_subject"):          # a shared store (service/pg_store.py): every version at once
        return [RemovedFrom(version, version, n) for version, n in store.erase_subject(subject)]
    removed = []
    for folder in other_index_folders(data_dir, store.folder):
        try:
            version, n = remove_subject_at(folder, subject)
        except StoreError as e:
            raise FailedPrecondition(f"cannot erase the subject from index version {folder.name}: {e}; the subject "
                                     f"is still enrolled in the index being served: repeat the deletion once it is "
                                     f"repaired") from None
        if n:
            removed.append(RemovedFrom(version, folder.name, n))
    n = store.remove_subject(subject)
    if n:
        removed.insert(0, RemovedFrom(store.index_version, store.folder.name, n))
    return removed
