"""The performance-decay rule: the champion's online metric (served predictions joined to
feedback, `ctloop.monitor.performance`) against what it scored on its holdout when blessed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import pandas as pd

from ctloop.config.settings import Config
from ctloop.loop import triggers
from ctloop.monitor.performance import ONLINE_METRICS, served_feedback
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


def check_online_performance(
    config: Config, registry: Registry, joined: pd.DataFrame | None = None
) -> OnlinePerformance:
    """Has the champion decayed on labelled live traffic since the last retrain?

    Rows served before the last rule-started retrain began are not counted again: that retrain
    answered them (blessed, the champion changed; refused, the loss it saw was judged not
    worth a new model), so a lasting drop retrains once per `triggers.retrain_cost` of new
    loss, not on every check.

    Args:
        joined: `served_feedback(config)`, when the caller already read it.
    """
    from ctloop.lake.snapshots import list_snapshots
    from ctloop.stores.home import home_of
    from ctloop.stores.predlog import online_metrics

    rules = config.triggers
    champion = registry.by_alias(CHAMPION)
    nothing = triggers.RetrainDecision(False, triggers.PERFORMANCE, "no champion or no feedback")
    if champion is None:
        return OnlinePerformance(None, None, None, None, 0, None, nothing)
    joined = served_feedback(config) if joined is None else joined
    home = home_of(config)
    if not joined.empty:
        joined = joined[joined["version"] == champion.version]
        joined = joined[joined["ts"] >= _epoch(triggers.last_retrain_at(home))]
    rows = online_metrics(joined, str(config.dataset.task)) if not joined.empty else []
    row = rows[0] if rows else {}
    primary = config.gates.primary_metric
    name = primary if primary in row else next((m for m in ONLINE_METRICS if m in row), None)
    baseline = baseline_std = baseline_rows = None
    if name is not None:
        logged = registry.client.get_run(champion.run_id).data.metrics
        baseline = logged.get(f"holdout_{name}")
        baseline_std = logged.get(f"holdout_{name}_std")  # older runs have none: no noise guard
        baseline_rows = logged.get("holdout_rows")
    online = row.get(name) if name else None
    labelled = int(row.get("labelled", 0))
    first = None
    if not joined.empty:
        first = datetime.fromtimestamp(float(joined["ts"].min()), UTC).isoformat()
    decision = triggers.decide_performance(
        online,
        baseline,
        labelled,
        rules,
        name or primary,
        baseline_std,
        int(baseline_rows) if baseline_rows else None,
        batch_rows=triggers.mean_batch_rows(list_snapshots(home)),
    )
    return OnlinePerformance(champion.version, name, online, baseline, labelled, first, decision)


def _epoch(iso: str | None) -> float:
    """Seconds since the epoch of an ISO time (0: none)."""
    if not iso:
        return 0.0
    moment = datetime.fromisoformat(iso)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
