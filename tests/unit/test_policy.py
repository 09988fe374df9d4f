"""The live policy decides from a `LoopState` alone: no store is opened to decide."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ctloop.config.settings import TriggerConfig
from ctloop.lake.snapshots import Manifest
from ctloop.loop.policy import LoopState, decide
from ctloop.loop.triggers import PendingDrift


def manifest(name: str, rows: int, end: str) -> Manifest:
    return Manifest(name, "x" * 64, f"{name}.csv", rows, ["a"], 1, end, end[:10], end)


DAYS = [manifest(f"s{i}", 600, f"2026-01-0{i}T23:00:00") for i in range(1, 6)]
RULES = TriggerConfig(bootstrap_rows=1000, min_new_rows=1000, drift_min_rows=1000)


def state(**changes) -> LoopState:
    base = dict(
        manifests=tuple(DAYS),
        champion_snapshots=None,
        pending=None,
        last_retrain_at=None,
        last_retrain_by=None,
    )
    return LoopState(**{**base, **changes})


def test_no_champion_bootstraps_on_enough_rows():
    decision = decide(state(manifests=tuple(DAYS[:1])), RULES)
    assert (decision.retrain, decision.trigger) == (False, "new_data")
    assert "have 600" in decision.reason
    assert decide(state(), RULES).retrain is True


def test_new_rows_count_from_the_end_of_the_champions_own_snapshots():
    # the champion saw s1..s3: s4 and s5 are 1200 new rows >= 1000
    assert decide(state(champion_snapshots=("s1", "s2", "s3")), RULES).retrain is True
    # it saw s1..s4: only s5's 600 rows are new
    held = decide(state(champion_snapshots=("s1", "s2", "s3", "s4")), RULES)
    assert held.retrain is False and "600 new labelled rows" in held.reason


def test_pending_drift_waits_for_rows_since_its_onset():
    pending = PendingDrift("2026-01-04T00:00:00", "2026-01-04T01:00:00", ["share 0.5"])
    decision = decide(state(champion_snapshots=("s1",), pending=pending), RULES)
    assert (decision.retrain, decision.trigger, decision.since) == (True, "drift", pending.since)
    later = PendingDrift("2026-01-05T00:00:00", "2026-01-05T01:00:00", ["share 0.5"])
    waiting = decide(state(champion_snapshots=("s1",), pending=later), RULES)
    assert waiting.retrain is False and "600 of 1000" in waiting.reason


def test_cooldown_holds_unless_ignored():
    rules = RULES.model_copy(update={"cooldown_minutes": 60})
    recent = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    current = state(champion_snapshots=("s1",), last_retrain_at=recent)
    assert decide(current, rules).retrain is False
    assert "cooldown" in decide(current, rules).reason
    assert decide(current, rules, ignore_cooldown=True).retrain is True
