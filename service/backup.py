"""Backup and restore of a data folder (CONTRACT.md, "Backup"), safe while a server serves it.

`backup(D, DEST)` copies, each in its own consistent way:
  - every SQLite file (the index versions' templates.sqlite) through SQLite's online backup API,
    one step, so each copy is one committed state even while enrollments go on (the WAL's content
    included; the copy is a single self-contained file);
  - the audit (`audit.jsonl`) under its lock, up to its last complete line, after the templates:
    it may hold lines of writes after the templates' snapshot, never lack the line of an
    acknowledged write in the snapshot but for the few in flight at that instant;
  - every other file (CURRENT, thresholds.json, sites.json, the audit key, ...) read whole: they
    are written by rename (write, fsync, rename), so a read sees one version of each.
No FAISS file is copied: the index is rebuilt from the SQLite rows when a store opens
(index/template_store.py). SQLite's -wal/-shm/-journal sidecars and *.tmp files are left out.
A manifest (`manifest.json`: each file's size and SHA-256, the index versions with their encoder
versions and counts, the audit's line count and last hash, the time) is written last, and the
backup is made under a temporary name and renamed into place: a DEST that exists is complete.

`restore(SRC, D)` checks every file against the manifest while copying it into a temporary folder
beside D, then renames that folder to D: D is either untouched or whole. A D that is not empty
is refused unless `force`, and then moved aside (`D.before-restore-TIME`), never deleted.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from .audit import AUDIT_FILE, KEY_FILE, FileAuditLines, fsync_dir, rfc3339, verify_chain
from .index_layout import CURRENT, INDEXES

MANIFEST = "manifest.json"
FORMAT = 1
SKIPPED_SUFFIXES = ("-wal", "-shm", "-journal", ".tmp")
SQLITE_MAGIC = b"SQLite format 3\x00"


class BackupError(Exception):
    pass


def _sha256(path: Path) -> tuple[int, str]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except FileNotFoundError:        # removed since the listing: skipped when copied
        return False


def _data_files(data: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every regular file to copy, in a stable order."""
    out = []
    for root, dirs, files in os.walk(data):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            if name.endswith(SKIPPED_SUFFIXES) or p.is_symlink() or not p.is_file():
                continue
            out.append((p.relative_to(data).as_posix(), p))
    return out


def _copy_sqlite(src: Path, dst: Path) -> dict:
    """One consistent snapshot of a live SQLite database -> what it holds (for a template store)."""
    try:
        s = sqlite3.connect(src, timeout=30)
        d = sqlite3.connect(dst)
        try:
            s.backup(d)                                  # one step: one committed state
            d.execute("PRAGMA journal_mode=DELETE")      # a single self-contained file
            check = d.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"{src}: the copy fails SQLite's integrity check ({check})")
            info = {}
            try:
                info["index_version"] = d.execute("SELECT value FROM meta WHERE key = 'index_version'").fetchone()[0]
                info["templates"] = d.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
                info["subjects"] = d.execute("SELECT COUNT(DISTINCT subject) FROM templates").fetchone()[0]
                info["encoder_versions"] = sorted(r[0] for r in d.execute(
                    "SELECT DISTINCT encoder_version FROM templates"))
            except (sqlite3.Error, TypeError):
                info = {}                                # not a template store: copied all the same
            return info
        finally:
            d.close()
            s.close()
    except sqlite3.Error as e:
        raise BackupError(f"cannot copy the database {src}: {e}") from None


def _copy_plain(src: Path, dst: Path) -> None:
    data = src.read_bytes()          # whole: these files are replaced by rename, never rewritten in place
    with open(dst, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def backup(data_dir: str | Path, dest: str | Path) -> dict:
    data, dest = Path(data_dir), Path(dest)
    if not data.is_dir():
        raise BackupError(f"--data-dir {data} is not a folder")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not an empty folder: choose a new place for the backup")
    if dest.resolve().is_relative_to(data.resolve()):
        raise BackupError(f"the backup {dest} cannot lie inside the data folder {data}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)           # templates are biometric data; the key unlocks the pseudonyms
    started = time.time()
    try:
        files = _data_files(data)
        dbs = {r for r, p in files if r != AUDIT_FILE and _is_sqlite(p)}
        plain = [(r, p) for r, p in files if r != AUDIT_FILE and r not in dbs]
        indexes, audit = [], None
        # the small files first (CURRENT names an index that exists), the templates, the audit last
        for rel, src in tqdm(plain + [(r, p) for r, p in files if r in dbs], desc="backup", unit="file",
                             file=sys.stderr):
            out = work / rel
            out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                if rel in dbs:
                    info = _copy_sqlite(src, out)
                    if info:
                        indexes.append({"path": rel, **info})
                else:
                    _copy_plain(src, out)
            except FileNotFoundError:
                continue                 # removed while the backup ran (a .tmp renamed, say)
        if (data / AUDIT_FILE).is_file():
            lines, last = FileAuditLines(data / AUDIT_FILE).copy_to(work / AUDIT_FILE)
            audit = {"lines": lines, "last_hash": last}
        if (work / KEY_FILE).exists():
            os.chmod(work / KEY_FILE, 0o600)
        entries = []
        for rel, _ in _data_files(work):
            size, digest = _sha256(work / rel)
            entries.append({"path": rel, "bytes": size, "sha256": digest})
        current = (work / CURRENT).read_text().strip() if (work / CURRENT).is_file() else None
        manifest = {
            "format": FORMAT, "created_at": rfc3339(started), "finished_at": rfc3339(time.time()),
            "source": str(data.resolve()), "current_index": current,
            "encoder_versions": sorted({v for i in indexes for v in i["encoder_versions"]}),
            "indexes": indexes, "audit": audit, "files": entries,
        }
        with open(work / MANIFEST, "w") as f:
            f.write(json.dumps(manifest, indent=1))
            f.flush()
            os.fsync(f.fileno())
        for folder in sorted({(work / e["path"]).parent for e in entries} | {work}):
            fsync_dir(folder)
        if dest.exists():
            dest.rmdir()
        os.rename(work, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    served = next((i for i in indexes if i["path"] == f"{INDEXES}/{current}/templates.sqlite"), {})
    return {"backup": str(dest), "created_at": manifest["created_at"], "files": len(entries),
            "bytes": sum(e["bytes"] for e in entries), "current_index": current,
            "subjects": served.get("subjects", 0), "templates": served.get("templates", 0),
            "index_versions": len(indexes), "encoder_versions": manifest["encoder_versions"],
            "audit_lines": audit["lines"] if audit else 0}


# ---------------------------------------------------------------------------------------- restore
def read_manifest(src: Path) -> dict:
    path = src / MANIFEST
    if not path.is_file():
        raise BackupError(f"{src} is not a facegate backup: it has no {MANIFEST}")
    try:
        m = json.loads(path.read_text())
        files = m["files"]
        if m.get("format") != FORMAT:
            raise BackupError(f"{path}: backup format {m.get('format')}, this facegate reads {FORMAT}")
        if not isinstance(files, list) or not all({"path", "bytes", "sha256"} <= set(f) for f in files):
            raise ValueError("its file list is malformed")
    except (ValueError, KeyError, TypeError) as e:
        raise BackupError(f"{path} is damaged ({e}): this backup cannot be checked, so it is not restored") from None
    for f in files:
        p = PurePosixPath(f["path"])
        if p.is_absolute() or ".." in p.parts or not p.parts or f["path"] == MANIFEST:
            raise BackupError(f"{path} names a file outside the backup ({f['path']!r}): refused")
    return m


def _copy_checked(src: Path, dst: Path, entry: dict) -> None:
    """Copy while hashing; a file that is missing or differs from the manifest stops the restore."""
    if not src.is_file():
        raise BackupError(f"{src} is missing from the backup (the manifest lists it): refused, nothing restored")
    h, n = hashlib.sha256(), 0
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while chunk := fi.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
            fo.write(chunk)
        fo.flush()
        os.fsync(fo.fileno())
    if n != entry["bytes"] or h.hexdigest() != entry["sha256"]:
        what = (f"{n} bytes, the manifest says {entry['bytes']}" if n != entry["bytes"]
                else f"its SHA-256 {h.hexdigest()[:16]}... differs from the manifest's {entry['sha256'][:16]}...")
        raise BackupError(f"{src} is damaged ({what}): refused, nothing restored")


def restore(src: str | Path, data_dir: str | Path, force: bool = False) -> dict:
    src, data = Path(src), Path(data_dir)
    if not src.is_dir():
        raise BackupError(f"{src} is not a folder made by `facegate backup`")
    m = read_manifest(src)
    if data.exists() and (not data.is_dir() or any(data.iterdir())) and not force:
        raise BackupError(f"{data} is not empty: restore into a new folder, or give --force to replace it (it is "
                          f"moved aside, not deleted)")
    if data.resolve().is_relative_to(src.resolve()):
        raise BackupError(f"the data folder {data} cannot lie inside the backup {src}")
    data.parent.mkdir(parents=True, exist_ok=True)
    work = data.parent / f".{data.name}.restoring-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    previous = None
    try:
        for entry in tqdm(m["files"], desc="restore", unit="file", file=sys.stderr):
            out = work / entry["path"]
            out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _copy_checked(src / entry["path"], out, entry)
            fsync_dir(out.parent)
        if (work / KEY_FILE).exists():
            os.chmod(work / KEY_FILE, 0o600)
        current = m.get("current_index")
        if current and not (work / INDEXES / current).is_dir():
            raise BackupError(f"{src}: its CURRENT names index {current!r}, which the backup does not hold")
        check = verify_chain(FileAuditLines(work / AUDIT_FILE).lines()) if (work / AUDIT_FILE).exists() else None
        if data.exists():
            if data.is_dir() and not any(data.iterdir()):
                data.rmdir()
            else:
                previous = data.parent / f"{data.name}.before-restore-{time.strftime('%Y%m%dT%H%M%S')}"
                os.rename(data, previous)
        os.rename(work, data)
        fsync_dir(data.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {"restored": str(data), "from": str(src), "created_at": m.get("created_at"), "files": len(m["files"]),
            "bytes": sum(f["bytes"] for f in m["files"]), "current_index": m.get("current_index"),
            "encoder_versions": m.get("encoder_versions", []),
            "audit_lines": check.lines if check else 0, "audit_intact": check.intact if check else None,
            "audit_problem": None if check is None or check.intact else check.detail,
            "previous": str(previous) if previous else None}
