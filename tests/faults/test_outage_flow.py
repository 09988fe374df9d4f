"""A registry outage during a retrain: the run fails with the store named, and the champion
stays. Before, an unreadable alias was read as "no champion yet", so any candidate was blessed
as a first model and replaced the champion."""

from __future__ import annotations

import http.client
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from ctloop.data.demo import DemoScript, demo_config, generate_day
from ctloop.errors import StoreUnavailable
from ctloop.registry.store import CHAMPION, Registry

pytestmark = pytest.mark.slow

SCRIPT = DemoScript(rows_per_day=150)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proxy(upstream: int, down: threading.Event):
    """Forwards to the tracking server; while `down` is set, the alias lookups get a 503."""

    class Forward(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if down.is_set() and "registered-models/alias" in self.path:
                payload = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "503"}'
                status, headers = 503, {"Content-Type": "application/json"}
            else:
                conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=60)
                keep = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body or None, headers=keep)
                answer = conn.getresponse()
                payload, status = answer.read(), answer.status
                headers = {"Content-Type": answer.getheader("Content-Type", "application/json")}
                conn.close()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def tracking_server(tmp_path):
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--default-artifact-root",
            (tmp_path / "server-artifacts").as_uri(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the MLflow server did not start") from None
                time.sleep(0.5)
        yield port
    finally:
        process.terminate()
        process.wait(30)


def test_an_unreadable_champion_fails_the_run_and_stays_champion(
    prefect_harness, tracking_server, tmp_path, monkeypatch
):
    from flows.ingest import ingest
    from flows.retrain import RetrainRequest, retrain

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = threading.Event()
    proxy = _proxy(tracking_server, down)
    try:
        config = demo_config(str(tmp_path / "home"), rows_per_day=SCRIPT.rows_per_day)
        config.paths.tracking_uri = f"http://127.0.0.1:{proxy.server_address[1]}"
        config.gates.min_improvement = -1.0  # any candidate beats the champion it can read
        paths = []
        for day in range(4):
            frame = generate_day(SCRIPT, day, np.random.default_rng(day))
            paths.append(str(tmp_path / f"day{day}.csv"))
            frame.to_csv(paths[-1], index=False)
        ingest(paths, config)
        first = retrain(RetrainRequest(reason="first"), config)
        assert first["promoted"] and first["version"] == 1

        down.set()
        with pytest.raises(StoreUnavailable, match=r"cannot read alias 'champion'"):
            retrain(RetrainRequest(reason="during the outage"), config)
        down.clear()

        registry = Registry(config.paths.tracking_uri, config.registry_name)
        assert registry.by_alias(CHAMPION).version == 1
        assert [v.version for v in registry.versions()] == [1]
    finally:
        proxy.shutdown()
