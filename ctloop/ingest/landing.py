"""The watched landing folder: every new file is ingested exactly once, then moved or marked.

A scan takes an exclusive lock on the folder (two watchers never ingest the same file twice at
once), ingests each new file through the given function, and records it in the ledger
`.ctloop-ingested.jsonl` (key: name, size, modification time). A file of features without the
target (labels come later) is not ingested: given a monitor, it goes there and is recorded as
`monitored`. With `ingest.done: move` the file then goes to `.done/` (accepted or monitored) or
`.quarantined/`. A crash between ingestion and the record re-ingests the
file on the next scan, which content addressing turns into `new: false`: still one snapshot.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ctloop.config.settings import Config
from ctloop.stores.home import Home

LEDGER = ".ctloop-ingested.jsonl"
LOCK = ".ctloop-landing.lock"
DONE = ".done"
QUARANTINED = ".quarantined"
ACCEPTED, MONITORED = "accepted", "monitored"


def landing_folder(config: Config, home: Home, folder: str | Path | None = None) -> Path:
    """The folder to watch: the argument, else `ingest.landing`, else `<home>/landing`."""
    chosen = Path(folder or config.ingest.landing or home.root / "landing").expanduser()
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


def _key(path: Path) -> str:
    st = path.lstat()  # a link is keyed as itself: a dangling or refused link never crashes
    return f"{path.name}|{st.st_size}|{st.st_mtime_ns}"


def ingested_keys(folder: Path) -> set[str]:
    """Keys of the files the ledger says were ingested."""
    ledger = folder / LEDGER
    if not ledger.exists():
        return set()
    keys = set()
    for line in ledger.read_text().splitlines():
        try:
            keys.add(json.loads(line)["key"])
        except (ValueError, KeyError):
            continue  # a torn last line after a crash: that file is simply scanned again
    return keys


def pending_files(folder: Path, patterns: list[str], min_age_seconds: float = 0.0) -> list[Path]:
    """Files matching the patterns not yet in the ledger, oldest first.

    Hidden files (temporary uploads such as `.x.csv.part`) and files modified less than
    `min_age_seconds` ago (still being written) wait for a later scan.
    """
    done = ingested_keys(folder)
    now = time.time()
    # not only regular files: a FIFO, device, socket or symlink is listed so that it is refused
    # with a reason (`ctloop.lake.sources.refusal`), never silently ignored nor opened
    found = {p for pattern in patterns for p in folder.glob(pattern) if not p.is_dir()}
    pending = []
    for path in found:
        if path.name.startswith("."):
            continue
        if now - path.lstat().st_mtime < min_age_seconds:
            continue
        if _key(path) in done:
            continue
        pending.append(path)
    return sorted(pending, key=lambda p: (p.lstat().st_mtime_ns, p.name))


def is_features_batch(path: Path, config: Config, home: Home) -> bool:
    """Whether a landing file is a features batch for the monitor rather than the lake: its
    header has no target column but every feature column of the lake's schema.

    Before the first accepted batch (no schema) nothing is: a file without the target is
    ingested and quarantined with the reason (a misspelt `--target` is then said, not hidden).
    A file that cannot be read is not either: ingestion quarantines it with its reason.
    """
    from ctloop.data.batches import file_columns
    from ctloop.errors import InputError
    from ctloop.lake.snapshots import current_schema
    from ctloop.lake.sources import refusal

    target = config.dataset.target
    if not target or refusal(path) is not None:
        return False
    try:
        columns = set(file_columns(path, config.ingest.delimiter))
    except InputError:
        return False
    if target in columns:
        return False
    schema = current_schema(home)
    if schema is None:
        return False
    features = [c for c in schema.feature_columns if c != schema.target]
    return bool(features) and columns.issuperset(features)


@contextmanager
def _locked(folder: Path):
    with open(folder / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _record(folder: Path, key: str, outcome: dict) -> None:
    entry = {
        "key": key,
        "file": key.rsplit("|", 2)[0],
        "status": outcome["status"],
        "snapshot": outcome.get("snapshot"),
        "at": datetime.now(UTC).isoformat(),
    }
    with open(folder / LEDGER, "a") as ledger:
        ledger.write(json.dumps(entry) + "\n")
        ledger.flush()
        os.fsync(ledger.fileno())


def process_landing(
    folder: Path,
    config: Config,
    ingest: Callable[[Path], dict],
    min_age_seconds: float = 0.0,
    monitor: Callable[[Path], dict] | None = None,
    home: Home | None = None,
) -> dict:
    """Ingest each new file of the landing folder once; returns the `ctloop ingest` answer
    (and, given a monitor, `monitored` beside `accepted` and `quarantined`).

    Args:
        folder: the landing folder.
        config: `ingest.patterns` and `ingest.done` (move or mark) are used.
        ingest: ingests one file and returns its outcome dict (`status` accepted/quarantined,
            as `flows.ingest.ingest_one` or `ctloop.ingest.stage.ingest_path(...).as_dict()`).
        min_age_seconds: files younger than this are left for the next scan.
        monitor: takes a features batch (`is_features_batch`, needs `home`) and returns its
            outcome (`status` monitored, `path`, `drift`, `reasons`); None: every file is
            ingested.
        home: the home whose lake schema tells a features batch.
    """
    from ctloop.ingest.stage import unreadable
    from ctloop.lake.sources import refusal, safe_name

    accepted, quarantined, monitored = [], [], []
    with _locked(folder):
        for path in pending_files(folder, config.ingest.patterns, min_age_seconds):
            key = _key(path)
            refused = refusal(path, folder)
            if refused is not None and refusal(path) is None:
                # a link in a sub-folder that stays there but leaves the landing folder
                outcome = {
                    "status": "quarantined",
                    "path": str(path),
                    "reasons": unreadable(config, refused),
                }
            elif monitor is not None and home is not None and is_features_batch(path, config, home):
                outcome = monitor(path)
            else:
                outcome = ingest(path)  # refuses links out of the folder and special files
            if config.ingest.done == "move":
                done = outcome["status"] in (ACCEPTED, MONITORED)
                target = folder / (DONE if done else QUARANTINED)
                target.mkdir(exist_ok=True)
                destination = target / safe_name(path.name)
                if os.path.lexists(destination):
                    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
                    destination = target / safe_name(f"{path.stem}.{stamp}{path.suffix}")
                _record(folder, key, outcome)
                shutil.move(str(path), destination)
            else:
                _record(folder, key, outcome)
            if outcome["status"] == ACCEPTED:
                accepted.append(
                    {k: outcome.get(k) for k in ("path", "snapshot", "rows", "new", "warnings")}
                )
            elif outcome["status"] == MONITORED:
                monitored.append({k: outcome.get(k) for k in ("path", "drift", "reasons")})
            else:
                quarantined.append({"path": outcome["path"], "reasons": outcome["reasons"]})
    answer = {"accepted": accepted, "quarantined": quarantined}
    return answer | ({"monitored": monitored} if monitor is not None or monitored else {})


def scan_landing(config: Config, home: Home, folder: str | Path | None = None) -> dict:
    """Ingest the landing folder without Prefect (pure core: `ctloop.ingest.stage.ingest_path`)."""
    from ctloop.ingest.stage import ingest_path

    where = landing_folder(config, home, folder)
    return process_landing(
        where, config, lambda p: ingest_path(p, config, home).as_dict(), min_age_seconds=0.0
    )
