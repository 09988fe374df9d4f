"""Ingest stage: stream a file into a staged snapshot, then commit it or quarantine the file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ctloop.config.settings import Config
from ctloop.gates.reports import issues_markdown
from ctloop.ingest import stage as ingestion
from ctloop.lake import snapshots as lake
from ctloop.loop import events
from ctloop.stores.home import home_of


@task(name="read-batch", cache_policy=NO_CACHE, retries=0)
def read_batch(path: str) -> pd.DataFrame:
    """Read a CSV or Parquet file as delivered (raises InputError naming the file)."""
    return lake.read_batch(path)


@task(name="stage-batch", cache_policy=NO_CACHE, retries=0)
def stage_batch(path: str, config: Config) -> ingestion.StagedBatch | ingestion.Unreadable:
    """Read in chunks, type to the schema, profile, hash and write a temporary snapshot.

    A file that cannot be read as a batch is an outcome, not a failure: it comes back as
    `Unreadable` with its reason (the flow quarantines it), and the task run completes.
    """
    staged = ingestion.try_stage_file(path, config, home_of(config).ensure())
    if isinstance(staged, ingestion.Unreadable):
        get_run_logger().warning("%s", staged.reasons[0]["message"])
    return staged


@task(name="commit-snapshot", cache_policy=NO_CACHE)
def commit_snapshot(staged: ingestion.StagedBatch, config: Config) -> lake.SnapshotWrite | None:
    """Make the staged batch an immutable snapshot (never cached: a side effect) and announce it.

    Returns None when another process published the first schema meanwhile (stage it again).
    """
    home = home_of(config).ensure()
    try:
        written, _schema = ingestion.commit(staged, config, home)
    except ingestion.SchemaRace:
        return None
    m = written.manifest
    events.publish(
        config,
        events.BATCH_ACCEPTED,
        f"ctloop.snapshot.{m.snapshot}",
        {"snapshot": m.snapshot, "rows": m.rows, "new": written.new, "source": staged.source},
    )
    if staged.report.warnings:
        create_markdown_artifact(
            markdown=issues_markdown(
                staged.source, "Accepted with warnings", staged.report.reasons()
            ),
            key="batch-warnings",
            description=f"Warnings on {Path(staged.source).name}",
        )
    return written


@task(name="quarantine-batch", cache_policy=NO_CACHE)
def quarantine_batch(
    path: str,
    reasons: list[dict],
    config: Config,
    staged: ingestion.StagedBatch | None = None,
    html: str | None = None,
) -> lake.QuarantineRecord:
    """Drop the staged data, keep the rejected file with its reasons, publish them, and alert."""
    if staged is not None:
        ingestion.discard(staged)
    home = home_of(config).ensure()
    record = lake.quarantine_batch(home, Path(path), reasons, html)
    report = f"{record.folder}/README.md"
    markdown = issues_markdown(path, "Quarantined", reasons)
    markdown += f"\n\nQuarantine folder: `{record.folder}` (summary: [README.md]({report})"
    if html:
        markdown += f", Evidently report: [report.html]({record.folder}/report.html)"
    create_markdown_artifact(
        markdown=markdown + ")",
        key="quarantined-batch",
        description=f"Why {Path(path).name} was quarantined",
    )
    record_data_report(
        config,
        "quarantine",
        Path(path).name,
        markdown,
        {"blocking_checks": sum(r.get("severity") == "block" for r in reasons)},
        [
            p
            for p in (f"{record.folder}/reasons.json", f"{record.folder}/report.html")
            if Path(p).exists()
        ],
    )
    events.publish(
        config,
        events.BATCH_QUARANTINED,
        f"ctloop.file.{Path(path).name}",
        {"path": path, "folder": record.folder, "reasons": reasons},
    )
    return record


def record_data_report(
    config: Config, kind: str, name: str, markdown: str, metrics: dict, files: list[str]
) -> None:
    """The report as a run of MLflow's `<project>-data` experiment; never fails the ingest."""
    from ctloop.registry.store import open_registry

    try:
        open_registry(config).log_report(kind, name, markdown, metrics, None, files)
    except Exception as exc:  # noqa: BLE001 - a tracking outage must not lose the batch
        get_run_logger().warning("could not record the %s report in MLflow: %s", kind, exc)
