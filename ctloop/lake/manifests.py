"""The lake's catalogue, read only: snapshot manifests and quarantine records.

Light on purpose (no pandas, no pyarrow), so `ctloop status` and `ctloop snapshots` start fast;
`ctloop.lake.snapshots` writes what these functions read (and re-exports them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from ctloop.stores.storage import open_lake

if TYPE_CHECKING:
    from ctloop.stores.home import Home


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


_MANIFEST_FIELDS = {f.name for f in fields(Manifest)}


def parse_manifest(body: bytes | str) -> Manifest:
    """A manifest from its JSON (fields it does not know are ignored)."""
    data = json.loads(body)
    return Manifest(**{k: v for k, v in data.items() if k in _MANIFEST_FIELDS})


def list_snapshots(home: Home) -> list[Manifest]:
    """All committed snapshots, oldest data first."""
    folder = open_lake(home).manifests
    bodies = folder.read_many(folder.names("*.json"))
    manifests = [parse_manifest(body) for body in bodies.values()]
    return sorted(manifests, key=lambda m: (m.time_max or "", m.arrived_at))


@dataclass(frozen=True)
class QuarantineRecord:
    """A quarantined file: where it came from, the folder that keeps it, why it was refused."""

    path: str
    folder: str
    reasons: list[dict]
    name: str | None = None  # the original file name, as it came
    stored_as: str | None = None  # its stored name (cleaned and shortened when it had to be)
    kept: str | None = None  # "file", "first N of M bytes" (not data) or "nothing" (refused)
    size: int | None = None  # the source's size in bytes


_RECORD_FIELDS = {f.name for f in fields(QuarantineRecord)}


def list_quarantined(home: Home) -> list[QuarantineRecord]:
    """Every quarantined file, oldest first ([] when nothing was quarantined)."""
    if not home.quarantine.is_dir():
        return []
    out = []
    for reasons in sorted(home.quarantine.glob("*/reasons.json")):
        if reasons.parent.name.startswith("."):
            continue  # a record being made (or left half-made by a killed process)
        data = json.loads(reasons.read_text())
        out.append(QuarantineRecord(**{k: v for k, v in data.items() if k in _RECORD_FIELDS}))
    return out
