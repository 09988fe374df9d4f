"""Running the installed `ctloop` command as a user would, for the system tests in tests/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CTLOOP = str(Path(sys.executable).parent / "ctloop")


def run(args, cwd, home=None, timeout=600) -> subprocess.CompletedProcess:
    """`ctloop ARGS` in `cwd`, without the caller's ctloop or Prefect settings (its own
    ephemeral Prefect server, as on a user's machine); `home` as CTLOOP_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTLOOP_", "PREFECT_"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
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
