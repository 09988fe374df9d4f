"""The process launcher of `ctloop up` and `ctloop ui`: logs, start-up failures, stopping."""

from __future__ import annotations

import sys
import time

import pytest

from ctloop.errors import CtloopError
from ctloop.launcher import Launcher, log_name

PY = sys.executable


def test_each_child_writes_its_output_to_its_own_log(tmp_path):
    with Launcher(tmp_path / "logs") as launcher:
        code = "import sys; print('out line'); print('err line', file=sys.stderr)"
        launcher.start("my child", [PY, "-c", code]).wait(timeout=60)
    text = (tmp_path / "logs" / "my-child.log").read_text()
    assert "out line" in text and "err line" in text


def test_a_child_that_exits_during_start_up_is_named_with_its_log(tmp_path):
    launcher = Launcher(tmp_path / "logs")
    launcher.start("broken server", [PY, "-c", "import sys; sys.exit('port 4200 is in use')"])
    launcher.start("sleeper", [PY, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(CtloopError) as caught:
            launcher.wait_until(lambda: False, "the server", timeout=60, poll=0.05)
    finally:
        launcher.stop()
    message = str(caught.value)
    assert "broken server exited with code 1" in message
    assert str(tmp_path / "logs" / "broken-server.log") in message
    assert "port 4200 is in use" in message
    assert launcher.children["sleeper"].process.poll() is not None  # stopped as well


def test_not_ready_in_time_names_what(tmp_path):
    with Launcher(tmp_path) as launcher:
        with pytest.raises(CtloopError, match="the API did not become ready within 0 s"):
            launcher.wait_until(lambda: False, "the API", timeout=0.2, poll=0.05)


def test_stop_kills_a_child_that_ignores_terminate(tmp_path):
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    launcher = Launcher(tmp_path, grace_seconds=0.5)
    process = launcher.start("stubborn", [PY, "-c", code])
    log = tmp_path / "stubborn.log"
    deadline = time.monotonic() + 60
    while "ready" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    launcher.stop()
    assert process.poll() is not None and time.monotonic() - started < 30


def test_stop_goes_in_reverse_start_order_so_a_child_keeps_what_it_needs(tmp_path):
    """`up`'s deployment runner shuts down through the Prefect server started before it: the
    server must still run when the runner gets SIGTERM, and neither waits to be killed."""
    server = "import time\nprint('ready', flush=True)\ntime.sleep(120)\n"
    runner = (
        "import os, signal, sys, time\n"
        "def stop(*_):\n"
        "    time.sleep(1)  # shutting down takes API calls\n"
        "    stat = f'/proc/{sys.argv[1]}/stat'\n"
        "    state = open(stat).read().split()[2] if os.path.exists(stat) else 'Z'\n"
        "    print('server alive' if state != 'Z' else 'server gone', flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    launcher = Launcher(tmp_path, grace_seconds=20)
    first = launcher.start("server", [PY, "-c", server])
    second = launcher.start("runner", [PY, "-c", runner, str(first.pid)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
        "ready" in (tmp_path / f"{name}.log").read_text() for name in ("server", "runner")
    ):
        time.sleep(0.05)
    launcher.stop()
    assert (tmp_path / "runner.log").read_text().split() == ["ready", "server", "alive"]
    assert (second.returncode, first.returncode) == (0, -15)  # both by SIGTERM, none killed


def test_log_names_are_file_names():
    assert log_name("prefect worker 2") == "prefect-worker-2.log"
    assert log_name("MLflow UI") == "mlflow-ui.log"


def test_stop_also_stops_what_a_child_started(tmp_path):
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    launcher = Launcher(tmp_path, grace_seconds=5)
    launcher.start("parent", [PY, "-c", code])
    log = tmp_path / "parent.log"
    deadline = time.monotonic() + 60
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(log.read_text().split()[0])
    launcher.stop()
    deadline = time.monotonic() + 30
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"  # a zombie is gone, only not yet reaped
    except FileNotFoundError:
        return False


def test_a_killed_command_takes_its_detached_children_with_it(tmp_path):
    """SIGKILL leaves no chance to clean up; the watchdog stops what the command started, even a
    child in its own session (as Prefect's ephemeral server and `ctloop up`'s children are)."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    script = (
        "import subprocess, sys, time\n"
        "from ctloop.launcher import guard_descendants\n"
        "guard_descendants()\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],"
        " start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    command = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(command.stdout.readline()))
    time.sleep(1.5)  # the watchdog notes descendants twice a second
    command.send_signal(signal.SIGKILL)
    command.wait(10)
    deadline = time.monotonic() + 30
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the detached child outlived the killed command"
        time.sleep(0.2)
