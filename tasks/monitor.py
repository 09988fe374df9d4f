"""Monitor stage: drift of a batch against the champion's training window, and the alert."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ctloop.config.settings import Config, DriftConfig
from ctloop.gates.reports import drift_markdown
from ctloop.loop.decay import OnlinePerformance, check_online_performance
from ctloop.loop.events import DRIFT_DETECTED, PERFORMANCE_DEGRADED, publish
from ctloop.monitor.drift import DriftSummary, detect_drift
from ctloop.monitor.performance import served_feedback
from tasks.ingest import record_data_report


@task(name="detect-drift", cache_policy=NO_CACHE)
def check_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    cfg: DriftConfig,
    html_path: str | None,
    html_when: str = "always",
) -> DriftSummary:
    path = Path(html_path) if html_path else None
    return detect_drift(reference, current, columns, cfg, path, html_when)


@task(name="publish-drift", cache_policy=NO_CACHE)
def publish_drift(
    source: str, summary: DriftSummary, html_path: str | None, config: Config
) -> None:
    """A Prefect artifact always; the `ctloop.drift.detected` event when the rule holds."""
    create_markdown_artifact(
        markdown=drift_markdown(source, summary, html_path),
        key="drift",
        description=f"Drift check of {Path(source).name}",
    )
    record_data_report(
        config,
        "drift",
        Path(source).name,
        drift_markdown(source, summary, html_path),
        {
            "drift": float(summary.drift),
            "drifted_share": summary.share,
            **{f"drift_score_{c.column}": c.score for c in summary.columns},
        },
        [html_path] if html_path else [],
    )
    if summary.drift:
        publish(
            config,
            DRIFT_DETECTED,
            f"ctloop.project.{config.project}",
            {
                "reason": "; ".join(summary.reasons),
                "source": source,
                "drifted_columns": summary.drifted_columns,
                "share": summary.share,
                "reasons": summary.reasons,
            },
        )


@task(name="check-online-performance", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def check_performance(config: Config, joined: pd.DataFrame) -> OnlinePerformance:
    """The champion's metric on labelled live traffic against its holdout metric; on decay,
    publishes `ctloop.performance.degraded`."""
    from ctloop.registry.store import open_registry

    result = check_online_performance(config, open_registry(config), joined)
    if result.decision.retrain:
        publish(
            config,
            PERFORMANCE_DEGRADED,
            f"ctloop.project.{config.project}",
            {"reason": result.decision.reason, **result.as_dict()},
        )
    return result


@task(name="decide-rollout", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def decide_canary(config: Config, joined: pd.DataFrame):
    """Promote a canary challenger that beats the champion online, or roll it back."""
    from ctloop.loop.events import MODEL_PROMOTED, MODEL_ROLLED_BACK
    from ctloop.loop.rollout import PROMOTE, ROLLBACK, apply_rollout
    from ctloop.registry.store import open_registry

    decision = apply_rollout(config, open_registry(config), joined)
    if decision.action in (PROMOTE, ROLLBACK):
        publish(
            config,
            MODEL_PROMOTED if decision.action == PROMOTE else MODEL_ROLLED_BACK,
            f"ctloop.model.{config.registry_name}",
            {**decision.as_dict(), "by": "canary rollout"},
        )
    return decision


@task(name="read-feedback", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def read_feedback(config: Config) -> pd.DataFrame:
    """Served predictions joined to their true labels, read once per monitor run."""
    return served_feedback(config)


@task(name="estimate-performance", cache_policy=NO_CACHE)
def estimate_performance(current: pd.DataFrame, config: Config) -> dict | None:
    """The champion's metric estimated on the batch without its labels (CBPE for classifiers,
    DLE for regression): a point of an MLflow line over time and a Prefect artifact. None when
    it cannot be estimated (a warning says why)."""
    from prefect import get_run_logger

    from ctloop.errors import CtloopError
    from ctloop.registry.estimator import estimate_version
    from ctloop.registry.store import open_registry

    try:
        answer = estimate_version(
            config, current, chunk_rows=max(len(current), 1), timestamp=config.dataset.timestamp
        )
    except CtloopError as exc:
        get_run_logger().warning("no performance estimate: %s", exc)
        return None
    except Exception as exc:  # noqa: BLE001 - a side output: drift and decay go on without it
        get_run_logger().warning(
            "no performance estimate (%s: %s); drift and decay checks are unaffected",
            type(exc).__name__,
            exc,
        )
        return None
    keys = ("metric", "version", "reference", "estimate", "ci_low", "ci_high", "rows", "realized")
    found = {k: answer[k] for k in keys if k in answer}
    metric = found["metric"]
    points = {f"estimated_{metric}": found["estimate"], f"estimated_{metric}_low": found["ci_low"]}
    points[f"estimated_{metric}_high"] = found["ci_high"]
    if found.get("reference") is not None:
        points[f"holdout_{metric}"] = found["reference"]
    if found.get("realized") is not None:
        points[f"realized_{metric}"] = found["realized"]
    series = f"estimate-v{found['version']}"
    clean = {k: v for k, v in points.items() if v is not None}
    if clean:
        open_registry(config).log_series(series, clean, {"ctloop.report": "estimate"})
    create_markdown_artifact(
        key="performance-estimate",
        markdown=(
            f"# Estimated {metric} of version {found['version']} (no labels used)\n\n"
            f"| rows | estimate | 95% interval | holdout |\n|---|---|---|---|\n"
            f"| {found['rows']} | {found['estimate']} | {found['ci_low']} - {found['ci_high']} "
            f"| {found.get('reference')} |\n"
        ),
        description=f"Label-free estimate of {metric}",
    )
    return found
