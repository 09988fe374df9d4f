"""The data lake: reading batches, immutable content-addressed snapshots, manifests, quarantine."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ctloop.batches import ContentHasher, check_file, row_hashes, table_of
from ctloop.errors import InputError, NotEnoughData
from ctloop.home import Home


def read_batch(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as delivered, without casting.

    Raises:
        InputError: the file is missing, empty, of an unknown kind or not parseable.
    """
    path = Path(path)
    kind = check_file(path)
    try:
        if kind == "csv":
            return pd.read_csv(path, low_memory=False)
        return pd.read_parquet(path)
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
class Manifest:
    """What a snapshot holds and where it came from."""

    snapshot: str
    sha256: str
    source: str
    rows: int
    columns: list[str]
    schema_version: int
    arrived_at: str
    time_min: str | None = None
    time_max: str | None = None
    warnings: int = 0
    format: str | None = None  # csv, parquet or dataframe
    bytes: int | None = None  # size of the snapshot file
    row_groups: int | None = None
    personal_data: dict[str, str] = field(default_factory=dict)  # column -> drop/hash/keep


@dataclass(frozen=True)
class SnapshotWrite:
    manifest: Manifest
    new: bool


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    """A temporary name beside `path` that says which process writes it (for the sweeper)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _atomic_write_bytes(path: Path, write) -> None:
    """Write through a temporary file, fsync it, rename it into place, fsync the folder."""
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


class SnapshotWriter:
    """Write a snapshot as Parquet row groups to a temporary file while hashing its rows.

    Nothing is visible until `commit`: the file is fsynced, renamed to its content hash, the
    folder fsynced, and the manifest (the commit mark) created last and exclusively.
    `on_row_group` is called after each row group with the count so far (tests use it to kill
    a writer mid-write).
    """

    def __init__(
        self,
        home: Home,
        schema: pa.Schema,
        on_row_group: Callable[[int], None] | None = None,
    ):
        home.snapshots.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.schema = schema
        self.tmp = _tmp_name(home.snapshots / "staged.parquet")
        self._handle = open(self.tmp, "wb")
        self._writer = pq.ParquetWriter(self._handle, schema, compression="snappy")
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
        """Close and fsync the temporary file; returns the content hash."""
        self._writer.close()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self.sha256 = self._hasher.hexdigest()
        return self.sha256

    def abort(self) -> None:
        """Drop the temporary file (a rejected batch leaves nothing behind)."""
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - closing a half-written file may fail; it goes anyway
            pass
        self._handle.close()
        self.tmp.unlink(missing_ok=True)

    def commit(self, manifest_fields: dict) -> SnapshotWrite:
        """Rename into place and write the manifest; the same content again is `new=False`."""
        sha = self.sha256 or self.finish()
        snapshot = sha[:16]
        manifest_path = self.home.manifests / f"{snapshot}.json"
        if manifest_path.exists():
            self.tmp.unlink(missing_ok=True)
            return SnapshotWrite(read_manifest(manifest_path), new=False)
        data_path = self.home.snapshots / f"{snapshot}.parquet"
        os.replace(self.tmp, data_path)  # same name, same content: a concurrent twin is harmless
        _fsync_dir(data_path.parent)
        manifest = Manifest(
            snapshot=snapshot,
            sha256=sha,
            rows=self.rows,
            columns=list(self.schema.names),
            arrived_at=datetime.now(UTC).isoformat(),
            bytes=data_path.stat().st_size,
            row_groups=self.row_groups,
            **manifest_fields,
        )
        return _publish_manifest(self.home, manifest)


def _publish_manifest(home: Home, manifest: Manifest) -> SnapshotWrite:
    """Create the manifest exclusively (fsynced temp file, hard link, folder fsync)."""
    home.manifests.mkdir(parents=True, exist_ok=True)
    path = home.manifests / f"{manifest.snapshot}.json"
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(json.dumps(asdict(manifest), indent=2).encode())
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return SnapshotWrite(read_manifest(path), new=False)
        _fsync_dir(path.parent)
        return SnapshotWrite(manifest, new=True)
    finally:
        tmp.unlink(missing_ok=True)


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
    manifest_path = home.manifests / f"{sha[:16]}.json"
    if manifest_path.exists():
        return SnapshotWrite(read_manifest(manifest_path), new=False)
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


def sweep_temporaries(home: Home) -> list[Path]:
    """Remove temporary files left by writers that died (their process is gone)."""
    removed = []
    for folder in (home.snapshots, home.manifests, home.schema_dir):
        if not folder.is_dir():
            continue
        for tmp in folder.glob(".*.tmp"):
            parts = tmp.name.split(".")
            pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
            if pid is None or pid == os.getpid() or _alive(pid):
                continue
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_MANIFEST_FIELDS = {f.name for f in fields(Manifest)}


def read_manifest(path: Path) -> Manifest:
    data = json.loads(path.read_text())
    return Manifest(**{k: v for k, v in data.items() if k in _MANIFEST_FIELDS})


def list_snapshots(home: Home) -> list[Manifest]:
    """All committed snapshots, oldest data first."""
    if not home.manifests.is_dir():
        return []
    manifests = [read_manifest(p) for p in home.manifests.glob("*.json")]
    return sorted(manifests, key=lambda m: (m.time_max or "", m.arrived_at))


def load_snapshots(home: Home, ids: list[str]) -> pd.DataFrame:
    """Concatenate snapshots by id, in the given order."""
    if not ids:
        raise NotEnoughData("no snapshots selected")
    frames = []
    for snapshot in ids:
        path = home.snapshots / f"{snapshot}.parquet"
        if not path.exists():
            raise InputError(f"snapshot {snapshot}: missing from the lake ({path})")
        frames.append(pd.read_parquet(path))
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class QuarantineRecord:
    path: str
    folder: str
    reasons: list[dict]


def quarantine_batch(
    home: Home, source: Path, reasons: list[dict], html: str | None = None
) -> QuarantineRecord:
    """Keep a rejected file, untouched, beside its reasons (JSON and a readable summary).

    `html`: an Evidently report of the batch, copied into the folder as `report.html`.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    folder = home.quarantine / f"{stamp}_{source.name}"
    folder.mkdir(parents=True, exist_ok=False)
    if source.is_file():
        shutil.copy2(source, folder / source.name)
    record = QuarantineRecord(str(source), str(folder), reasons)
    (folder / "reasons.json").write_text(json.dumps(asdict(record), indent=2, default=str))
    lines = [f"# Quarantined: {source.name}", "", "| check | severity | column | message |"]
    lines.append("|---|---|---|---|")
    for r in reasons:
        lines.append(
            f"| {r.get('check')} | {r.get('severity')} | {r.get('column') or ''} | "
            f"{r.get('message')} |"
        )
    if html and Path(html).is_file():
        shutil.copy2(html, folder / "report.html")
        lines += ["", "Evidently data-quality and drift report: [report.html](report.html)"]
    (folder / "README.md").write_text("\n".join(lines) + "\n")
    return record


def list_quarantined(home: Home) -> list[QuarantineRecord]:
    if not home.quarantine.is_dir():
        return []
    out = []
    for reasons in sorted(home.quarantine.glob("*/reasons.json")):
        out.append(QuarantineRecord(**json.loads(reasons.read_text())))
    return out


def select_window(
    manifests: list[Manifest],
    window_days: float | None = None,
    since: str | None = None,
    max_rows: int | None = None,
) -> list[str]:
    """Snapshot ids of the training window: the newest data, bounded by days, a start and rows."""
    chosen = list(manifests)
    if since:
        chosen = [m for m in chosen if (m.time_max or m.arrived_at) >= since]
    if window_days and chosen and chosen[-1].time_max:
        newest = pd.Timestamp(chosen[-1].time_max)
        start = (newest - pd.Timedelta(days=window_days)).isoformat()
        chosen = [m for m in chosen if (m.time_max or "") > start]
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

    Returns a dict with `name`, `digest` (of the window), `source` (the lake folder URI),
    `snapshots` (ids), `rows`, `time_min`, `time_max`, `schema_versions` and `manifests`
    (each snapshot's manifest as a dict, with its own `sha256`).

    Raises:
        InputError: an id has no manifest in the lake.
    """
    manifests = []
    for snapshot in ids:
        path = home.manifests / f"{snapshot}.json"
        if not path.exists():
            raise InputError(f"snapshot {snapshot}: no manifest in the lake ({path})")
        manifests.append(read_manifest(path))
    starts = [m.time_min for m in manifests if m.time_min]
    ends = [m.time_max for m in manifests if m.time_max]
    return {
        "name": name,
        "digest": window_digest(manifests),
        "source": home.snapshots.resolve().as_uri(),
        "snapshots": list(ids),
        "rows": sum(m.rows for m in manifests),
        "time_min": min(starts) if starts else None,
        "time_max": max(ends) if ends else None,
        "schema_versions": sorted({m.schema_version for m in manifests}),
        "manifests": [asdict(m) for m in manifests],
    }


def mlflow_dataset(home: Home, ids: list[str], name: str = "training-window"):
    """The window as an MLflow dataset for `mlflow.log_input(dataset, context="training")`.

    A metadata-only dataset (no data copied): name, digest and the lake URI as source; the
    snapshot ids and row count go into its profile.
    """
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    described = describe_window(home, ids, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(described["source"])
    dataset = MetaDataset(
        source=source,
        name=described["name"],
        digest=described["digest"],
    )
    return dataset, {
        k: described[k] for k in ("snapshots", "rows", "time_min", "time_max", "schema_versions")
    }
