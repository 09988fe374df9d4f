"""The live retrain policy: what the loop knows is read once at the edge, then decided purely."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ctloop.config.settings import Config, TriggerConfig
from ctloop.lake import snapshots as lake
from ctloop.lake.snapshots import Manifest
from ctloop.loop import triggers
from ctloop.registry.store import CHAMPION, open_registry
from ctloop.stores.home import home_of


@dataclass(frozen=True)
class LoopState:
    """Everything the trigger rules look at, read from the stores at one moment."""

    manifests: tuple[Manifest, ...]
    champion_snapshots: tuple[str, ...] | None  # None: no champion yet
    pending: triggers.PendingDrift | None
    last_retrain_at: str | None
    last_retrain_by: str | None
    last_trained_end: str | None = None  # the data end of the last finished retrain


def window_ids(manifests: list[Manifest], config: Config, since: str | None = None) -> list[str]:
    """The training window of a retrain, the one rule of the live loop and of replay:
    whole snapshots of the newest `training.window_days`, reaching back to `training.min_rows`
    rows (a drift retrain: only from its onset `since`), capped at `training.max_rows`."""
    training = config.training
    return lake.select_window(
        manifests,
        training.window_days,
        since,
        training.max_rows,
        None if since else training.min_rows,
    )


def champion_end(state: LoopState) -> str | None:
    """The newest timestamp of the champion's training snapshots (None: no champion or none
    timestamped)."""
    if state.champion_snapshots is None:
        return None
    return triggers.data_end(list(state.manifests), state.champion_snapshots)


def read_state(config: Config) -> LoopState:
    """The edge: the lake's manifests, the champion's snapshots and the trigger state."""
    home = home_of(config)
    champion = open_registry(config).by_alias(CHAMPION)
    return LoopState(
        manifests=tuple(lake.list_snapshots(home)),
        champion_snapshots=tuple(champion.snapshots) if champion is not None else None,
        pending=triggers.load_pending(home),
        last_retrain_at=triggers.last_retrain_at(home),
        last_retrain_by=triggers.last_retrain_by(home),
        last_trained_end=triggers.last_trained_end(home),
    )


def decide(
    state: LoopState,
    rules: TriggerConfig,
    ignore_cooldown: bool = False,
    now: datetime | None = None,
) -> triggers.RetrainDecision:
    """What the trigger rules say about this state (pure: no store is read).

    Args:
        now: the clock of the cooldown (replay passes the batch's time; live: the wall clock).
    """
    return triggers.decide_retrain(
        list(state.manifests),
        champion_end(state),
        state.champion_snapshots is not None,
        state.pending,
        rules,
        last_retrain_at=None if ignore_cooldown else state.last_retrain_at,
        now=now,
        trained_end=state.last_trained_end,
    )


def decide_scheduled(state: LoopState, rules: TriggerConfig) -> triggers.RetrainDecision:
    """What a scheduled run does with this state (`triggers.decide_scheduled`; pure)."""
    return triggers.decide_scheduled(
        list(state.manifests),
        champion_end(state),
        state.champion_snapshots is not None,
        rules,
        trained_end=state.last_trained_end,
    )


def scheduled_decision(config: Config) -> triggers.RetrainDecision:
    """What a scheduled run does now, from the lake, the champion and the trigger state."""
    return decide_scheduled(read_state(config), config.triggers)


def current_decision(config: Config, ignore_cooldown: bool = False) -> triggers.RetrainDecision:
    """What the trigger rules say now, from the lake, the champion and any pending drift."""
    return decide(read_state(config), config.triggers, ignore_cooldown)


def claim_decision(config: Config, claimant: str | None = None) -> triggers.RetrainDecision:
    """The decision for a rule-checked run; when it says retrain, the cooldown starts now.

    A claimant (the flow run id) that made the last claim is the same run started again after
    its worker was lost: its own cooldown does not stop it.
    """
    state = read_state(config)
    resumed = claimant is not None and state.last_retrain_by == claimant
    decision = decide(state, config.triggers, ignore_cooldown=resumed)
    if decision.retrain:
        triggers.claim_retrain(home_of(config), by=claimant)
    return decision
