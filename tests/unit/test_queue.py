"""Queued retrain runs a decision covers: which are cancelled, which stay queued."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ctloop.config.settings import TriggerConfig
from ctloop.lake.snapshots import Manifest
from ctloop.loop.queue import QueuedRun, cancel_message, covered_runs, covers_queue, rule_checked
from ctloop.loop.triggers import RetrainDecision, decide_retrain

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEPLOYMENT = "dep-retrain"
CONFIG = {"project": "loans", "paths": {"home": "/h"}}
EVENT = {"config": CONFIG, "request": {"trigger": "drift", "reason": "x", "check_rules": True}}
MANUAL = {"config": CONFIG, "request": {"trigger": "manual", "reason": "manual run"}}


def run(name: str, seconds: float, state: str = "AwaitingConcurrencySlot", **kw) -> QueuedRun:
    return QueuedRun(
        id=name,
        created=T0 + timedelta(seconds=seconds),
        state=state,
        parameters=kw.pop("parameters", EVENT),
        deployment=kw.pop("deployment", DEPLOYMENT),
        name=f"retrain-{name}",
    )


def choose(runs: list[QueuedRun], decided_at: datetime = T0, keep: int = 0) -> list[str]:
    chosen = covered_runs(
        runs,
        this_run="me",
        deployment=DEPLOYMENT,
        decided_at=decided_at,
        parameters=EVENT,
        keep=keep,
    )
    return [r.id for r in chosen]


def test_waiting_rule_checked_runs_created_before_the_decision_are_covered():
    runs = [
        run("late", -3, "Late"),
        run("slot", -5),
        run("scheduled", -4, "Scheduled"),
        run("pending", -2, "Pending"),
    ]
    assert choose(runs) == ["slot", "scheduled", "late", "pending"]  # oldest first


def test_runs_created_at_or_after_the_decision_stay_queued():
    runs = [run("before", -1), run("at", 0), run("after", 7)]
    assert choose(runs) == ["before"]


def test_manual_runs_other_deployments_and_started_runs_are_never_covered():
    runs = [
        run("manual", -5, parameters=MANUAL),
        run("no-request", -5, parameters={"config": CONFIG}),
        run("other", -5, deployment="dep-monitor"),
        run("running", -5, "Running"),
        run("retrying", -5, "AwaitingRetry"),  # it ran once: its worker was lost
        run("paused", -5, "Paused"),
        run("done", -5, "Completed"),
        run("me", -5),  # the deciding run itself
        run("queued", -5),
    ]
    assert choose(runs) == ["queued"]


def test_a_run_with_files_to_ingest_or_another_config_is_not_covered():
    with_paths = {**EVENT, "paths": ["/landing/day.csv"]}
    other_config = {**EVENT, "config": {**CONFIG, "project": "churn"}}
    runs = [run("paths", -5, parameters=with_paths), run("config", -5, parameters=other_config)]
    assert choose(runs) == []
    assert rule_checked({**EVENT, "paths": []})


def test_a_run_that_trains_keeps_the_newest_covered_run_queued():
    runs = [run("a", -9), run("b", -3), run("c", -6)]
    assert choose(runs, keep=1) == ["a", "c"]
    assert choose(runs[:1], keep=1) == []
    assert choose(runs, keep=0) == ["a", "c", "b"]


def test_only_a_cooldown_skip_covers_nothing():
    assert covers_queue(RetrainDecision(True, "drift", "ready"))
    assert covers_queue(RetrainDecision(False, "new_data", "100 new labelled rows < 3000"))
    assert not covers_queue(RetrainDecision(False, "new_data", "cooldown", cooldown=True))


def test_the_rules_mark_a_cooldown_skip():
    rules = TriggerConfig(bootstrap_rows=100, min_new_rows=100, cooldown_minutes=30)
    data = [
        Manifest(snapshot="s1", sha256="0" * 64, source="d.csv", rows=500, columns=["t"],
                 schema_version=1, arrived_at=T0.isoformat(), time_min=T0.isoformat(),
                 time_max=T0.isoformat())
    ]  # fmt: skip
    held = decide_retrain(
        data, None, True, None, rules, last_retrain_at=T0.isoformat(), now=T0 + timedelta(minutes=5)
    )
    assert held.retrain is False and held.cooldown and not covers_queue(held)
    other = decide_retrain(data, "2099-01-01", True, None, rules)
    assert other.retrain is False and not other.cooldown and covers_queue(other)


def test_the_message_names_the_covering_run():
    message = cancel_message("retrain-drift", "1234")
    assert message.startswith("covered by retrain run retrain-drift (1234)")
    assert "read the state this event announced" in message
