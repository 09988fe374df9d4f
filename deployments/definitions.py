"""Every flow as a Prefect deployment: schedules, event triggers and concurrency in one place.

`build_deployments(config)` returns the deployments; `serve_deployments(config)` runs them in this
process (`prefect serve` style), so a schedule, a `ctloop.batch.accepted` event or a
`ctloop.drift.detected` event starts the same `retrain` deployment.
"""

from __future__ import annotations

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from ctloop.config import Config
from flows.ingest import ingest
from flows.monitor import monitor
from flows.retrain import retrain

BATCH_ACCEPTED = "ctloop.batch.accepted"
DRIFT_DETECTED = "ctloop.drift.detected"
PERFORMANCE_DEGRADED = "ctloop.performance.degraded"


def _project_match(config: Config) -> dict[str, str]:
    return {"ctloop.project": config.project}


def build_deployments(config: Config) -> list:
    """The retrain, monitor and ingest deployments of one project."""
    params = {"config": config.model_dump(mode="json")}
    match = _project_match(config)
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
    )
    schedules = []
    if config.triggers.schedule_cron:
        schedules.append(
            Cron(
                config.triggers.schedule_cron,
                parameters={
                    **params,
                    "request": {"trigger": "schedule", "reason": "scheduled retrain"},
                },
            )
        )

    def on(event: str, trigger: str, reason: str, check_rules: bool) -> DeploymentEventTrigger:
        return DeploymentEventTrigger(
            name=f"retrain-on-{trigger.replace('_', '-')}",
            expect={event},
            match=match,
            parameters={
                **params,
                "request": {"trigger": trigger, "reason": reason, "check_rules": check_rules},
            },
        )

    retrain_deployment = retrain.to_deployment(
        name="retrain",
        description="Retrain, bless against the champion, register and promote.",
        schedules=schedules,
        concurrency_limit=one_at_a_time,
        parameters={**params, "request": {"trigger": "manual", "reason": "manual run"}},
        triggers=[
            # new data: the rule (min new rows, bootstrap) is checked inside the run
            on(BATCH_ACCEPTED, "new_data", "new data accepted", check_rules=True),
            on(DRIFT_DETECTED, "drift", "{{ event.payload.reasons }}", check_rules=True),
            on(PERFORMANCE_DEGRADED, "performance", "{{ event.payload.reason }}", False),
        ],
        tags=["ctloop", config.project],
    )
    monitor_deployment = monitor.to_deployment(
        name="monitor",
        description="Drift of the newest snapshot against the champion's training window.",
        parameters=params,
        triggers=[
            DeploymentEventTrigger(
                name="monitor-on-batch", expect={BATCH_ACCEPTED}, match=match, parameters=params
            )
        ],
        tags=["ctloop", config.project],
    )
    ingest_deployment = ingest.to_deployment(
        name="ingest",
        description="Ingest files given as a parameter into the lake.",
        parameters={**params, "paths": []},
        tags=["ctloop", config.project],
    )
    return [retrain_deployment, monitor_deployment, ingest_deployment]


def serve_deployments(config: Config) -> None:
    """Register the deployments with the Prefect API and run them here until interrupted."""
    from prefect import serve

    serve(*build_deployments(config))
