"""Test setup: Prefect state under the project's own folder, no telemetry, no network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".ctloop-test"

(STATE / "prefect").mkdir(parents=True, exist_ok=True)
# Before anything imports Prefect: a private Prefect home, analytics off.
os.environ["PREFECT_HOME"] = str(STATE / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
os.environ.pop("PREFECT_API_URL", None)
for key in [k for k in os.environ if k.startswith("CTLOOP_")]:
    os.environ.pop(key)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite) for all flow tests of the session."""
    from prefect.testing.utilities import prefect_test_harness

    shutil.rmtree(STATE / "prefect", ignore_errors=True)
    with prefect_test_harness(server_startup_timeout=120):
        yield
