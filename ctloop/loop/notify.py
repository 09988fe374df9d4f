"""Notifications: a JSON webhook for the events people act on (quarantine, drift, decay and
estimated decay of the champion's metric, refused blessing, promotion, rollback). Failures to
notify are logged, never raised: an alert channel that is down must not stop ingestion or
training."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

from ctloop.config.settings import NotificationConfig

log = logging.getLogger("ctloop.notify")


def notify(cfg: NotificationConfig, event: str, payload: dict, project: str = "ctloop") -> bool:
    """POST `{"event", "project", "at", "payload"}` to the webhook when `event` is selected.

    Returns True when delivered (2xx), False when not configured, not selected or failed after
    the configured retries.
    """
    if not cfg.webhook_url or (cfg.events and event not in cfg.events):
        return False
    body = json.dumps(
        {
            "event": event,
            "project": project,
            "at": datetime.now(UTC).isoformat(),
            "payload": payload,
        },
        default=str,
    ).encode()
    headers = {"content-type": "application/json", "user-agent": "ctloop"}
    if cfg.token:
        headers["authorization"] = f"Bearer {cfg.token}"
    for attempt in range(cfg.retries + 1):
        request = urllib.request.Request(cfg.webhook_url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=cfg.timeout_seconds) as response:
                if 200 <= response.status < 300:
                    return True
        except (urllib.error.URLError, OSError) as exc:
            log.warning("webhook %s failed (attempt %d): %s", cfg.webhook_url, attempt + 1, exc)
        time.sleep(min(0.5 * 2**attempt, 5))
    return False


def notify_in_background(
    cfg: NotificationConfig, event: str, payload: dict, project: str = "ctloop"
) -> None:
    """`notify` on a daemon thread: a request path never waits for the webhook."""
    import threading

    if cfg.webhook_url:
        threading.Thread(
            target=notify, args=(cfg, event, payload, project), daemon=True, name="ctloop-notify"
        ).start()
