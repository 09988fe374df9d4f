"""Source files as ingest may touch them: regular files only, safe stored names, bounded excerpts.

A file handed to ingest is opened only when it is a regular file (a symbolic link only when it
stays inside the folder it was given in); a FIFO, device or socket is refused without being
opened, so it can neither hang nor leak another file's content. Names are stored shortened and
cleaned (the original kept in the record), reasons quote at most a short excerpt, and a full
disk is an infrastructure error (`DiskFull`), never a reason to quarantine a batch.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ctloop.errors import StoreUnavailable

MAX_STORED_NAME = 120  # characters of a stored name (file systems allow 255 bytes)
MAX_REASON_CHARS = 400  # a reason's message, path included
SAMPLE_BYTES = 64 * 1024  # what the quarantine keeps of a file that is not data
FULL = {errno.ENOSPC, errno.EDQUOT}
FULL_TEXT = ("No space left on device", "Disk quota exceeded", "database or disk is full")


class DiskFull(StoreUnavailable):
    """A write failed because the file system is full (ENOSPC) or over quota (EDQUOT)."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error (or one it was raised from) is ENOSPC or EDQUOT: an OSError with that
    errno, or any error saying so (SQLite's `database or disk is full`, as sqlite3, SQLAlchemy
    or MLflow raise it)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError) and exc.errno in FULL:
            return True
        if any(text in str(exc) for text in FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


@contextmanager
def disk_full_raises(
    store: str, where: str | Path, then: str = "nothing was stored, free some space and run again"
) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT inside the block into one clear `DiskFull` naming the store; any
    other error propagates unchanged."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise DiskFull(
                f"{store} at {where}: disk full (no space left on the device or over quota); {then}"
            ) from None
        raise


def refusal(path: str | Path, folder: str | Path | None = None) -> str | None:
    """Why a path must not be opened for reading, or None when it may be.

    Refused: a FIFO, device or socket, and a symbolic link whose target lies outside `folder`
    (default: the folder holding the link) or does not exist. Nothing is opened to decide.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except OSError:
        return None  # missing or unreadable: the reader's own error names it
    if stat.S_ISLNK(st.st_mode):
        base = Path(folder if folder is not None else path.absolute().parent).resolve()
        target = path.resolve()
        if not target.is_relative_to(base):
            return f"{path}: a symbolic link to a file outside {base} (refused, not read)"
        try:
            st = os.stat(path)
        except OSError:
            return f"{path}: a symbolic link to nothing (refused)"
    kind = _special_kind(st.st_mode)
    if kind:
        return f"{path}: {kind}, not a regular file (refused, not opened)"
    return None


def _special_kind(mode: int) -> str | None:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


def open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for reading without following a final symlink or blocking on a FIFO.

    Raises:
        OSError: a symlink (ELOOP), or not a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def safe_name(name: str, limit: int = MAX_STORED_NAME) -> str:
    """A name safe to store: no control characters or slashes, no leading dash or dot, short.

    A name that had to change keeps its start and extension and gets a hash of the original
    (`<start>~<hash8><suffix>`), so two long names never collide; a clean short name is kept.
    """
    cleaned = "".join(
        "_" if unicodedata.category(c).startswith("C") or c in "/\\" else c for c in name
    )
    cleaned = cleaned.lstrip("-.") or "file"
    if cleaned == name and len(name.encode()) <= limit:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    suffix = Path(cleaned).suffix
    if len(suffix) > 16:
        suffix = ""
    stem = cleaned[: len(cleaned) - len(suffix)] if suffix else cleaned
    room = limit - len(suffix.encode()) - 9
    while len(stem.encode()) > room:
        stem = stem[:-1]
    return f"{stem}~{digest}{suffix}"


def bounded(message: str, limit: int = MAX_REASON_CHARS) -> str:
    """A message cut to `limit` characters (a reason never quotes a long run of content)."""
    message = message.replace("\r", " ").replace("\n", " ")
    if len(message) <= limit:
        return message
    return message[: limit - 20] + f"... ({len(message) - limit + 20} chars cut)"


def bounded_reasons(reasons: list[dict]) -> list[dict]:
    """The reasons with every message bounded (see `bounded`)."""
    return [{**r, "message": bounded(str(r["message"]))} if "message" in r else r for r in reasons]
