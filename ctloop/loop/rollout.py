"""Canary rollout: a blessed challenger serves a share of traffic; once enough of its served
predictions have true labels, it is promoted when it beats the champion online, or rolled back
(its alias removed) when it loses."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from ctloop.config.settings import Config
from ctloop.gates.verdict import BLOCK, INFO, Verdict
from ctloop.model import metrics as m
from ctloop.registry.store import CHALLENGER, CHAMPION, Registry

PROMOTE = "promote"
ROLLBACK = "rollback"
WAIT = "wait"


@dataclass(frozen=True)
class RolloutDecision:
    action: str
    reason: str
    champion: int | None = None
    challenger: int | None = None
    metric: str | None = None
    champion_online: float | None = None
    challenger_online: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def verdict(self) -> Verdict:
        """The canary decision as a verdict: a promotion passes, a rollback fails (it blocks),
        a wait fails for information only (nothing changes yet)."""
        severity = INFO if self.action == WAIT else BLOCK
        return Verdict("canary", self.action == PROMOTE, (self.reason,), severity, self.as_dict())


def decide_rollout(
    champion: dict | None,
    challenger: dict | None,
    metric: str,
    min_rows: int,
    margin: float,
) -> RolloutDecision:
    """Compare the two versions' online metrics (rows of `online_metrics`, served role only)."""
    if challenger is None:
        return RolloutDecision(WAIT, "no labelled traffic for the challenger yet")
    if champion is None:
        return RolloutDecision(WAIT, "no labelled traffic for the champion yet")
    short = [
        f"{name} has {row.get('labelled', 0)} < {min_rows} labelled rows"
        for name, row in (("champion", champion), ("challenger", challenger))
        if row.get("labelled", 0) < min_rows
    ]
    ids = {"champion": champion.get("version"), "challenger": challenger.get("version")}
    if short:
        return RolloutDecision(WAIT, "; ".join(short), **ids, metric=metric)
    mine, theirs = challenger.get(metric), champion.get(metric)
    if mine is None or theirs is None:
        return RolloutDecision(WAIT, f"{metric} not measurable online yet", **ids, metric=metric)
    values = {"champion_online": theirs, "challenger_online": mine}
    text = (
        f"online {metric}: challenger v{ids['challenger']} {mine:.4f} vs champion "
        f"v{ids['champion']} {theirs:.4f} over {challenger['labelled']}/{champion['labelled']} "
        f"labelled rows (gain {m.describe_gain(mine, theirs, metric)}, margin "
        f"{m.describe_threshold(margin, theirs, metric)})"
    )
    action = PROMOTE if m.better(mine, theirs, metric, margin) else ROLLBACK
    return RolloutDecision(action, text, **ids, metric=metric, **values)


def online_rows(
    config: Config, registry: Registry, joined: pd.DataFrame | None = None
) -> tuple[dict | None, dict | None, str]:
    """The online metric rows of the champion and the challenger (served traffic only).

    Args:
        joined: `served_feedback(config)`, when the caller already read it.
    """
    from ctloop.monitor.performance import ONLINE_METRICS, served_feedback
    from ctloop.stores.predlog import online_metrics

    champion, challenger = registry.by_alias(CHAMPION), registry.by_alias(CHALLENGER)
    metric = config.gates.primary_metric
    if champion is None or challenger is None:
        return None, None, metric
    joined = served_feedback(config) if joined is None else joined
    if joined.empty:
        return None, None, metric
    rows = {r["version"]: r for r in online_metrics(joined, str(config.dataset.task))}
    mine, theirs = rows.get(challenger.version), rows.get(champion.version)
    if metric not in (mine or {}) or metric not in (theirs or {}):
        metric = next(
            (m for m in ONLINE_METRICS if m in (mine or {}) and m in (theirs or {})), metric
        )
    return theirs, mine, metric


def apply_rollout(
    config: Config, registry: Registry, joined: pd.DataFrame | None = None
) -> RolloutDecision:
    """Decide from the prediction log and move the aliases accordingly."""
    champion, challenger, metric = online_rows(config, registry, joined)
    rules = config.triggers
    decision = decide_rollout(
        champion, challenger, metric, rules.rollout_min_rows, rules.rollout_margin
    )
    if decision.action == PROMOTE:
        registry.set_alias(CHAMPION, decision.challenger)
        registry.delete_alias(CHALLENGER)
    elif decision.action == ROLLBACK:
        registry.delete_alias(CHALLENGER)
    return decision
