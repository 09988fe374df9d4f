"""Ingest stage: read a landing file, write an accepted snapshot, quarantine a rejected one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from ctloop import lake
from ctloop.config import Config
from ctloop.home import home_of
from ctloop.reports import issues_markdown
from ctloop.schema import Schema
from ctloop.validation import coerce_to_schema


@task(name="read-batch", cache_policy=NO_CACHE, retries=0)
def read_batch(path: str) -> pd.DataFrame:
    """Read a CSV or Parquet file as delivered (raises InputError naming the file)."""
    return lake.read_batch(path)


@task(name="write-snapshot", cache_policy=NO_CACHE)
def write_snapshot(
    frame: pd.DataFrame, schema: Schema, config: Config, source: str, warnings: int
) -> lake.SnapshotWrite:
    """Coerce to the schema and store an immutable snapshot (never cached: a side effect)."""
    home = home_of(config).ensure()
    coerced = coerce_to_schema(frame, schema)
    written = lake.write_snapshot(
        coerced, home, source, schema.version, config.dataset.timestamp, warnings
    )
    m = written.manifest
    emit_event(
        event="ctloop.batch.accepted",
        resource={
            "prefect.resource.id": f"ctloop.snapshot.{m.snapshot}",
            "ctloop.project": config.project,
        },
        payload={"snapshot": m.snapshot, "rows": m.rows, "new": written.new, "source": source},
    )
    return written


@task(name="quarantine-batch", cache_policy=NO_CACHE)
def quarantine_batch(path: str, reasons: list[dict], config: Config) -> lake.QuarantineRecord:
    """Keep the rejected file with its reasons, publish them, and alert."""
    home = home_of(config).ensure()
    record = lake.quarantine_batch(home, Path(path), reasons)
    create_markdown_artifact(
        markdown=issues_markdown(path, "Quarantined", reasons),
        key="quarantined-batch",
        description=f"Why {Path(path).name} was quarantined",
    )
    emit_event(
        event="ctloop.batch.quarantined",
        resource={
            "prefect.resource.id": f"ctloop.file.{Path(path).name}",
            "ctloop.project": config.project,
        },
        payload={"path": path, "folder": record.folder, "reasons": reasons},
    )
    return record
