"""Test setup: Prefect state under the project's own folder, no telemetry, no network.

`make test` runs the suite on pytest-xdist workers (`-n 3 --dist loadfile`, in pyproject.toml):
each test file runs whole on one worker, so module fixtures are built once; each worker has its
own Prefect home and its own session Prefect API. The files start longest first; the cluster
test starts at once, alone on its worker until it is done.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# one state folder per xdist worker ("main" without xdist)
STATE = ROOT / ".ctloop-test" / os.environ.get("PYTEST_XDIST_WORKER", "main")

(STATE / "prefect").mkdir(parents=True, exist_ok=True)
# Before anything imports Prefect: a private Prefect home, analytics off.
os.environ["PREFECT_HOME"] = str(STATE / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
# One OpenMP thread per process: three xdist workers (and the servers they start) on two cores
# otherwise spin-wait on each other inside every gradient-boosting fit (measured: a 60-round fit
# on 400 rows took 5-9 s under load with the default threads, 1 s with one)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.pop("PREFECT_API_URL", None)
for key in [k for k in os.environ if k.startswith("CTLOOP_")]:
    os.environ.pop(key)

# Files that run alone on their worker while they run (the cluster profile: a whole stack of its
# own); the worker then takes other files.
ALONE = ("tests/test_cluster.py",)
# The longest files first (roughly, from timings on this 2-core machine), so that no long file
# starts last; the other files keep their order.
FIRST = (
    *ALONE,
    "tests/test_up.py",
    "tests/test_up_fresh.py",
    "tests/test_cli.py",
    "tests/test_first_hour.py",
    "tests/faults/test_kills.py",
    "tests/test_triggers_flow.py",
    "tests/test_estimated_trigger_flow.py",
    "tests/test_replay.py",
    "tests/test_flows.py",
    "tests/test_model_flow.py",
    "tests/test_serving_process.py",
    "tests/test_fanout.py",
    "tests/test_serving.py",
    "tests/faults/test_outage_flow.py",
    "tests/faults/test_disk_full.py",
    "tests/test_data_ingest.py",
)


def _file_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config, items):
    """Longest files first; within a file, the collected order."""
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(_file_of(item), len(FIRST)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` in the order above. A worker given an ALONE file also gets the last
    (smallest) file of the queue, and nothing more until the ALONE file is done; then it takes
    work like the others."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongestFirst(LoadFileScheduling):
        def _reschedule(self, node):
            held = self.assigned_work.get(node, {})
            alone = [s for s, tests in held.items() if s in ALONE and not all(tests.values())]
            if not alone or node.shutting_down or not self.workqueue:
                super()._reschedule(node)
                return
            if len(held) == 1:
                # a worker holds back its last test until it gets more or is told to stop: a
                # second, small file lets the ALONE test start at once
                self.workqueue.move_to_end(next(reversed(self.workqueue)), last=False)
                self._assign_work_unit(node)

    return LongestFirst(config, log)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite) for all flow tests of the session (of the worker)."""
    from prefect.testing.utilities import prefect_test_harness

    shutil.rmtree(STATE / "prefect", ignore_errors=True)
    with prefect_test_harness(server_startup_timeout=120):
        yield
