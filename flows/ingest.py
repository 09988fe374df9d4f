"""`ingest`: landing files become validated, immutable snapshots, or quarantined with reasons."""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow

from ctloop.config import Config, load_config
from ctloop.validation import Issue
from tasks.ingest import quarantine_batch, read_batch, write_snapshot
from tasks.validate import current_schema, ensure_schema, gate_batch, validate_batch


def ingest_one(path: str, config: Config) -> dict:
    """Read, validate, gate, then snapshot or quarantine one file. Returns its outcome."""
    # -- read: an unreadable file is quarantined, not raised
    read = read_batch(path, return_state=True)
    if read.is_failed():
        error = read.result(raise_on_failure=False)
        reasons = [Issue("unreadable", "block", str(error)).as_dict()]
        record = quarantine_batch(path, reasons, config)
        return {"status": "quarantined", "path": path, "reasons": record.reasons}
    frame = read.result()

    # -- validate and gate
    schema = current_schema(config)
    report = validate_batch(frame, schema, config, path)
    gate = gate_batch(report, return_state=True)
    if gate.is_failed():
        record = quarantine_batch(path, report.reasons(), config)
        return {"status": "quarantined", "path": path, "reasons": record.reasons}

    # -- version: an immutable snapshot named by its content
    schema = ensure_schema(frame, schema, config)
    written = write_snapshot(frame, schema, config, path, len(report.warnings))
    m = written.manifest
    return {
        "status": "accepted",
        "path": path,
        "snapshot": m.snapshot,
        "rows": m.rows,
        "new": written.new,
        "warnings": [i.as_dict() for i in report.warnings],
        "manifest": asdict(m),
    }


@flow(name="ingest", log_prints=True)
def ingest(paths: list[str], config: Config | None = None) -> dict:
    """Ingest landing files into the lake: each is accepted as a snapshot or quarantined.

    Args:
        paths: CSV or Parquet files.
        config: the project config (defaults to `ctloop.yaml` and the environment).
    """
    config = config or load_config()
    accepted, quarantined = [], []
    for path in paths:
        outcome = ingest_one(str(path), config)
        if outcome["status"] == "accepted":
            accepted.append(
                {k: outcome[k] for k in ("path", "snapshot", "rows", "new", "warnings")}
            )
        else:
            quarantined.append({"path": outcome["path"], "reasons": outcome["reasons"]})
    return {"accepted": accepted, "quarantined": quarantined}
