"""Queued retrain runs a decision covers (pure: the runs are values read at the edge).

Every event-started retrain run reads the whole state when it decides (the lake, the champion,
the pending drift, `loop.policy.claim_decision`), and an event is emitted only after the state
it announces is written (a batch is committed before `ctloop.batch.accepted`, a pending drift
saved before `ctloop.drift.detected`). So a rule-checked run of the same deployment that was
created before a decision and still waits for the concurrency slot would decide on what this
decision already read: it is redundant, and cancelling it loses no event's effect, while each
queued run would otherwise be re-proposed every few seconds (one
`prefect.flow-run.AwaitingConcurrencySlot` event each time) until its turn.

Runs created after the decision may announce newer data and stay queued. A run that decides
to train leaves one covered run queued until it has finished: if it fails, that run decides
again, as the queue did before. A skip by the cooldown covers nothing: it depends on the clock,
and a run queued behind it may come after the cooldown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ctloop.loop.triggers import RetrainDecision

# the state names of a run that has not started: it waits for its time, a slot, or a process
WAITING = frozenset({"Scheduled", "AwaitingConcurrencySlot", "Late", "Pending"})


@dataclass(frozen=True)
class QueuedRun:
    """A flow run as the API lists it: enough to tell whether a decision covers it."""

    id: str
    created: datetime
    state: str  # the state's name (`AwaitingConcurrencySlot`), not its type
    parameters: dict = field(default_factory=dict)
    deployment: str | None = None
    name: str = ""


def rule_checked(parameters: dict) -> bool:
    """A run started by an event trigger (its request checks the rules) with nothing of its
    own to do first (no landing `paths` to ingest)."""
    request = parameters.get("request") or {}
    if not isinstance(request, dict):
        request = getattr(request, "model_dump", dict)()
    return bool(request.get("check_rules")) and not parameters.get("paths")


def covers_queue(decision: RetrainDecision) -> bool:
    """Whether a decision covers the runs queued before it: any but a skip by the cooldown."""
    return decision.retrain or not decision.cooldown


def covered_runs(
    runs: list[QueuedRun],
    *,
    this_run: str,
    deployment: str,
    decided_at: datetime,
    parameters: dict,
    keep: int = 0,
) -> list[QueuedRun]:
    """The runs a rule-checked run's decision covers, oldest first: of the same deployment
    and config, rule-checked, still waiting, created before `decided_at`; not this run.

    Args:
        runs: the deployment's runs, as listed (any state).
        this_run: the deciding run's id.
        deployment: the deciding run's deployment id.
        decided_at: the cut: a run created at or after it stays (compare times of one
            clock: the API's `created` with a time the API set, such as the run's start).
        parameters: the deciding run's parameters (a covered run has the same `config`).
        keep: how many of the newest covered runs to leave queued (a run that trains keeps
            one until it has succeeded).
    """
    covered = sorted(
        (
            run
            for run in runs
            if run.id != this_run
            and run.deployment == deployment
            and run.state in WAITING
            and run.created < decided_at
            and rule_checked(run.parameters)
            and run.parameters.get("config") == parameters.get("config")
        ),
        key=lambda run: (run.created, run.id),
    )
    return covered[: len(covered) - keep] if keep else covered


def cancel_message(run_name: str, run_id: str) -> str:
    """The message of a covered run's Cancelled state: which run covers it, and why."""
    return (
        f"covered by retrain run {run_name} ({run_id}), which read the state this event announced"
    )
