"""The webhook notifier against a real local HTTP server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ctloop.config.settings import NotificationConfig
from ctloop.loop.notify import notify


@pytest.fixture
def webhook():
    received: list[dict] = []
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append({"body": json.loads(body), "auth": self.headers.get("authorization")})
            self.send_response(statuses.pop(0) if statuses else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received, statuses
    server.shutdown()


def test_selected_event_is_posted_with_token(webhook):
    url, received, _ = webhook
    cfg = NotificationConfig(webhook_url=url, token="s3cret")
    assert notify(cfg, "ctloop.drift.detected", {"share": 0.5}, "loans") is True
    assert received[0]["body"]["event"] == "ctloop.drift.detected"
    assert received[0]["body"]["project"] == "loans"
    assert received[0]["body"]["payload"] == {"share": 0.5}
    assert received[0]["auth"] == "Bearer s3cret"


def test_unselected_event_and_no_url_send_nothing(webhook):
    url, received, _ = webhook
    assert notify(NotificationConfig(webhook_url=url), "ctloop.batch.accepted", {}) is False
    assert notify(NotificationConfig(), "ctloop.drift.detected", {}) is False
    assert received == []


def test_a_failing_webhook_is_retried_then_given_up_without_raising(webhook):
    url, received, statuses = webhook
    statuses.extend([500, 200])
    cfg = NotificationConfig(webhook_url=url, retries=2)
    assert notify(cfg, "ctloop.model.promoted", {"version": 3}) is True
    assert len(received) == 2
    dead = NotificationConfig(webhook_url="http://127.0.0.1:9/none", retries=1, timeout_seconds=1)
    assert notify(dead, "ctloop.model.promoted", {}) is False
