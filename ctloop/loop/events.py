"""Publishing ctloop's events: a Prefect event (automations and deployment triggers react to
it) and, for the selected ones, the configured webhook."""

from __future__ import annotations

from typing import Any

from ctloop.config.settings import Config
from ctloop.loop.notify import notify
from ctloop.names import (  # noqa: F401 (the names publishers use, re-exported)
    BATCH_ACCEPTED,
    BATCH_QUARANTINED,
    DRIFT_DETECTED,
    MODEL_CHALLENGER,
    MODEL_PROMOTED,
    MODEL_REFUSED,
    MODEL_ROLLED_BACK,
    PERFORMANCE_DEGRADED,
    PROJECT_LABEL,
)


def publish(config: Config, event: str, resource_id: str, payload: dict[str, Any]) -> None:
    """Emit the event to Prefect (when Prefect is importable) and notify the webhook."""
    try:
        from prefect.events import emit_event
    except ImportError:  # the core runs without Prefect (e.g. inside the model server)
        emit_event = None
    if emit_event is not None:
        emit_event(
            event=event,
            resource={"prefect.resource.id": resource_id, PROJECT_LABEL: config.project},
            payload=payload,
        )
    notify(config.notifications, event, payload, config.project)
