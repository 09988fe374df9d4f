"""`ingest`: landing files become validated, immutable snapshots, or quarantined with reasons."""

from __future__ import annotations

from prefect import flow

from ctloop.config.settings import Config, load_config
from ctloop.errors import InputError
from ctloop.ingest import landing
from ctloop.ingest.stage import Outcome, Unreadable
from ctloop.runlog import quiet_completed_tasks
from ctloop.stores.home import home_of
from flows.monitor import monitor
from tasks.ingest import commit_snapshot, quarantine_batch, stage_batch
from tasks.validate import compare_to_reference, gate_batch, log_findings


def ingest_one(path: str, config: Config) -> dict:
    """Stage, validate, gate, then commit or quarantine one file. Returns its outcome."""
    for _attempt in range(3):
        # -- read, type, profile and stage in one streamed pass; unreadable is quarantined
        staged = stage_batch(path, config)
        if isinstance(staged, Unreadable):
            record = quarantine_batch(path, staged.reasons, config)
            return Outcome(path, False, None, quarantine=record).as_dict()

        # -- validate: the batch's own checks, then against the reference window
        compared = compare_to_reference(staged, config)
        staged.report = log_findings(staged.report.with_issues(compared.issues))

        # -- gate
        if not gate_batch(staged.report).passed:
            record = quarantine_batch(path, staged.report.reasons(), config, staged, compared.html)
            return Outcome(path, False, staged.report, quarantine=record).as_dict()

        # -- version: an immutable snapshot named by its content
        written = commit_snapshot(staged, config)
        if written is None:
            continue  # another process published the first schema: stage again against it
        return Outcome(path, True, staged.report, written).as_dict()
    raise RuntimeError(f"{path}: the schema kept changing while ingesting")


def _summary(outcomes: list[dict]) -> dict:
    accepted, quarantined = [], []
    for outcome in outcomes:
        if outcome["status"] == "accepted":
            accepted.append(
                {k: outcome[k] for k in ("path", "snapshot", "rows", "new", "warnings")}
            )
        else:
            quarantined.append({"path": outcome["path"], "reasons": outcome["reasons"]})
    return {"accepted": accepted, "quarantined": quarantined}


@flow(name="ingest", log_prints=True, on_running=[quiet_completed_tasks])
def ingest(paths: list[str], config: Config | None = None) -> dict:
    """Ingest landing files into the lake: each is accepted as a snapshot or quarantined.

    Args:
        paths: CSV or Parquet files.
        config: the project config (defaults to `ctloop.yaml` and the environment).
    """
    config = config or load_config()
    return _summary([ingest_one(str(path), config) for path in paths])


def monitor_one(path: str, config: Config) -> dict:
    """A features batch (no target column) through the `monitor` flow: drift against the
    champion's data and the label-free estimate. A file the monitor cannot read is ingested
    instead, so it is quarantined with its reasons."""
    try:
        result = monitor(path, config, html_when="on_drift")
    except InputError:
        return ingest_one(path, config)
    return {"status": landing.MONITORED, "path": path} | {
        k: result[k] for k in ("drift", "reasons")
    }


@flow(name="ingest-landing", log_prints=True, on_running=[quiet_completed_tasks])
def ingest_landing(folder: str | None = None, config: Config | None = None) -> dict:
    """Ingest every new file of the landing folder exactly once (then move or mark it); a file
    of features without the target goes to the monitor instead (`monitored` in the answer).

    Args:
        folder: the landing folder (default `ingest.landing`, else `<home>/landing`).
        config: the project config (defaults to `ctloop.yaml` and the environment).
    """
    config = config or load_config()
    home = home_of(config).ensure()
    return landing.process_landing(
        landing.landing_folder(config, home, folder),
        config,
        lambda p: ingest_one(str(p), config),
        monitor=lambda p: monitor_one(str(p), config),
        home=home,
    )
