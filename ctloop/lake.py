"""The data lake: reading batches, immutable content-addressed snapshots, manifests, quarantine."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ctloop.errors import InputError, NotEnoughData
from ctloop.home import Home

READABLE = {".csv", ".parquet", ".pq"}


def read_batch(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as delivered, without casting.

    Raises:
        InputError: the file is missing, empty, of an unknown kind or not parseable.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a CSV or Parquet file")
    suffix = path.suffix.lower()
    if suffix not in READABLE:
        raise InputError(f"{path}: unsupported file type '{suffix}' (use .csv or .parquet)")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    try:
        if suffix == ".csv":
            return pd.read_csv(path, low_memory=False)
        return pd.read_parquet(path)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text CSV file (binary content)") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: file has no columns") from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot be parsed ({first})") from None


def content_hash(frame: pd.DataFrame) -> str:
    """A digest of the values, column names and types: same content, same snapshot."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[c, str(t)] for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


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


def _atomic_write_bytes(path: Path, write) -> None:
    """Write through a temporary file, fsync it, rename it into place, fsync the folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
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
    sha = content_hash(frame)
    snapshot = sha[:16]
    manifest_path = home.manifests / f"{snapshot}.json"
    if manifest_path.exists():
        return SnapshotWrite(read_manifest(manifest_path), new=False)
    data_path = home.snapshots / f"{snapshot}.parquet"
    _atomic_write_bytes(data_path, lambda h: frame.to_parquet(h, index=False))
    time_min = time_max = None
    if timestamp and timestamp in frame.columns and frame[timestamp].notna().any():
        time_min = pd.Timestamp(frame[timestamp].min()).isoformat()
        time_max = pd.Timestamp(frame[timestamp].max()).isoformat()
    manifest = Manifest(
        snapshot=snapshot,
        sha256=sha,
        source=str(source),
        rows=len(frame),
        columns=list(map(str, frame.columns)),
        schema_version=schema_version,
        arrived_at=datetime.now(UTC).isoformat(),
        time_min=time_min,
        time_max=time_max,
        warnings=warnings,
    )
    body = json.dumps(asdict(manifest), indent=2).encode()
    _atomic_write_bytes(manifest_path, lambda h: h.write(body))
    return SnapshotWrite(manifest, new=True)


def read_manifest(path: Path) -> Manifest:
    return Manifest(**json.loads(path.read_text()))


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


def quarantine_batch(home: Home, source: Path, reasons: list[dict]) -> QuarantineRecord:
    """Keep a rejected file, untouched, beside its reasons (JSON and a readable summary)."""
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
