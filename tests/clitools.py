"""Running the installed `ctloop` command as a user would, for the system tests in tests/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

CTLOOP = str(Path(sys.executable).parent / "ctloop")


def run(args, cwd, home=None, timeout=600, api=None) -> subprocess.CompletedProcess:
    """`ctloop ARGS` in `cwd`, without the caller's ctloop or Prefect settings (its own
    ephemeral Prefect server, as on a user's machine); `home` as CTLOOP_HOME; `api`: a running
    Prefect API to use instead (as under `ctloop up`: no ephemeral server to start)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTLOOP_", "PREFECT_"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if api is not None:
        env["PREFECT_API_URL"] = api
    if home is not None:
        env["CTLOOP_HOME"] = str(home)
    return subprocess.run(
        [CTLOOP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def one_error_line(proc, *needles) -> str:
    """The failed command's single `error:` line (no traceback), holding every needle."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def harness_api() -> str:
    """The URL of the worker's test Prefect API (call inside the `prefect_harness` fixture)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def prefect_api(port: int, path: str, body: dict | None = None):
    """POST `body` to a Prefect server's REST API on 127.0.0.1:`port` (`path` after /api)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api{path}",
        data=json.dumps(body or {}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def flow_runs(port: int, flow_name: str) -> list[dict]:
    """The flow runs (up to 200) of the flow named `flow_name` on that server."""
    flows = {f["id"]: f["name"] for f in prefect_api(port, "/flows/filter", {})}
    runs = prefect_api(port, "/flow_runs/filter", {"limit": 200})
    return [r for r in runs if flows.get(r["flow_id"]) == flow_name]
