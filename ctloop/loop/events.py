"""Publishing ctloop's events: a Prefect event (automations and deployment triggers react to
it) and, for the selected ones, the configured webhook."""

from __future__ import annotations

from typing import Any

from ctloop.config.settings import Config
from ctloop.loop.notify import notify

BATCH_ACCEPTED = "ctloop.batch.accepted"
BATCH_QUARANTINED = "ctloop.batch.quarantined"
DRIFT_DETECTED = "ctloop.drift.detected"
PERFORMANCE_DEGRADED = "ctloop.performance.degraded"
MODEL_REFUSED = "ctloop.model.refused"
MODEL_PROMOTED = "ctloop.model.promoted"
MODEL_CHALLENGER = "ctloop.model.challenger"
MODEL_ROLLED_BACK = "ctloop.model.rolled_back"


def publish(config: Config, event: str, resource_id: str, payload: dict[str, Any]) -> None:
    """Emit the event to Prefect (when Prefect is importable) and notify the webhook."""
    try:
        from prefect.events import emit_event
    except ImportError:  # the core runs without Prefect (e.g. inside the model server)
        emit_event = None
    if emit_event is not None:
        emit_event(
            event=event,
            resource={"prefect.resource.id": resource_id, "ctloop.project": config.project},
            payload=payload,
        )
    notify(config.notifications, event, payload, config.project)
