"""Lake storage: the lake's files in a local folder or under any fsspec URL, behind one layer.

Where the lake lives is `paths.lake`: empty means `<home>/lake`; a plain path or a `file://`
URL is a local folder; any other fsspec URL (`memory://lake`, `s3://bucket/prefix`,
`gcs://bucket/prefix`, `abfs://container/prefix`...) is opened with `fsspec.core.url_to_fs`.

Storage options (credentials, `endpoint_url`, `client_kwargs`...) come from
`paths.lake_options`, passed as keyword arguments to the filesystem, or, when that is empty,
from fsspec's own configuration: `FSSPEC_<PROTOCOL>='{"key": ...}'` and
`FSSPEC_<PROTOCOL>_<OPTION>=value` environment variables and the JSON/INI files in
`FSSPEC_CONFIG_DIR` (`~/.config/fsspec`), then the backend's own (for s3fs: `AWS_*` variables
and `~/.aws`; gcsfs: `GOOGLE_APPLICATION_CREDENTIALS`; adlfs: `AZURE_STORAGE_*`). Prefer the
environment for secrets: `ctloop.yaml` is copied into run records.

How each write is made safe:

- local folder (the fast path, unchanged): a temporary file in the same folder, fsync,
  `os.replace`, folder fsync; exclusive creation (manifests, schema versions, the salt) by a
  hard link, which fails when the name exists.
- other filesystems: a snapshot streams to a temporary key and is moved (`fs.mv`; a copy and a
  delete on object stores) to its content-addressed key, so a twin writer of the same content
  writes the same bytes under the same key; the manifest, the commit mark, is written last in one
  `pipe_file` call (one PUT on an object store: readers see all of it or nothing). Exclusive
  creation uses `pipe_file(mode="create")` where the backend makes it atomic (`memory`, and S3
  through a conditional `If-None-Match` PUT); on every other backend it is check-then-write:
  two writers racing on one new name may both write, and the last one wins (for a manifest:
  same snapshot, a different `arrived_at`/`source`; for a first schema: see
  `schema.save_schema_if_absent`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

# Protocols whose pipe_file(mode="create") is an atomic exclusive create.
ATOMIC_CREATE = {"memory", "s3", "s3a"}


def is_url(location: str) -> bool:
    """True for an fsspec URL (`proto://...` or a chain `a::b://...`), False for a plain path."""
    return "://" in location or "::" in location


def local_path(location: str) -> Path | None:
    """The folder of a local location (a plain path or a `file://` URL), else None."""
    if not is_url(location):
        return Path(location)
    if location.startswith(("file://", "local://")):
        from fsspec.implementations.local import LocalFileSystem

        return Path(LocalFileSystem._strip_protocol(location))
    return None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_name(name: str) -> str:
    """A temporary name beside `name` that says which process writes it (for the sweeper)."""
    return f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def _tmp_pid(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None


class LakeFolder:
    """One folder of the lake, local or remote; names are relative to it.

    Args:
        path: the folder (a local path, or the fsspec path without its protocol).
        fs: the fsspec filesystem; None for a local folder (plain `os` calls).
    """

    def __init__(self, path: str | Path, fs=None):
        self.fs = fs
        self.local = fs is None
        self.path = str(path) if self.local else str(path).rstrip("/")

    def __repr__(self) -> str:
        return f"LakeFolder({self.url()!r})"

    # -- names and locations

    def child(self, name: str) -> LakeFolder:
        return LakeFolder(self.key(name), self.fs)

    def key(self, name: str) -> str:
        """The full path of `name` (a local path, or the fsspec path without protocol)."""
        return os.path.join(self.path, name) if self.local else f"{self.path}/{name}"

    def local_path(self, name: str = "") -> Path:
        """The local file of `name` (local folders only)."""
        if not self.local:
            raise ValueError(f"{self.url()}: not a local folder")
        return Path(self.path) / name if name else Path(self.path)

    def url(self, name: str = "") -> str:
        """A URL of the folder or of `name` in it: `file:///...`, `s3://bucket/...`."""
        if self.local:
            return self.local_path(name).resolve().as_uri()
        return self.fs.unstrip_protocol(self.key(name) if name else self.path)

    def where(self, name: str = "") -> str:
        """For messages: the local path, or the URL of a remote object."""
        return str(self.local_path(name)) if self.local else self.url(name)

    # -- reading

    def exists(self, name: str) -> bool:
        if self.local:
            return self.local_path(name).exists()
        key = self.key(name)
        self.fs.invalidate_cache(key)  # other writers: never trust a cached listing
        return self.fs.exists(key)

    def read_bytes(self, name: str) -> bytes:
        if self.local:
            return self.local_path(name).read_bytes()
        return self.fs.cat_file(self.key(name))

    def read_many(self, names: list[str]) -> dict[str, bytes]:
        """The bytes of several names (fetched concurrently on async backends)."""
        if self.local or not names:
            return {name: self.read_bytes(name) for name in names}
        keys = {self.key(name): name for name in names}
        got = self.fs.cat(list(keys), on_error="raise")
        by_key = {self.fs._strip_protocol(k): v for k, v in got.items()}
        return {keys[k]: by_key[self.fs._strip_protocol(k)] for k in keys}

    def names(self, pattern: str = "*") -> list[str]:
        """Names in the folder matching a glob pattern, sorted; [] for a missing folder."""
        if self.local:
            folder = self.local_path()
            if not folder.is_dir():
                return []
            return sorted(p.name for p in folder.glob(pattern))
        self.fs.invalidate_cache(self.path)
        try:
            keys = self.fs.ls(self.path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = (str(k).rstrip("/").rsplit("/", 1)[-1] for k in keys)
        return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))

    def size(self, name: str) -> int:
        if self.local:
            return self.local_path(name).stat().st_size
        return int(self.fs.size(self.key(name)))

    def open_read(self, name: str) -> BinaryIO:
        """A binary handle on `name` (random access: Parquet readers seek)."""
        if self.local:
            return open(self.local_path(name), "rb")
        return self.fs.open(self.key(name), "rb")

    def read_parquet(self, name: str):
        import pandas as pd

        if self.local:
            return pd.read_parquet(self.local_path(name))
        return pd.read_parquet(self.key(name), filesystem=self.fs)

    # -- writing

    def makedirs(self) -> None:
        if self.local:
            self.local_path().mkdir(parents=True, exist_ok=True)
        else:
            self.fs.makedirs(self.path, exist_ok=True)  # a no-op on object stores

    def write_atomic(self, name: str, data: bytes) -> None:
        """Replace `name` with `data` as one step (readers see the old or the new bytes)."""
        self.makedirs()
        if not self.local:
            self.fs.pipe_file(self.key(name), data)  # one PUT on an object store
            return
        path = self.local_path(name)
        tmp = path.with_name(tmp_name(name))
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)

    def create_exclusive(self, name: str, data: bytes, private: bool = False) -> bool:
        """Create `name` unless it exists; True when this call created it.

        Local: fsynced temporary file, hard link (fails when the name exists), folder fsync;
        `private` makes the file mode 600. Remote: see the module docstring (atomic on memory
        and S3, check-then-write elsewhere).
        """
        self.makedirs()
        if not self.local:
            return self._create_remote(name, data)
        path = self.local_path(name)
        tmp = path.with_name(tmp_name(name))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            _fsync_dir(path.parent)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _create_remote(self, name: str, data: bytes) -> bool:
        key = self.key(name)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if ATOMIC_CREATE.intersection(protocols):
            try:
                self.fs.pipe_file(key, data, mode="create")
            except FileExistsError:
                return False
            return True
        # check-then-write: another writer may create the name between the two calls
        if self.exists(name):
            return False
        self.fs.pipe_file(key, data)
        return True

    def open_staged(self, name: str) -> tuple[str, BinaryIO]:
        """A temporary file for `name`'s content, open for writing: (its name, handle)."""
        self.makedirs()
        staged = tmp_name(name)
        if self.local:
            return staged, open(self.local_path(staged), "wb")
        return staged, self.fs.open(self.key(staged), "wb")

    def finish_staged(self, handle: BinaryIO) -> None:
        """Make a staged file's bytes durable (local: flush and fsync) and close it."""
        if self.local:
            handle.flush()
            os.fsync(handle.fileno())
        handle.close()  # remote: uploads what is left

    def discard_staged(self, staged: str, handle: BinaryIO | None = None) -> None:
        """Drop a staged file (an unfinished upload is aborted, not completed)."""
        if handle is not None and not handle.closed:
            discard = getattr(handle, "discard", None)
            if discard is not None and not self.local:
                try:
                    discard()
                except Exception:  # noqa: BLE001 - best effort: the key is removed below
                    pass
            handle.close()
        self.remove(staged)

    def promote(self, staged: str, name: str) -> None:
        """Move a finished staged file to `name` (same name, same content: a twin is harmless)."""
        if self.local:
            os.replace(self.local_path(staged), self.local_path(name))
            _fsync_dir(self.local_path())
        else:
            self.fs.mv(self.key(staged), self.key(name))

    def remove(self, name: str) -> None:
        if self.local:
            self.local_path(name).unlink(missing_ok=True)
            return
        try:
            self.fs.rm_file(self.key(name))
        except FileNotFoundError:
            pass

    def sweep(self, max_age_seconds: float) -> list[str]:
        """Remove temporary files of writers that died; returns what was removed.

        Local: a temporary file whose process (named in it) is gone. Remote: the pid of another
        host cannot be checked, so a temporary object older than `max_age_seconds` goes. A
        file that vanishes or cannot be examined is skipped, never an error.
        """
        removed = []
        try:
            names = self.names(".*.tmp")
        except OSError:  # e.g. no permission to list: sweeping is housekeeping, never fatal
            return removed
        for name in names:
            pid = _tmp_pid(name)
            if self.local:
                if pid is None or pid == os.getpid() or pid_alive(pid):
                    continue
            elif not self._older_than(name, max_age_seconds):
                continue
            try:
                self.remove(name)
            except OSError:
                continue
            removed.append(self.where(name))
        return removed

    def _older_than(self, name: str, seconds: float) -> bool:
        try:
            modified = self.fs.modified(self.key(name))
        except Exception:  # noqa: BLE001 - backends without mtimes: keep the file
            return False
        return time.time() - modified.timestamp() >= seconds


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Lake:
    """The lake's folders: `snapshots` (Parquet), `manifests` (JSON), `schema` (versions)."""

    root: LakeFolder

    @property
    def snapshots(self) -> LakeFolder:
        return self.root.child("snapshots")

    @property
    def manifests(self) -> LakeFolder:
        return self.root.child("manifests")

    @property
    def schema(self) -> LakeFolder:
        return self.root.child("schema")


def open_lake_at(location: str | Path, options: dict[str, Any] | None = None) -> Lake:
    """The lake at a folder or fsspec URL, with the filesystem's storage options."""
    location = str(location)
    return _open(location, json.dumps(options or {}, sort_keys=True, default=str))


@lru_cache(maxsize=16)
def _open(location: str, options: str) -> Lake:
    folder = local_path(location)
    if folder is not None:
        return Lake(LakeFolder(folder.expanduser()))
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(location, **json.loads(options))
    return Lake(LakeFolder(path, fs))


def open_lake(home) -> Lake:
    """The lake of a home (`paths.lake`, else `<home>/lake`)."""
    return open_lake_at(home.lake_url, home.lake_options)
