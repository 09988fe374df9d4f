"""The live retrain policy: the trigger rules applied to the lake, the registry and the state."""

from __future__ import annotations

from ctloop.config.home import home_of
from ctloop.config.settings import Config
from ctloop.lake import snapshots as lake
from ctloop.loop import triggers
from ctloop.registry.store import CHAMPION, open_registry


def current_decision(config: Config, ignore_cooldown: bool = False) -> triggers.RetrainDecision:
    """What the trigger rules say now, from the lake, the champion and any pending drift."""
    home = home_of(config)
    champion = open_registry(config).by_alias(CHAMPION)
    manifests = lake.list_snapshots(home)
    champion_end = None
    if champion is not None:
        by_id = {m.snapshot: m for m in manifests}
        ends = [by_id[s].time_max for s in champion.snapshots if s in by_id and by_id[s].time_max]
        champion_end = max(ends) if ends else None
    return triggers.decide_retrain(
        manifests,
        champion_end,
        champion is not None,
        triggers.load_pending(home),
        config.triggers,
        last_retrain_at=None if ignore_cooldown else triggers.last_retrain_at(home),
    )


def claim_decision(config: Config, claimant: str | None = None) -> triggers.RetrainDecision:
    """The decision for a rule-checked run; when it says retrain, the cooldown starts now.

    A claimant (the flow run id) that made the last claim is the same run started again after
    its worker was lost: its own cooldown does not stop it.
    """
    home = home_of(config)
    resumed = claimant is not None and triggers.last_retrain_by(home) == claimant
    decision = current_decision(config, ignore_cooldown=resumed)
    if decision.retrain:
        triggers.claim_retrain(home, by=claimant)
    return decision
