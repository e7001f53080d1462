"""The hash-chained audit (CONTRACT.md, "Audit"): one JSON line per decision, enrollment and deletion.

Each line is one JSON object: `ts` (RFC 3339, UTC), `event` (the RPC's proto name: Verify,
Identify, Enroll, DeleteSubject), `caller` (service.caller: the client certificate's name, or
"local"), the event's fields, `prev` (the hash of the line before; GENESIS for the first) and
`hash` (SHA-256 over the canonical JSON of the line without `hash`: keys sorted, no spaces).
Editing a line breaks its own hash; removing or reordering lines breaks the next line's `prev`.

Subject ids never appear in clear: every subject field (SUBJECT_FIELDS) holds a keyed pseudonym,
HMAC-SHA256 under a key kept outside the audit (`D/audit.key`), from the first line on. So an
erasure (DeleteSubject) never needs to rewrite a past line, and an operator who holds the key can
still find one subject's lines (`facegate audit pseudonym`). No photo, embedding or audio is ever
written: `record` refuses bytes and arrays.

Storage is an `AuditLines` backend: `FileAuditLines` (D/audit.jsonl) here, PostgreSQL elsewhere.

What the chain does not catch on its own: removing the newest lines (the tail), or rewriting a
line together with every line after it. Against both, keep the `last_hash` that
`facegate audit verify --json` prints somewhere else (a ticket, another host) and check later
with `--expect HASH`: the chain must still hold that line.
"""
from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import numpy as np

from .caller import current_caller
from .errors import FailedPrecondition

log = logging.getLogger("facegate.audit")

GENESIS = "0" * 64
AUDIT_FILE = "audit.jsonl"
KEY_FILE = "audit.key"
TORN_FILE = "audit.jsonl.torn"
RESERVED = ("ts", "event", "caller", "prev", "hash")
# the fields that name subjects: a string, or a list of strings; written as pseudonyms only
SUBJECT_FIELDS = ("subject", "duplicates")


class AuditError(FailedPrecondition):
    """The audit cannot be read or written (a broken last line, an unreadable key, no file)."""


class AuditLines(Protocol):
    def append(self, build: Callable[[str], str]) -> None:
        """Under the backend's exclusive lock (across processes and replicas): read the hash of
        the last line (GENESIS = "0" * 64 when empty), call build(prev_hash) -> one complete JSON
        line (no newline), and store it durably before returning."""

    def lines(self) -> Iterator[str]:
        """Every line, oldest first."""


# ------------------------------------------------------------------------------------- hashing
def canonical(entry: dict) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def line_hash(entry: dict) -> str:
    """SHA-256 (hex) of the canonical JSON of a line without its `hash`."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def pseudonym(key: bytes, subject: str) -> str:
    """The keyed pseudonym of a subject id: HMAC-SHA256 (hex, 128 bits kept)."""
    return hmac.new(key, subject.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------------------- the key
def load_or_create_key(path: str | Path) -> bytes:
    """The pseudonym key (32 random bytes, hex in the file, mode 0600), made on first use.
    Two processes starting at once agree on one key (the file is linked into place, never
    overwritten)."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secrets.token_bytes(32).hex() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)          # fails if another process made it first: theirs is kept
            fsync_dir(path.parent)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    try:
        text = path.read_text().strip()
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as e:
        raise AuditError(f"cannot read the audit key {path}: {e.strerror}") from None
    if mode & 0o077:
        log.warning("the audit key %s is readable by others (mode %o): chmod 600 it", path, mode)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise AuditError(f"{path} is not an audit key (64 hex digits expected): restore it from a backup; a new "
                         f"key would give every subject new pseudonyms")
    return key


def fsync_dir(folder: Path) -> None:
    """Make a rename or link in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ the file backend
class FileAuditLines:
    """`D/audit.jsonl`, one line per entry, appended under an exclusive `flock` on the file
    (across threads and processes: every append opens its own descriptor), then fsync'd.

    A torn last line (a crash in the middle of a write: the file does not end in a newline) was
    never acknowledged: its RPC had not answered. `audit verify` reports it (malformed, at its line
    number) until the next append, which moves the fragment to `audit.jsonl.torn` (kept, with its
    offset and the time, for inspection), cuts the file back to the last complete line, logs a
    warning, and chains to that line. A complete last line that is not a valid entry is never
    chained to: appending fails (FAILED_PRECONDITION) until an operator has looked at it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @contextmanager
    def _locked(self, exclusive: bool):
        if exclusive:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        else:
            new, fd = False, os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            if new:
                fsync_dir(self.path.parent)
            yield fd
        finally:
            os.close(fd)        # releases the lock

    def append(self, build: Callable[[str], str]) -> None:
        with self._locked(exclusive=True) as fd:
            end = self._repair_tail(fd)
            prev = self._last_hash(fd, end)
            line = build(prev)
            if "\n" in line or "\r" in line:
                raise ValueError("an audit line must not hold a newline")
            data = (line + "\n").encode("utf-8")
            os.lseek(fd, end, os.SEEK_SET)
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)

    def _repair_tail(self, fd: int) -> int:
        """The offset after the last complete line, moving a torn fragment aside first."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return size
        start = self._line_start(fd, size)
        fragment = os.pread(fd, size - start, start)
        with open(self.path.with_name(TORN_FILE), "ab") as f:
            f.write(json.dumps({"moved_at": rfc3339(time.time()), "offset": start,
                                "fragment": fragment.decode("utf-8", "replace")}).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.ftruncate(fd, start)
        os.fsync(fd)
        log.warning("%s ended in a torn line of %d bytes at offset %d (a write cut short by a crash, never "
                    "acknowledged): moved to %s", self.path, len(fragment), start, TORN_FILE)
        return start

    @staticmethod
    def _line_start(fd: int, end: int) -> int:
        """The offset where the line ending at `end` (exclusive, its newline excluded) begins."""
        pos = end
        while pos > 0:
            step = min(4096, pos)
            chunk = os.pread(fd, step, pos - step)
            i = chunk.rfind(b"\n")
            if i >= 0:
                return pos - step + i + 1
            pos -= step
        return 0

    def _last_hash(self, fd: int, end: int) -> str:
        if end == 0:
            return GENESIS
        start = self._line_start(fd, end - 1)
        text = os.pread(fd, end - 1 - start, start)
        try:
            h = json.loads(text)["hash"]
            if not (isinstance(h, str) and len(h) == 64):
                raise ValueError(h)
            return h
        except (ValueError, KeyError, TypeError):
            raise AuditError(f"the last line of {self.path} is not an audit entry: nothing is chained to it. "
                             f"Run `facegate audit verify --data-dir {self.path.parent}` and look at it") from None

    def lines(self) -> Iterator[str]:
        """Every line, oldest first: what was complete when the read began (the shared lock waits
        for an append in progress; it is not held while reading, so appends go on). A torn last
        line is yielded as it is (verify reports it)."""
        try:
            with self._locked(exclusive=False) as fd:
                size = os.fstat(fd).st_size
            f = open(self.path, "rb")
        except OSError as e:
            raise AuditError(f"cannot read the audit {self.path}: {e.strerror}") from None
        with f:
            read = 0
            for raw in f:
                if read >= size:
                    break
                raw = raw[:size - read]
                read += len(raw)
                yield raw.rstrip(b"\n").decode("utf-8", "replace")

    def copy_to(self, dest: str | Path) -> tuple[int, str | None]:
        """A consistent copy (complete lines only, as of one instant, taken under the shared lock,
        so no append is half-way) -> (lines, last hash)."""
        with self._locked(exclusive=False) as fd:
            size = os.fstat(fd).st_size
            end = size if size == 0 or os.pread(fd, 1, size - 1) == b"\n" else self._line_start(fd, size)
            n, last, pos = 0, GENESIS, 0
            with open(dest, "wb") as out:
                while pos < end:
                    chunk = os.pread(fd, min(1 << 20, end - pos), pos)
                    out.write(chunk)
                    n += chunk.count(b"\n")
                    pos += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if end:
                try:
                    last = self._last_hash(fd, end)
                except AuditError:
                    last = None     # copied as it is; `audit verify` on the copy names the line
        return n, last


# ------------------------------------------------------------------------------------- the log
def _plain(value, where: str):
    """A value as it may stand in the audit: JSON scalars, lists, dicts; never bytes or arrays."""
    if isinstance(value, (bytes, bytearray, memoryview, np.ndarray)):
        raise TypeError(f"audit field {where}: no photo, embedding or audio is ever written to the audit")
    if isinstance(value, float) or isinstance(value, np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if value is None or isinstance(value, (str, int)):
        return value
    return str(value)


class AuditLog:
    """record(event, **fields): one chained line. Returns the entry as written (with ts, caller,
    prev and hash): a deletion's receipt quotes its hash."""

    def __init__(self, lines: AuditLines, key: bytes):
        self.lines = lines
        self.key = key

    def pseudonym(self, subject: str) -> str:
        return pseudonym(self.key, subject)

    def _fields(self, fields: dict) -> dict:
        out = {}
        for k, v in fields.items():
            if k in RESERVED:
                raise ValueError(f"audit field {k!r} is reserved")
            if k in SUBJECT_FIELDS and v is not None:
                v = self.pseudonym(v) if isinstance(v, str) else [self.pseudonym(s) for s in v]
            out[k] = _plain(v, k)
        return out

    def record(self, event: str, **fields) -> dict:
        body = self._fields(fields)
        caller = current_caller.get().name
        written: dict = {}

        def build(prev: str) -> str:
            entry = {"ts": rfc3339(time.time()), "event": event, "caller": caller, **body, "prev": prev}
            entry["hash"] = line_hash(entry)
            written.clear()
            written.update(entry)
            return json.dumps(entry, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

        self.lines.append(build)
        return written


def open_audit_lines(data_dir: str | Path | None = None, store: str | None = None) -> AuditLines:
    """The audit's storage: the data folder's `audit.jsonl`, or a store URL."""
    if store:
        from .pg_store import PgAuditLines, is_pg_url

        if not is_pg_url(store):
            raise AuditError("--store must be a postgresql://USER@HOST:PORT/DBNAME URL")
        return PgAuditLines.from_url(store)      # its own small pool: close() it when done
    if data_dir is None:
        raise ValueError("give the data folder (--data-dir) or a store (--store)")
    return FileAuditLines(Path(data_dir) / AUDIT_FILE)


def audit_key(data_dir: str | Path) -> bytes:
    return load_or_create_key(Path(data_dir) / KEY_FILE)


def open_audit_log(data_dir: str | Path | None, store: str | None = None) -> AuditLog:
    """The audit of the data folder (its key in `audit.key`), or of a PostgreSQL store (its key in its
    own table)."""
    lines = open_audit_lines(data_dir, store)
    return AuditLog(lines, lines.key() if store else audit_key(data_dir))


# ---------------------------------------------------------------------------------- verification
@dataclass
class ChainCheck:
    intact: bool
    lines: int
    first_bad_line: int | None = None   # 1-based
    problem: str | None = None          # edited, removed, reordered, duplicated, malformed, truncated
    detail: str = ""
    last_hash: str = GENESIS

    def to_json(self) -> dict:
        return asdict(self)


def verify_chain(lines: Iterable[str], expect: str | None = None) -> ChainCheck:
    """Check every line's hash and every link. The first bad line is named (1-based) with what
    is wrong with it:
      malformed   not a JSON object with `prev` and `hash` (a torn or cut line, say)
      edited      its content does not give its hash
      duplicated  the same line stands earlier too
      reordered   its `prev` names a line that stands elsewhere in the file
      removed     its `prev` names no line in the file: the line(s) before it were removed (or
                  replaced wholesale)
      truncated   (with `expect`) no line has the expected hash: the newest lines were removed
    """
    hashes: list[str] = []
    prevs: list[str] = []
    first_error: ChainCheck | None = None
    n = 0
    for n, text in enumerate(lines, 1):
        if first_error is not None:
            continue            # count the lines; the first problem is the answer
        try:
            entry = json.loads(text)
            if not isinstance(entry, dict):
                raise ValueError("not a JSON object")
            h, prev = entry["hash"], entry["prev"]
            if not (isinstance(h, str) and isinstance(prev, str)):
                raise ValueError("hash and prev must be text")
            ok = line_hash(entry) == h
        except (ValueError, KeyError) as e:
            first_error = ChainCheck(False, 0, n, "malformed", f"line {n} is not an audit entry ({e})")
            continue
        if not ok:
            first_error = ChainCheck(False, 0, n, "edited", f"line {n}'s content does not give its hash: it was "
                                                            f"edited")
            continue
        hashes.append(h)
        prevs.append(prev)
    if first_error is None:
        position = {h: i for i, h in reversed(list(enumerate(hashes, 1)))}   # first occurrence
        for i, (h, prev) in enumerate(zip(hashes, prevs), 1):
            expected = hashes[i - 2] if i > 1 else GENESIS
            if position[h] < i:
                first_error = ChainCheck(False, 0, i, "duplicated", f"line {i} repeats line {position[h]}")
            elif prev == expected:
                continue
            elif prev in position:
                first_error = ChainCheck(False, 0, i, "reordered", f"line {i} follows line {position[prev]} in "
                                                                   f"the chain, but stands elsewhere")
            elif prev == GENESIS:
                first_error = ChainCheck(False, 0, i, "reordered", f"line {i} is the chain's first line, but "
                                                                   f"stands at {i}")
            else:
                first_error = ChainCheck(False, 0, i, "removed", f"the line before line {i} is missing (removed, or "
                                                                 f"replaced by another)")
            break
    last = hashes[-1] if hashes else GENESIS
    if first_error is None and expect and expect not in hashes and expect != GENESIS:
        first_error = ChainCheck(False, 0, n + 1, "truncated", f"no line has the expected hash {expect}: the "
                                                               f"newest lines were removed (or never written here)")
    if first_error is not None:
        first_error.lines, first_error.last_hash = n, last
        return first_error
    return ChainCheck(True, n, last_hash=last, detail=f"{n} lines, chain intact")
