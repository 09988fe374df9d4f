"""Running the installed `ctloop` command as a user would, for the system tests in tests/."""

from __future__ import annotations

import os
import subprocess
import sys
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
