"""Online performance of the champion: served predictions joined to true labels, compared with
what the champion scored on its holdout when it was blessed (the performance-decay trigger)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ctloop.config.home import home_of
from ctloop.config.settings import Config
from ctloop.loop import triggers
from ctloop.model.evaluate import higher_is_better
from ctloop.registry.store import CHAMPION, Registry


@dataclass(frozen=True)
class OnlinePerformance:
    version: int | None
    metric_name: str | None
    online: float | None
    baseline: float | None
    labelled: int
    first_served: str | None
    decision: triggers.RetrainDecision

    def as_dict(self) -> dict:
        return asdict(self)


ONLINE_METRICS = ("roc_auc", "accuracy", "rmse", "mae")


def _log_url(config: Config) -> str:
    from ctloop.serving.predlog import default_log_url

    return config.serving.prediction_log_url or default_log_url(home_of(config).root)


def served_feedback(config: Config) -> pd.DataFrame:
    """Served predictions (not shadow) joined to their true labels; empty before any log."""
    from ctloop.serving.predlog import SERVED, PredictionLog

    url = _log_url(config)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return pd.DataFrame()
    log = PredictionLog(url)
    try:
        joined = log.joined()
    finally:
        log.close()
    return joined if joined.empty else joined[joined["role"] == SERVED]


def check_online_performance(
    config: Config, registry: Registry, joined: pd.DataFrame | None = None
) -> OnlinePerformance:
    """Has the champion decayed on labelled live traffic?

    Args:
        joined: `served_feedback(config)`, when the caller already read it.
    """
    from ctloop.serving.predlog import online_metrics

    rules = config.triggers
    champion = registry.by_alias(CHAMPION)
    nothing = triggers.RetrainDecision(False, triggers.PERFORMANCE, "no champion or no feedback")
    if champion is None:
        return OnlinePerformance(None, None, None, None, 0, None, nothing)
    joined = served_feedback(config) if joined is None else joined
    if not joined.empty:
        joined = joined[joined["version"] == champion.version]
    rows = online_metrics(joined, str(config.dataset.task)) if not joined.empty else []
    row = rows[0] if rows else {}
    primary = config.gates.primary_metric
    name = primary if primary in row else next((m for m in ONLINE_METRICS if m in row), None)
    baseline = None
    if name is not None:
        run = registry.client.get_run(champion.run_id)
        baseline = run.data.metrics.get(f"holdout_{name}")
    online = row.get(name) if name else None
    labelled = int(row.get("labelled", 0))
    first = None
    if not joined.empty:
        first = datetime.fromtimestamp(float(joined["ts"].min()), UTC).isoformat()
    decision = triggers.decide_performance(
        online, baseline, labelled, rules, higher_is_better(name) if name else True
    )
    return OnlinePerformance(champion.version, name, online, baseline, labelled, first, decision)
