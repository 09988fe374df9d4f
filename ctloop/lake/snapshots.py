"""The data lake: reading batches, immutable content-addressed snapshots, manifests, quarantine.

The lake (snapshots, manifests, schema versions) lives in a local folder or under any fsspec URL
(`paths.lake`); every read and write goes through `ctloop.stores.storage`. Quarantine stays local.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ctloop.data.batches import ContentHasher, check_file, row_hashes, table_of
from ctloop.data.schema import Schema, load_latest_schema, schema_name
from ctloop.errors import InputError, NotEnoughData
from ctloop.faults import pause
from ctloop.lake.manifests import (  # noqa: F401 (re-exported: the lake's read-only half)
    Manifest,
    QuarantineRecord,
    list_quarantined,
    list_snapshots,
    parse_manifest,
)
from ctloop.lake.sources import (
    SAMPLE_BYTES,
    bounded_reasons,
    disk_full_raises,
    open_source,
    safe_name,
)
from ctloop.stores.home import Home
from ctloop.stores.storage import Lake, LakeFolder, open_lake, pid_alive


def read_batch(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as delivered, without casting.

    Raises:
        InputError: the file is missing, empty, of an unknown kind or not parseable, or is a
            FIFO, device, socket or a symlink out of its folder (not opened).
    """
    path = Path(path)
    # one checked descriptor: a FIFO would hang the reader, a link out of its folder leaks
    with open_source(path) as handle:
        kind = check_file(path, handle)
        try:
            if kind == "csv":
                return pd.read_csv(handle, low_memory=False)
            return pd.read_parquet(handle)
        except UnicodeDecodeError:
            raise InputError(f"{path}: not a text CSV file (binary content)") from None
        except pd.errors.EmptyDataError:
            raise InputError(f"{path}: file has no columns") from None
        except (pd.errors.ParserError, ValueError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{path}: cannot be parsed ({first})") from None


def content_hash(frame: pd.DataFrame | pa.Table) -> str:
    """A digest of the values, column names and types: same content, same snapshot.

    Computed from the Arrow table a snapshot stores, row by row, so a file hashed chunk by
    chunk while it streams in gets the same digest as the whole table at once.
    """
    table = frame if isinstance(frame, pa.Table) else table_of(frame)
    hasher = ContentHasher(table.schema)
    hasher.update(row_hashes(table))
    return hasher.hexdigest()


@dataclass(frozen=True)
class SnapshotWrite:
    manifest: Manifest
    new: bool


class SnapshotWriter:
    """Write a snapshot as Parquet row groups to a temporary file while hashing its rows.

    Nothing is visible until `commit`: the file is made durable and moved to its content hash
    (local: fsync, rename, folder fsync; remote: upload to a temporary key, `fs.mv`), and the
    manifest (the commit mark) created last and exclusively (see `ctloop.stores.storage`).
    `on_row_group` is called after each row group with the count so far (tests use it to kill
    a writer mid-write).
    """

    def __init__(
        self,
        home: Home,
        schema: pa.Schema,
        on_row_group: Callable[[int], None] | None = None,
    ):
        self.home = home
        self.lake = open_lake(home)
        self.schema = schema
        self.tmp, self._handle = self.lake.snapshots.open_staged("staged.parquet")
        try:
            self._writer = pq.ParquetWriter(self._handle, schema, compression="snappy")
        except BaseException:  # e.g. a full disk at the first bytes: leave no temporary file
            self._discard()
            raise
        self._hasher = ContentHasher(schema)
        self._on_row_group = on_row_group
        self.rows = 0
        self.row_groups = 0
        self.sha256: str | None = None

    def write(self, table: pa.Table, hashes=None) -> None:
        """Append one chunk as a row group (`hashes`: its row hashes, when already known)."""
        if table.num_rows == 0:
            return
        table = table.select(self.schema.names).cast(self.schema)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._hasher.update(row_hashes(table) if hashes is None else hashes)
        self.rows += table.num_rows
        self.row_groups += 1
        if self._on_row_group is not None:
            self._on_row_group(self.row_groups)

    def finish(self) -> str:
        """Close and fsync (remote: upload) the temporary file; returns the content hash."""
        self._writer.close()
        self.lake.snapshots.finish_staged(self._handle)
        self.sha256 = self._hasher.hexdigest()
        return self.sha256

    def staged_exists(self) -> bool:
        """Whether the temporary file is still there (not committed, aborted or swept)."""
        return self.lake.snapshots.exists(self.tmp)

    @contextmanager
    def read_staged(self) -> Iterator[pq.ParquetFile]:
        """The finished temporary file, opened as Parquet (row groups read on demand)."""
        with self.lake.snapshots.open_read(self.tmp) as handle:
            yield pq.ParquetFile(handle)

    def abort(self) -> None:
        """Drop the temporary file (a rejected batch leaves nothing behind)."""
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - closing a half-written file may fail; it goes anyway
            pass
        self._discard()

    def _discard(self) -> None:
        try:
            self.lake.snapshots.discard_staged(self.tmp, self._handle)
        except OSError:  # closing flushes, and a full disk fails that flush: remove it anyway
            self.lake.snapshots.remove(self.tmp)

    def commit(self, manifest_fields: dict) -> SnapshotWrite:
        """Rename into place and write the manifest; the same content again is `new=False`."""
        sha = self.sha256 or self.finish()
        snapshot = sha[:16]
        lake = self.lake
        if lake.manifests.exists(f"{snapshot}.json"):
            lake.snapshots.remove(self.tmp)
            return SnapshotWrite(_read_manifest(lake.manifests, snapshot), new=False)
        data = f"{snapshot}.parquet"
        lake.snapshots.promote(self.tmp, data)  # same name, same content: a twin is harmless
        pause("lake.data")
        manifest = Manifest(
            snapshot=snapshot,
            sha256=sha,
            rows=self.rows,
            columns=list(self.schema.names),
            arrived_at=datetime.now(UTC).isoformat(),
            bytes=lake.snapshots.size(data),
            row_groups=self.row_groups,
            **manifest_fields,
        )
        return _publish_manifest(lake, manifest)


def _publish_manifest(lake: Lake, manifest: Manifest) -> SnapshotWrite:
    """Create the manifest exclusively: the commit mark of a snapshot (`ctloop.stores.storage`)."""
    body = json.dumps(asdict(manifest), indent=2).encode()
    if lake.manifests.create_exclusive(f"{manifest.snapshot}.json", body):
        return SnapshotWrite(manifest, new=True)
    return SnapshotWrite(_read_manifest(lake.manifests, manifest.snapshot), new=False)


def write_snapshot(
    frame: pd.DataFrame,
    home: Home,
    source: str,
    schema_version: int,
    timestamp: str | None = None,
    warnings: int = 0,
) -> SnapshotWrite:
    """Store an accepted, coerced batch as an immutable Parquet snapshot named by its hash.

    The Parquet file is written first and the manifest last: a manifest is the commit mark, so a
    crash between the two leaves no visible snapshot and a retry completes it.
    """
    table = table_of(frame)
    sha = content_hash(table)
    manifests = open_lake(home).manifests
    if manifests.exists(f"{sha[:16]}.json"):
        return SnapshotWrite(_read_manifest(manifests, sha[:16]), new=False)
    time_min = time_max = None
    if timestamp and timestamp in frame.columns and frame[timestamp].notna().any():
        time_min = pd.Timestamp(frame[timestamp].min()).isoformat()
        time_max = pd.Timestamp(frame[timestamp].max()).isoformat()
    writer = SnapshotWriter(home, table.schema)
    try:
        writer.write(table)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return writer.commit(
        {
            "source": str(source),
            "schema_version": schema_version,
            "time_min": time_min,
            "time_max": time_max,
            "warnings": warnings,
            "format": "dataframe",
        }
    )


STALE_TEMPORARY_SECONDS = 24 * 3600


def sweep_temporaries(home: Home, max_age_seconds: float = STALE_TEMPORARY_SECONDS) -> list[str]:
    """Remove temporary files left by writers that died; returns their paths or URLs.

    A local lake: the files whose process (named in the file name) is gone. A remote lake: the
    temporary objects older than `max_age_seconds` (another host's pid cannot be checked).
    """
    lake = open_lake(home)
    removed: list[str] = []
    for folder in (lake.snapshots, lake.manifests, lake.schema):
        removed += folder.sweep(max_age_seconds)
    return removed


def read_manifest(path: Path) -> Manifest:
    """A manifest file of a local lake."""
    return parse_manifest(Path(path).read_text())


def _read_manifest(manifests: LakeFolder, snapshot: str) -> Manifest:
    return parse_manifest(manifests.read_bytes(f"{snapshot}.json"))


def window_span(manifests: list[Manifest], ids: list[str], rows: int) -> str:
    """The window as a person reads it: `2024-01-01..2024-01-24 (24 snapshots, 96000 rows)`.

    Args:
        manifests: the lake's manifests (at least those of `ids`).
        ids: the snapshots of the window.
        rows: the rows loaded from them.
    """
    by_id = {m.snapshot: m for m in manifests}
    starts = [by_id[i].time_min for i in ids if by_id[i].time_min]
    ends = [by_id[i].time_max for i in ids if by_id[i].time_max]
    span = f"{min(starts)[:10]}..{max(ends)[:10]} " if starts and ends else ""
    return f"{span}({len(ids)} snapshots, {rows} rows)"


def current_schema(home: Home) -> Schema | None:
    """The newest schema version stored in the lake, or None before the first accepted batch."""
    return load_latest_schema(open_lake(home).schema)


def schema_location(home: Home, version: int) -> str:
    """Where a schema version is stored: a local path, or its URL on a remote lake."""
    return open_lake(home).schema.where(schema_name(version))


def has_snapshot(home: Home, snapshot: str) -> bool:
    """Whether the lake holds a snapshot's data under this id."""
    return open_lake(home).snapshots.exists(f"{snapshot}.parquet")


def load_snapshots(home: Home, ids: list[str]) -> pd.DataFrame:
    """Concatenate snapshots by id, in the given order."""
    if not ids:
        raise NotEnoughData("no snapshots selected")
    folder = open_lake(home).snapshots
    frames = []
    for snapshot in ids:
        name = f"{snapshot}.parquet"
        if not folder.exists(name):
            raise InputError(f"snapshot {snapshot}: missing from the lake ({folder.where(name)})")
        frames.append(folder.read_parquet(name))
    return pd.concat(frames, ignore_index=True)


def quarantine_batch(
    home: Home, source: Path, reasons: list[dict], html: str | None = None
) -> QuarantineRecord:
    """Keep a rejected file beside its reasons (JSON and a readable summary).

    A data file that failed validation is kept whole; a file that is not data (unreadable) only
    as its first `SAMPLE_BYTES` (`<name>.sample`); a symlink leading out of its folder, a FIFO,
    device or socket is never opened, so nothing of it is kept. The stored name is cleaned and
    shortened (`safe_name`), the original name recorded; messages are bounded. `reasons.json`
    is written last: a folder without it (a kill or a full disk midway) is not a record, and a
    full disk removes the folder and raises `DiskFull`.

    `html`: an Evidently report of the batch, copied into the folder as `report.html`.
    """
    reasons = bounded_reasons(reasons)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    stored = safe_name(source.name)
    folder = home.quarantine / f"{stamp}_{stored}"
    making = home.quarantine / f".{stamp}.{os.getpid()}.tmp"  # renamed to `folder` when whole
    with disk_full_raises("the quarantine", home.quarantine):
        home.quarantine.mkdir(parents=True, exist_ok=True)
        sweep_quarantine(home)
        making.mkdir()
        try:
            sample = any(r.get("check") == "unreadable" for r in reasons)
            kept, size = _keep_copy(source, making / stored, sample)
            record = QuarantineRecord(
                str(source), str(folder), reasons, source.name, stored, kept, size
            )
            _write_summary(making, record, html)
            (making / "reasons.json").write_text(json.dumps(asdict(record), indent=2, default=str))
            pause("quarantine.copied")
            os.rename(making, folder)
        except BaseException:
            shutil.rmtree(making, ignore_errors=True)
            raise
    return record


def sweep_quarantine(home: Home) -> list[str]:
    """Remove quarantine folders that a killed process left half-made (its pid is gone)."""
    removed = []
    for partial in home.quarantine.glob(".*.tmp"):
        try:
            pid = int(partial.name.rsplit(".", 2)[-2])
        except (ValueError, IndexError):
            continue
        if pid == os.getpid() or pid_alive(pid):
            continue
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(str(partial))
    return removed


def _keep_copy(source: Path, destination: Path, sample: bool) -> tuple[str, int | None]:
    """Copy the file (or its first bytes) unless it must not be opened: (kept, source size)."""
    try:
        handle = open_source(source)  # one checked descriptor: a file swapped in is not copied
    except InputError:
        return "nothing", None
    with handle:
        st = os.fstat(handle.fileno())
        size = st.st_size
        if sample:
            destination = destination.with_name(destination.name + ".sample")
            with open(destination, "wb") as out:
                out.write(handle.read(SAMPLE_BYTES))
            return (f"first {min(size, SAMPLE_BYTES)} of {size} bytes", size)
        with open(destination, "wb") as out:
            shutil.copyfileobj(handle, out, 1 << 20)
    os.chmod(destination, stat.S_IMODE(st.st_mode))
    os.utime(destination, ns=(st.st_atime_ns, st.st_mtime_ns))
    return "file", size


def _write_summary(folder: Path, record: QuarantineRecord, html: str | None) -> None:
    lines = [f"# Quarantined: {record.stored_as}", ""]
    if record.name != record.stored_as:
        lines += [f"Original name: {json.dumps(record.name)}", ""]
    lines += [
        f"Kept: {record.kept}",
        "",
        "| check | severity | column | message |",
        "|---|---|---|---|",
    ]
    for r in record.reasons:
        cells = [r.get("check"), r.get("severity"), r.get("column") or "", r.get("message")]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    if html and Path(html).is_file():
        shutil.copy2(html, folder / "report.html")
        lines += ["", "Evidently data-quality and drift report: [report.html](report.html)"]
    (folder / "README.md").write_text("\n".join(lines) + "\n")


def select_window(
    manifests: list[Manifest],
    window_days: float | None = None,
    since: str | None = None,
    max_rows: int | None = None,
    min_rows: int | None = None,
) -> list[str]:
    """Snapshot ids of the training window: the newest data, bounded by days, a start and rows.

    Whole snapshots only. With `min_rows`, a window of `window_days` holding fewer rows reaches
    back (never before `since`) until it holds that many, so a slow stream (a row a day) still
    trains on enough rows; `max_rows` caps the result last.
    """
    chosen = list(manifests)
    if since:
        chosen = [m for m in chosen if (m.time_max or m.arrived_at) >= since]
    if window_days and chosen and chosen[-1].time_max:
        newest = pd.Timestamp(chosen[-1].time_max)
        start = (newest - pd.Timedelta(days=window_days)).isoformat()
        inside = [m for m in chosen if (m.time_max or "") > start]
        older = [m for m in chosen if (m.time_max or "") <= start]
        total = sum(m.rows for m in inside)
        while min_rows and older and total < min_rows:
            inside.insert(0, older.pop())
            total += inside[0].rows
        chosen = inside
    if max_rows:
        kept, total = [], 0
        for m in reversed(chosen):
            if total >= max_rows:
                break
            kept.append(m)
            total += m.rows
        chosen = list(reversed(kept))
    return [m.snapshot for m in chosen]


# --- lineage ------------------------------------------------------------------------------


def window_digest(manifests: list[Manifest]) -> str:
    """One digest for a training window: its snapshots' content hashes, in order."""
    import hashlib

    joined = "\n".join(m.sha256 for m in manifests).encode()
    return hashlib.sha256(joined).hexdigest()[:16]


def describe_window(home: Home, ids: list[str], name: str = "training-window") -> dict:
    """Manifests, digests and an MLflow-dataset-ready description of a list of snapshot ids.

    Returns a dict with `name`, `digest` (of the window), `source` (the URL of the lake's
    snapshot folder: `file:///...`, `s3://bucket/prefix/snapshots`...),
    `snapshots` (ids), `rows`, `time_min`, `time_max`, `schema_versions` and `manifests`
    (each snapshot's manifest as a dict, with its own `sha256`).

    Raises:
        InputError: an id has no manifest in the lake.
    """
    lake = open_lake(home)
    manifests = []
    for snapshot in ids:
        try:
            manifests.append(_read_manifest(lake.manifests, snapshot))
        except FileNotFoundError:
            where = lake.manifests.where(f"{snapshot}.json")
            raise InputError(f"snapshot {snapshot}: no manifest in the lake ({where})") from None
    starts = [m.time_min for m in manifests if m.time_min]
    ends = [m.time_max for m in manifests if m.time_max]
    return {
        "name": name,
        "digest": window_digest(manifests),
        "source": lake.snapshots.url(),
        "snapshots": list(ids),
        "rows": sum(m.rows for m in manifests),
        "time_min": min(starts) if starts else None,
        "time_max": max(ends) if ends else None,
        "schema_versions": sorted({m.schema_version for m in manifests}),
        "manifests": [asdict(m) for m in manifests],
    }


def mlflow_dataset(home: Home, ids: list[str], name: str = "training-window"):
    """The window as an MLflow dataset for `mlflow.log_input(dataset, context="training")`.

    A metadata-only dataset (no data copied): name, digest and the lake URL as source (MLflow's
    own source type where it has one: local, S3, GCS...; else a `ctloop_lake` source holding the
    URL); the snapshot ids and row count go into its profile.
    """
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.exceptions import MlflowException

    described = describe_window(home, ids, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            source = resolve_dataset_source(described["source"])
        except MlflowException:  # memory://, abfs://...: no MLflow source type for the scheme
            source = _lake_source_class()(described["source"])
    dataset = MetaDataset(
        source=source,
        name=described["name"],
        digest=described["digest"],
    )
    return dataset, {
        k: described[k] for k in ("snapshots", "rows", "time_min", "time_max", "schema_versions")
    }


@cache
def _lake_source_class():
    """An MLflow dataset source that is just a lake URL (defined on first use: MLflow is lazy)."""
    from mlflow.data.dataset_source import DatasetSource

    class LakeDatasetSource(DatasetSource):
        def __init__(self, uri: str):
            self.uri = uri

        @staticmethod
        def _get_source_type() -> str:
            return "ctloop_lake"

        def load(self, **kwargs):
            raise NotImplementedError("read the lake with ctloop.lake.snapshots.load_snapshots")

        @staticmethod
        def _can_resolve(raw_source) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source):
            return cls(str(raw_source))

        def to_dict(self) -> dict:
            return {"uri": self.uri}

        @classmethod
        def from_dict(cls, source_dict: dict):
            return cls(source_dict["uri"])

    return LakeDatasetSource
