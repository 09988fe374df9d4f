"""`monitor`: drift of the newest batch against the champion's training window (Evidently)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from prefect import flow

from ctloop.config.settings import Config, load_config
from ctloop.lake import snapshots as lake
from ctloop.loop import triggers
from ctloop.registry.store import CHAMPION, open_registry
from ctloop.runlog import quiet_completed_tasks
from ctloop.stores.home import home_of
from ctloop.validate.checks import coerce_to_schema
from tasks.ingest import read_batch
from tasks.monitor import (
    check_drift,
    check_estimated_drop,
    check_performance,
    decide_canary,
    estimate_performance,
    publish_drift,
    read_feedback,
    settle_estimates,
)
from tasks.train import load_window


def _onset(frame: pd.DataFrame, config: Config) -> str:
    column = config.dataset.timestamp
    if column and column in frame.columns:
        first = pd.to_datetime(frame[column], errors="coerce", format="mixed").min()
        if pd.notna(first):
            return first.isoformat()
    return datetime.now(UTC).isoformat()


@flow(name="monitor", log_prints=True, on_running=[quiet_completed_tasks])
def monitor(
    path: str | None = None, config: Config | None = None, html_when: str = "always"
) -> dict:
    """Check one batch (a file, or the newest snapshot) for drift against the champion's data.

    When the drift rule holds, emits `ctloop.drift.detected` and records the drift as pending,
    so the next labelled data can retrain on what came after it; when the label-free estimate of
    the champion's metric drops, the same with `ctloop.performance.estimated_drop`.

    Args:
        path: a CSV or Parquet batch, labelled or not; the newest snapshot when None.
        config: the project config (defaults to `ctloop.yaml` and the environment).
        html_when: write Evidently's HTML report "always", "on_drift" or "never".
    """
    config = config or load_config()
    home = home_of(config).ensure()
    champion = open_registry(config).by_alias(CHAMPION)
    if champion is None:
        reasons = ["no champion yet: nothing to compare against"]
        return {"drift": False, "drifted_columns": [], "share": 0.0, "reasons": reasons} | {
            "source": path
        }

    # -- the batch and the reference (the champion's training window)
    if path is None:
        snapshots = lake.list_snapshots(home)
        newest = snapshots[-1].snapshot
        current = load_window([newest], config)
        source = f"snapshot {newest}"
    else:
        current, source = read_batch(path), path
    schema = lake.current_schema(home)
    if schema is not None:
        current = coerce_to_schema(current, schema)
    reference = load_window(champion.snapshots, config)

    # -- drift; the champion's metric estimated without labels, which may say the drift is
    # harmless (`triggers.drift_needs_estimated_drop`) or fire on its own; report, alert
    stem = Path(source).stem.replace(" ", "-")
    html = home.reports / f"drift-{stem}-{datetime.now(UTC):%Y%m%dT%H%M%S}.html"
    columns = [name for name, _kind in champion.signature]
    summary = check_drift(reference, current, columns, config.drift, str(html), html_when)
    html_path = str(html) if html.exists() else None
    estimate = estimate_performance(current, config, source)
    estimated = check_estimated_drop(estimate, config, source)
    verdict = triggers.judge_drift(summary.drift, estimate, config.triggers)
    publish_drift(source, summary, html_path, config, verdict)
    settled = settle_estimates(config)

    # -- online: the canary decision and the champion's performance on labelled traffic
    feedback = read_feedback(config)
    rollout = decide_canary(config, feedback)
    performance = check_performance(config, feedback)

    # -- what may retrain: an onset per change, the first recorded wins
    changes = triggers.changes_to_record(
        _onset(current, config),
        datetime.now(UTC).isoformat(),
        summary.reasons if verdict.retrains else None,
        estimated,
        performance.decision,
        performance.first_served,
    )
    triggers.record_changes(home, changes)
    reasons = [*summary.reasons, *([verdict.reason] if verdict.reason else [])]
    return {
        "drift": summary.drift,
        "drifted_columns": summary.drifted_columns,
        "share": summary.share,
        "reasons": reasons + ([estimated.reason] if estimated.retrain else []),
        "source": source,
        "champion": champion.version,
        "report": html_path,
        "performance": performance.as_dict(),
        "rollout": rollout.as_dict(),
        "estimate": estimate,
        "estimated_drop": {"fired": estimated.retrain, "reason": estimated.reason},
        "settled_estimates": settled,
    }
