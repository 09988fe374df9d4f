"""Monitor stage: drift of a batch against the champion's training window, and the alert."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ctloop.config.settings import Config, DriftConfig
from ctloop.gates.reports import drift_markdown
from ctloop.loop import triggers
from ctloop.loop.decay import OnlinePerformance, check_online_performance
from ctloop.loop.events import DRIFT_DETECTED, PERFORMANCE_DEGRADED, publish
from ctloop.monitor.drift import DriftSummary, detect_drift
from ctloop.monitor.performance import served_feedback
from ctloop.names import PERFORMANCE_ESTIMATED_DROP
from tasks.ingest import record_data_report

MAX_EVENT_COLUMNS = 100  # drifted column names an event lists (drifted_count: all)


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
    source: str,
    summary: DriftSummary,
    html_path: str | None,
    config: Config,
    verdict: triggers.DriftVerdict | None = None,
) -> None:
    """A Prefect artifact always; the `ctloop.drift.detected` event when the rule holds and the
    drift may retrain (`verdict`, from `triggers.judge_drift`; its reason joins the report's)."""
    import dataclasses

    if verdict is not None and verdict.reason:
        summary = dataclasses.replace(summary, reasons=[*summary.reasons, verdict.reason])
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
    if summary.drift and (verdict is None or verdict.retrains):
        publish(
            config,
            DRIFT_DETECTED,
            f"ctloop.project.{config.project}",
            {
                "reason": "; ".join(summary.reasons),
                "source": source,
                # bounded: a wide table must not make an event of unbounded size
                "drifted_columns": summary.drifted_columns[:MAX_EVENT_COLUMNS],
                "drifted_count": len(summary.drifted_columns),
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
def estimate_performance(
    current: pd.DataFrame, config: Config, source: str = "batch"
) -> dict | None:
    """The champion's metric estimated on the batch without its labels (CBPE for classifiers,
    DLE for regression): a point of an MLflow line over time and a Prefect artifact. None when
    it cannot be estimated (a warning says why)."""
    from prefect import get_run_logger

    from ctloop.errors import CtloopError
    from ctloop.registry.estimator import estimate_version, record_estimates, with_errors
    from ctloop.registry.store import open_registry

    try:
        answer = with_errors(
            estimate_version(
                config,
                current,
                chunk_rows=max(len(current), 1),
                timestamp=config.dataset.timestamp,
            )
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
    keys = ("metric", "version", "reference", "estimate", "ci_low", "ci_high", "rows")
    keys += ("realized", "error")
    found = {k: answer[k] for k in keys if k in answer}
    found["chunks"] = answer.get("chunks", [])
    metric = found["metric"]
    points = {f"estimated_{metric}": found["estimate"], f"estimated_{metric}_low": found["ci_low"]}
    points[f"estimated_{metric}_high"] = found["ci_high"]
    if found.get("reference") is not None:
        points[f"holdout_{metric}"] = found["reference"]
    if found.get("realized") is not None:
        points[f"realized_{metric}"] = found["realized"]
        points[f"estimate_error_{metric}"] = found["error"]
    series = f"estimate-v{found['version']}"
    clean = {k: v for k, v in points.items() if v is not None}
    if clean:
        registry = open_registry(config)
        run_id = registry.log_series(series, clean, {"ctloop.report": "estimate"})
        step = len(registry.client.get_metric_history(run_id, next(iter(clean)))) - 1
        if found.get("realized") is None:  # its labels may come later: kept to be settled
            record_estimates(config, found, source, run_id, step)
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


@task(name="check-estimated-drop", cache_policy=NO_CACHE)
def check_estimated_drop(
    estimate: dict | None, config: Config, source: str
) -> triggers.RetrainDecision:
    """The estimated-drop rule on the batch's estimate; when it fires, publishes
    `ctloop.performance.estimated_drop` (a Prefect event, and the webhook)."""
    decision = triggers.decide_estimated_drop(estimate, config.triggers)
    if decision.retrain:
        publish(
            config,
            PERFORMANCE_ESTIMATED_DROP,
            f"ctloop.project.{config.project}",
            {
                "reason": decision.reason,
                "source": source,
                **{k: estimate.get(k) for k in ("metric", "version", "reference", "rows")},
                **{k: estimate.get(k) for k in ("estimate", "ci_low", "ci_high")},
            },
        )
    return decision


@task(name="settle-estimates", cache_policy=NO_CACHE)
def settle_estimates(config: Config) -> list[dict]:
    """Earlier estimates whose rows' labels are now in the lake: the realized metric and the
    estimate's error set beside them (in the estimate log and on the MLflow series, at the
    estimate's step). A side output: a failure is a warning."""
    from prefect import get_run_logger

    from ctloop.registry.estimator import settle_estimates as settle
    from ctloop.registry.store import open_registry

    try:
        settled = settle(config)
        if settled:
            registry = open_registry(config)
            for entry in settled:
                metric, step = entry["metric"], entry.get("step") or 0
                for key, value in (
                    (f"realized_{metric}", entry["realized"]),
                    (f"estimate_error_{metric}", entry["error"]),
                ):
                    registry.client.log_metric(entry["series_run"], key, value, step=step)
    except Exception as exc:  # noqa: BLE001 - a side output: the monitor goes on without it
        get_run_logger().warning("estimates not settled (%s: %s)", type(exc).__name__, exc)
        return []
    return settled
