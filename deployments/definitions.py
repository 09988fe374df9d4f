"""Every flow as a Prefect deployment: schedules, event triggers and concurrency in one place.

`build_deployments(config)` returns the deployments; `serve_deployments(config)` runs them in this
process (`prefect serve` style), so a schedule, a `ctloop.batch.accepted` event or a
`ctloop.drift.detected`, a `ctloop.performance.degraded` or a `ctloop.performance.estimated_drop`
event starts the same `retrain` deployment.
"""

from __future__ import annotations

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron, Interval

from ctloop.config.settings import Config
from ctloop.names import (
    BATCH_ACCEPTED,
    DRIFT_DETECTED,
    PERFORMANCE_DEGRADED,
    PERFORMANCE_ESTIMATED_DROP,
    PROJECT_LABEL,
)
from flows.ingest import ingest, ingest_landing
from flows.monitor import monitor
from flows.retrain import retrain
from flows.score_batch import score_batch

# module paths, so a runner in any working directory finds the flows of the installed package
MODULE = EntrypointType.MODULE_PATH


def _project_match(config: Config) -> dict[str, str]:
    return {PROJECT_LABEL: config.project}


ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def build_deployments(config: Config) -> list:
    """Every flow of one project as a deployment: retrain, monitor, ingest, ingest-landing,
    score-batch."""
    params = {"config": config.model_dump(mode="json")}
    common = {"tags": ["ctloop", config.project], "entrypoint_type": MODULE}
    return [
        _retrain_deployment(config, params, common),
        _monitor_deployment(config, params, common),
        ingest.to_deployment(
            name="ingest",
            description="Ingest the files given as a parameter into the lake.",
            parameters={**params, "paths": []},
            **common,
        ),
        ingest_landing.to_deployment(
            name="ingest-landing",
            description="Ingest every new file of the watched landing folder, each exactly once.",
            parameters=params,
            concurrency_limit=ONE_AT_A_TIME,
            **common,
        ),
        score_batch.to_deployment(
            name="score-batch",
            description="Score a file or snapshot with the champion and write the predictions.",
            parameters=params,
            **common,
        ),
    ]


def _retrain_deployment(config: Config, params: dict, common: dict):
    """One retrain deployment for all six triggers: manual, schedule, new data, drift, decay,
    and estimated decay."""
    schedules = []
    if config.triggers.schedule_cron:
        request = {"trigger": "schedule", "reason": "scheduled retrain"}
        schedules.append(
            Cron(config.triggers.schedule_cron, parameters={**params, "request": request})
        )
    match = _project_match(config)

    def on(event: str, trigger: str, reason: str, why: str) -> DeploymentEventTrigger:
        # the rules (bootstrap, min new rows, post-drift rows, cooldown) are checked in the run
        request = {"trigger": trigger, "reason": reason, "check_rules": True}
        return DeploymentEventTrigger(
            name=f"retrain-on-{trigger.replace('_', '-')}",
            description=f"ctloop ({config.project}): {why} The run checks the trigger rules "
            "(config `triggers:`) and ends in state Skipped, with the reason, when they do "
            "not hold.",
            expect={event},
            match=match,
            parameters={**params, "request": request},
        )

    return retrain.to_deployment(
        name="retrain",
        description="Retrain, bless against the champion, register and promote.",
        schedules=schedules,
        concurrency_limit=ONE_AT_A_TIME,
        parameters={**params, "request": {"trigger": "manual", "reason": "manual run"}},
        triggers=[
            on(
                BATCH_ACCEPTED,
                "new_data",
                "new data accepted",
                f"retrain when a batch is accepted into the lake ({BATCH_ACCEPTED}): a first "
                "model after `bootstrap_rows` labelled rows, then every `min_new_rows`.",
            ),
            on(
                DRIFT_DETECTED,
                "drift",
                "{{ event.payload.reason }}",
                f"retrain when the monitor reports drift ({DRIFT_DETECTED}), once "
                "`drift_min_rows` labelled rows arrived since its onset.",
            ),
            on(
                PERFORMANCE_DEGRADED,
                "performance",
                "{{ event.payload.reason }}",
                f"retrain when the champion's online metric falls `performance_drop` below its "
                f"holdout value ({PERFORMANCE_DEGRADED}).",
            ),
            on(
                PERFORMANCE_ESTIMATED_DROP,
                "estimated_drop",
                "{{ event.payload.reason }}",
                "retrain when the label-free estimate of the champion's metric on a features "
                f"batch falls `performance_drop` below its holdout value "
                f"({PERFORMANCE_ESTIMATED_DROP}), once `drift_min_rows` labelled rows arrived "
                "since the batch.",
            ),
        ],
        **common,
    )


def _monitor_deployment(config: Config, params: dict, common: dict):
    """Monitor after every accepted batch and every `triggers.monitor_every_minutes`."""
    every = config.triggers.monitor_every_minutes
    return monitor.to_deployment(
        name="monitor",
        description="Drift of the newest snapshot against the champion's training window.",
        parameters=params,
        schedules=[Interval(every * 60, parameters=params)] if every else [],
        concurrency_limit=ONE_AT_A_TIME,
        triggers=[
            DeploymentEventTrigger(
                name="monitor-on-batch",
                description=f"ctloop ({config.project}): check drift and online performance "
                f"after every accepted batch ({BATCH_ACCEPTED}).",
                expect={BATCH_ACCEPTED},
                match=_project_match(config),
                parameters=params,
            )
        ],
        **common,
    )


def serve_deployments(config: Config) -> None:
    """Register the deployments with the Prefect API and run them here until interrupted."""
    from prefect import serve

    serve(*build_deployments(config))
