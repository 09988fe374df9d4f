"""Source files as ingest may touch them: regular files only, safe stored names, bounded excerpts.

A file handed to ingest is opened only when it is a regular file (a symbolic link only when it
stays inside the folder it was given in); a FIFO, device or socket is refused without being
opened, so it can neither hang nor leak another file's content. The check is made again on the
open descriptor, and everything is read from it (`open_source`): a file swapped for a link or a
FIFO between the check and the open is refused, never read. Names are stored shortened and
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

from ctloop.errors import InputError, StoreUnavailable

MAX_STORED_NAME = 120  # characters of a stored name (file systems allow 255 bytes)
MAX_REASON_CHARS = 400  # a reason's message, path included
SAMPLE_BYTES = 64 * 1024  # what the quarantine keeps of a file that is not data
FULL = {errno.ENOSPC, errno.EDQUOT}
FULL_TEXT = ("No space left on device", "Disk quota exceeded", "database or disk is full")


class SourceRefused(InputError):
    """A file that must not be read: a FIFO, device, socket or folder, or a symbolic link out
    of its folder (found before it was opened, or on its descriptor after)."""


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


_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def open_source(path: str | Path, folder: str | Path | None = None) -> BinaryIO:
    """Open a file handed to ctloop for reading, through one descriptor that is itself checked.

    First `refusal` (nothing opened); then the path is opened without following a final
    symbolic link and without blocking, so a FIFO swapped in cannot hang (a link, which the
    open refuses, is opened at its target when that stays inside `folder`, again without
    following a link); then the descriptor is checked: a regular file, inside `folder`
    (default: the folder holding `path`). Read everything from the returned file: a file
    swapped for a link, a FIFO or another file after the check is refused, never read.

    Raises:
        SourceRefused: a FIFO, device, socket, or a link out of its folder, seen before the
            open (`... (refused, not opened)`) or on the descriptor (`... (refused, not read)`).
        InputError: the file is missing, a folder, or cannot be opened (names the file).
    """
    path = Path(path)
    base = Path(folder if folder is not None else path.absolute().parent).resolve()
    refused = refusal(path, folder)
    if refused is not None:
        raise SourceRefused(refused)
    opened: str | Path = path
    try:
        try:
            fd = os.open(opened, _READ_FLAGS)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            # a symbolic link: one `refusal` let through, or one swapped in since
            opened = os.path.realpath(path)
            if not Path(opened).is_relative_to(base):
                raise SourceRefused(
                    f"{path}: a symbolic link to a file outside {base} (refused, not read)"
                ) from None
            fd = os.open(opened, _READ_FLAGS)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SourceRefused(f"{path}: a chain of symbolic links (refused, not read)") from None
        raise InputError(f"{path}: cannot be opened ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise InputError(f"{path}: is a folder, expected a CSV or Parquet file")
        if not stat.S_ISREG(mode):
            kind = _special_kind(mode) or "not a file"
            raise SourceRefused(f"{path}: {kind}, not a regular file (refused, not read)")
        real = _descriptor_path(fd, opened)
        if not real.is_relative_to(base):
            raise SourceRefused(f"{path}: opens a file outside {base} (refused, not read)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _descriptor_path(fd: int, opened: str | Path) -> Path:
    """Where an open descriptor's file really is (Linux: /proc/self/fd), else where its path
    leads now."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)"))
    except OSError:
        return Path(os.path.realpath(opened))


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
