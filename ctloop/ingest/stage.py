"""Ingestion: a file or a DataFrame streamed into a staged snapshot, validated, then committed.

One pass over the data: each chunk is typed to the schema (personal data dropped or hashed),
profiled for validation, hashed and written as a Parquet row group to a temporary file. The
gate then decides: `commit` makes it an immutable snapshot, `discard` leaves no trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ctloop.config.settings import Config
from ctloop.data import privacy
from ctloop.data.batches import frame_to_raw, read_chunks, row_hashes, storage_type
from ctloop.data.schema import Schema, load_latest_schema, save_schema_if_absent
from ctloop.errors import InputError
from ctloop.faults import pause
from ctloop.lake import snapshots as lake
from ctloop.lake.sources import bounded, disk_full_raises, open_source
from ctloop.stores.home import Home
from ctloop.stores.storage import open_lake
from ctloop.validate.checks import (
    BatchProfile,
    Issue,
    StagedBatch,
    ValidationReport,
    add_evidence,
    kind_evidence,
    make_issue,
    provisional_schema,
    type_chunk,
)
from ctloop.validate.quality import compare_to_reference


def _arrow_schema(raw: pa.Schema, schema: Schema) -> pa.Schema:
    out = []
    for name in raw.names:
        col = schema.columns.get(name)
        if col is not None and col.handling == "drop":
            continue
        out.append(pa.field(name, storage_type(col, schema) if col else pa.string()))
    return pa.schema(out)


def _salt(config: Config, home: Home, schema: Schema) -> bytes | None:
    if not any(c.handling == "hash" for c in schema.columns.values()):
        return None
    return privacy.load_salt(config.personal_data, open_lake(home).root)


def stage_chunks(
    chunks: Callable[[], Iterator[pa.Table]],
    source: str,
    fmt: str,
    config: Config,
    home: Home,
    on_row_group: Callable[[int], None] | None = None,
) -> StagedBatch:
    """Stream raw chunks through typing, profiling, hashing and a temporary Parquet file.

    `chunks` opens the batch (a new iterator on each call). A first batch's kinds come from
    all of its values: when the first chunk suggested other kinds than the whole batch gives,
    the batch is staged once more with the whole batch's kinds.
    """
    config.require_target()
    with disk_full_raises("the lake", open_lake(home).root.where()):
        home.ensure()
        lake.sweep_temporaries(home)
        schema = load_latest_schema(open_lake(home).schema)
        staged, kinds = _stage_pass(chunks(), schema, None, source, fmt, config, home, on_row_group)
        if kinds is not None:
            discard(staged)
            staged, _ = _stage_pass(
                chunks(), schema, kinds, source, fmt, config, home, on_row_group
            )
    return staged


def _stage_pass(
    chunks: Iterator[pa.Table],
    schema: Schema | None,
    kinds: dict[str, str] | None,
    source: str,
    fmt: str,
    config: Config,
    home: Home,
    on_row_group: Callable[[int], None] | None,
) -> tuple[StagedBatch, dict[str, str] | None]:
    """One pass; for a first batch, also the whole batch's kinds when they differ from its
    first chunk's (then the pass is to be done again with them)."""
    provisional = schema is None
    first = next(chunks)
    evidence = first_kinds = None
    if schema is None:
        if kinds is None:
            first_kinds = _kinds(first)
            evidence = kind_evidence(first)
        schema = provisional_schema(
            first, config.dataset, config.personal_data, kinds or first_kinds
        )
    salt = _salt(config, home, schema)
    profile = BatchProfile(schema, config, provisional)
    writer = lake.SnapshotWriter(home, _arrow_schema(first.schema, schema), on_row_group)
    try:
        chunk: pa.Table | None = first
        while chunk is not None:
            if chunk.schema.names != first.schema.names:
                raise InputError(f"{source}: columns change within the file")
            if evidence is not None:
                add_evidence(evidence, chunk)
            typed, conversions = type_chunk(chunk, schema, salt)
            hashes = row_hashes(typed)
            profile.add(chunk, conversions, hashes)
            writer.write(typed, hashes)
            chunk = next(chunks, None)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    if evidence is not None:
        whole = {name: e.kind() for name, e in evidence.items()}
        if whole != first_kinds:
            return StagedBatch(source, fmt, profile.report(source), schema, True, writer), whole
    return _finish(profile, schema, provisional, writer, source, fmt, config), None


def _kinds(raw: pa.Table) -> dict[str, str]:
    evidence = kind_evidence(raw)
    add_evidence(evidence, raw)
    return {name: e.kind() for name, e in evidence.items()}


def _finish(
    profile: BatchProfile,
    schema: Schema,
    provisional: bool,
    writer: lake.SnapshotWriter,
    source: str,
    fmt: str,
    config: Config,
) -> StagedBatch:
    report = _bounded(profile.report(source))
    checked = schema
    if provisional and report.passed:
        checked = profile.inferred_schema(version=1)
    time_min, time_max = profile.time_range(config.dataset.timestamp)
    personal = {c.name: c.handling for c in checked.columns.values() if c.handling}
    if personal:
        notes = ", ".join(
            f"{k} ({checked.columns[k].personal or 'configured'}: {v})" for k, v in personal.items()
        )
        issue = make_issue(config, "personal_data", f"personal data handled: {notes}")
        if issue is not None:
            report = report.with_issues([issue])
    return StagedBatch(
        source, fmt, report, checked, provisional, writer, time_min, time_max, personal
    )


def stage_file(
    path: str | Path,
    config: Config,
    home: Home,
    on_row_group: Callable[[int], None] | None = None,
) -> StagedBatch:
    """Stage a CSV or Parquet file (raises InputError naming the file when unreadable)."""
    path = Path(path)
    fmt = "csv" if path.suffix.lower() == ".csv" else "parquet"
    # one descriptor, checked (a regular file, not a link out of its folder), read by every pass
    with open_source(path) as handle:

        def chunks() -> Iterator[pa.Table]:
            size, delimiter = config.ingest.chunk_bytes, config.ingest.delimiter
            return iter(read_chunks(path, size, delimiter, handle=handle))

        return stage_chunks(chunks, str(path), fmt, config, home, on_row_group)


def stage_frame(
    frame: pd.DataFrame, config: Config, home: Home, source: str = "dataframe"
) -> StagedBatch:
    """Stage a DataFrame given from Python (typed to the schema exactly like a file)."""
    rows = 200_000
    raw = frame_to_raw(frame)

    def chunks() -> Iterator[pa.Table]:
        return (raw.slice(i, rows) for i in range(0, max(raw.num_rows, 1), rows))

    return stage_chunks(chunks, source, "dataframe", config, home)


def discard(staged: StagedBatch) -> None:
    """Drop a rejected batch's temporary file: the lake is unchanged."""
    if staged.writer is not None:
        staged.writer.abort()


def commit(staged: StagedBatch, config: Config, home: Home) -> tuple[lake.SnapshotWrite, Schema]:
    """Publish the first schema (if this batch defines it) and the snapshot.

    When another process published schema v1 first and it differs from this batch's, the batch
    is not committed here: `SchemaRace` tells the caller to stage it again against the winner.
    """
    schema = staged.schema
    pause("ingest.staged")
    with disk_full_raises("the lake", open_lake(home).root.where()):
        try:
            if staged.new_schema:
                winner = save_schema_if_absent(schema, open_lake(home).schema)
                if winner != schema:
                    discard(staged)
                    raise SchemaRace(staged.source)
                schema = winner
            written = staged.writer.commit(
                {
                    "source": staged.source,
                    "schema_version": schema.version,
                    "time_min": staged.time_min,
                    "time_max": staged.time_max,
                    "warnings": len(staged.report.warnings),
                    "format": staged.format,
                    "personal_data": staged.personal,
                }
            )
        except OSError:
            discard(staged)  # a full disk at commit: the staged file goes, the batch is retried
            raise
    return written, schema


class SchemaRace(Exception):
    """Another writer published the first schema meanwhile: stage the batch again."""


@dataclass(frozen=True)
class Outcome:
    """What became of one batch: accepted as a snapshot, or quarantined with reasons."""

    path: str
    accepted: bool
    report: ValidationReport | None
    write: lake.SnapshotWrite | None = None
    quarantine: lake.QuarantineRecord | None = None

    def as_dict(self) -> dict:
        if self.accepted:
            m = self.write.manifest
            return {
                "status": "accepted",
                "path": self.path,
                "snapshot": m.snapshot,
                "rows": m.rows,
                "new": self.write.new,
                "warnings": [i.as_dict() for i in self.report.warnings],
                "manifest": lake.asdict(m),
            }
        return {"status": "quarantined", "path": self.path, "reasons": self.quarantine.reasons}


def _bounded(report: ValidationReport) -> ValidationReport:
    """The report with every message bounded: a reason quotes at most a short excerpt."""
    return replace(
        report, issues=tuple(replace(i, message=bounded(i.message)) for i in report.issues)
    )


def unreadable(config: Config, error: Exception | str) -> list[dict]:
    """The one reason of a file that cannot be read as a batch (bounded, never a whole line)."""
    message = bounded(str(error))
    issue = make_issue(config, "unreadable", message) or Issue("unreadable", "block", message)
    return [issue.as_dict()]


@dataclass(frozen=True)
class Unreadable:
    """A file that could not be read as a batch: its path and the reason (naming the file)."""

    path: str
    reasons: list[dict]


def try_stage_file(
    path: str | Path,
    config: Config,
    home: Home,
    on_row_group: Callable[[int], None] | None = None,
) -> StagedBatch | Unreadable:
    """`stage_file`, with a file that cannot be read as a batch returned as `Unreadable`.

    A symlink leading out of its folder, a FIFO, device or socket is refused before anything
    opens it, or on its descriptor when it was swapped in after the check
    (`ctloop.lake.sources.open_source`). Only the errors of reading bad data (`InputError`,
    which names the file) are turned into a reason; a full disk raises `DiskFull` and anything
    else is a bug: both propagate.
    """
    try:
        return stage_file(path, config, home, on_row_group)
    except InputError as exc:
        return Unreadable(str(path), unreadable(config, exc))


def ingest_path(
    path: str | Path,
    config: Config,
    home: Home,
    on_row_group: Callable[[int], None] | None = None,
    compare: bool = False,
) -> Outcome:
    """Ingest one file end to end without Prefect (the CLI's flows wrap the same steps).

    Args:
        compare: also check drift against the newest accepted data (`compare-to-reference` of
            the ingest flow, with Evidently's report as `validation.evidently_report` says).
    """
    path = str(path)
    for _attempt in range(3):
        staged = try_stage_file(path, config, home, on_row_group)
        if isinstance(staged, Unreadable):
            record = lake.quarantine_batch(home, Path(path), staged.reasons)
            return Outcome(path, False, None, quarantine=record)
        html = None
        if compare:
            compared = compare_to_reference(staged, config, home)
            staged.report, html = staged.report.with_issues(compared.issues), compared.html
        if not staged.passed:
            discard(staged)
            record = lake.quarantine_batch(home, Path(path), staged.report.reasons(), html)
            return Outcome(path, False, staged.report, quarantine=record)
        try:
            written, _ = commit(staged, config, home)
        except SchemaRace:
            continue
        return Outcome(path, True, staged.report, written)
    raise InputError(f"{path}: the schema kept changing while ingesting")
