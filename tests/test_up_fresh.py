"""System test: `ctloop up` on three fresh homes in a row starts every time and leaves nothing
running, after SIGTERM and after SIGKILL of `up` itself; the landing folder routes a labelled
file and a features-only file as the README says; a retrain the rules stop ends Skipped.

`tests/test_up.py` covers a landed file becoming a champion, a burst of drift retrains run one at
a time and a command of the same home using up's server; this file does not train at all (the
first model waits for more rows than it lands), so its cost is three start-ups.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from clitools import flow_runs

from ctloop.data.demo import TARGET, DemoScript, demo_config, generate_day

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
MARK = "UPFRESH_TEST_MARK"  # in up's environment, inherited by everything it starts
BOOTSTRAP_ROWS = 100_000  # the first model waits for these: a new-data retrain is Skipped
ROWS = 200


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768-60999): a port the OS picks from that
    range can be taken as the local port of an outgoing connection before the server binds it
    (seen here: `mlflow ui ... [Errno 98] Address already in use` on a shared machine)."""
    for _ in range(100):
        port = random.randrange(20_000, 32_000)
        if port_is_free(port):
            return port
    raise AssertionError("no free port in 20000-32000")


def port_is_free(port: int) -> bool:
    """Nothing listens on `port` (SO_REUSEADDR: connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def answers(url: str) -> int | None:
    """The HTTP status a GET of `url` gets, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _marked(mark: str) -> list[psutil.Process]:
    """Every live process whose environment carries `mark` (what `up` started, at any depth,
    re-parented or not)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARK) == mark and _alive(process):
                found.append(process)
        except psutil.Error:
            continue
    return found


class Up:
    """One `ctloop up` on a fresh home, its output, and every process it started."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True)
        self.home = root / "home"
        self.config = demo_config(str(self.home), rows_per_day=ROWS)
        self.config.triggers.bootstrap_rows = BOOTSTRAP_ROWS
        self.config.triggers.schedule_cron = None
        self.config.triggers.monitor_every_minutes = None
        self.config_path = root / "ctloop.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config.model_dump(mode="json")))
        self.ports = {
            name: free_port() for name in ("prefect", "mlflow", "server", "optuna")
        }  # fmt: skip
        self.mark = uuid.uuid4().hex
        self.log: list[str] = []
        self.tree: dict[tuple[int, float], psutil.Process] = {}  # (pid, created) -> process
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CTLOOP_"))}
        env |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", MARK: self.mark}
        p = self.ports
        self.proc = subprocess.Popen(
            [str(BIN / "ctloop"), "up", "-c", str(self.config_path),
             "--prefect-port", str(p["prefect"]), "--mlflow-port", str(p["mlflow"]),
             "--server-port", str(p["server"]), "--optuna-port", str(p["optuna"]),
             "--poll-seconds", "0.5"],
            cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # so that a failed test can still kill what is left
        )  # fmt: skip
        lines: queue.Queue[str] = queue.Queue()

        def pump():
            for line in self.proc.stdout:
                self.log.append(line)
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        threading.Thread(target=self._record_tree, daemon=True).start()

    def _record_tree(self) -> None:
        """Note every descendant of `up` (and of those) four times a second until stopped."""
        root = psutil.Process(self.proc.pid)
        while not self._stop.is_set():
            self.note_descendants(root)
            time.sleep(0.25)

    def note_descendants(self, root: psutil.Process | None = None) -> None:
        parents = [root] if root is not None else list(self.tree.values())
        for parent in parents:
            try:
                for child in parent.children(recursive=True):
                    self.tree.setdefault((child.pid, child.create_time()), child)
            except psutil.Error:
                continue

    def wait_up(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not any("ctloop is up" in line for line in self.log):
            assert self.proc.poll() is None, "ctloop up died while starting:\n" + self.output()
            assert time.monotonic() < deadline, "ctloop up did not start:\n" + self.output()
            time.sleep(0.5)

    def wait_for(self, check, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            assert self.proc.poll() is None, f"up died waiting for {what}:\n" + self.output()
            time.sleep(1)
        raise AssertionError(f"timed out waiting for {what}:\n" + self.output())

    def output(self) -> str:
        logs = ""
        for log in sorted((self.home / "logs").glob("*.log")):
            logs += f"\n--- {log.name} (end)\n" + log.read_text(errors="replace")[-2000:]
        return "".join(self.log[-60:]) + logs

    def left_running(self, timeout: float) -> list[str]:
        """What `up` started that still runs once `timeout` seconds have passed (the watchdog
        of a killed `up` has a grace period), with what it started meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            self.note_descendants()  # a child started by a child after up's last look
            alive = {p for p in self.tree.values() if _alive(p)} | set(_marked(self.mark))
            if not alive or time.monotonic() > deadline:
                return [f"{p.pid} {' '.join(_cmdline(p))[:160]}" for p in alive]
            time.sleep(0.5)

    def cleanup(self) -> None:
        """After a failed test: nothing of this home is left for the next tests."""
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for process in {*self.tree.values(), *_marked(self.mark)}:
            try:
                process.kill()
            except psutil.Error:
                pass


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return ["?"]


def _check_answers(up: Up) -> None:
    """Every URL `up` announced answers: Prefect, MLflow and the Optuna dashboard with 200,
    the model server at all (it has no model yet)."""
    p, out = up.ports, "".join(up.log)
    for name in ("Prefect UI", "MLflow UI", "model server", "Optuna dashboard"):
        assert name in out, out
    assert answers(f"http://127.0.0.1:{p['prefect']}/api/health") == 200
    assert answers(f"http://127.0.0.1:{p['mlflow']}/health") == 200
    assert answers(f"http://127.0.0.1:{p['optuna']}/api/meta") == 200
    assert answers(f"http://127.0.0.1:{p['server']}/health") is not None, up.output()


def _drop(frame, landing: Path, name: str) -> Path:
    staging = landing.parent / f"{name}.part"
    frame.to_csv(staging, index=False)
    return staging.rename(landing / name)  # atomic arrival, as a producer should deliver


def _check_landing_and_skipped(up: Up) -> None:
    """README: a labelled file is ingested (a snapshot, a ledger line, `.done/`) and its
    `ctloop.batch.accepted` starts `monitor` and `retrain`; a file without the target goes to
    the monitor (ledger `monitored`, `.done/`), not to quarantine; a retrain the rules do not
    let train is Completed, named Skipped, with the reason as its message."""
    from ctloop.lake.manifests import list_quarantined, list_snapshots
    from ctloop.stores.home import home_of

    port, landing = up.ports["prefect"], up.home / "landing"
    labelled = generate_day(DemoScript(rows_per_day=ROWS), 0, np.random.default_rng(1))
    features = generate_day(DemoScript(rows_per_day=ROWS), 1, np.random.default_rng(2))
    features = features.drop(columns=[TARGET])
    ledger = landing / ".ctloop-ingested.jsonl"

    def recorded(count):
        lines = ledger.read_text().splitlines() if ledger.exists() else []
        entries = {e["file"]: e for e in map(json.loads, lines)}
        return entries if len(entries) == count else None

    # the features file after the first labelled one: before it the lake has no schema to tell
    # features from a misspelt target (tests/test_data_flows.py covers that case)
    _drop(labelled, landing, "day00_labels.csv")
    up.wait_for(lambda: recorded(1), 240, "the labelled file in the ledger")
    features_file = _drop(features, landing, "day01_features.csv")
    entries = up.wait_for(lambda: recorded(2), 240, "the features file in the ledger")
    assert entries["day00_labels.csv"]["status"] == "accepted", entries
    assert entries["day01_features.csv"]["status"] == "monitored", entries
    assert sorted(p.name for p in (landing / ".done").iterdir()) == [
        "day00_labels.csv",
        "day01_features.csv",
    ]
    assert not (landing / ".quarantined").exists()
    home = home_of(up.config)
    assert list_quarantined(home) == []
    snapshots = list_snapshots(home)
    assert [s.snapshot for s in snapshots] == [entries["day00_labels.csv"]["snapshot"]]
    assert snapshots[0].rows == ROWS

    # the features file was monitored: a monitor run on that file (no champion yet to compare)
    def monitored():
        runs = [r for r in flow_runs(port, "monitor") if r["state_type"] == "COMPLETED"]
        return [r for r in runs if r["parameters"].get("path") == str(features_file)]

    assert up.wait_for(monitored, 60, "a monitor run on the features file")

    # the labelled batch's event started a retrain whose rules wait for more rows: Skipped
    def finished_retrain():
        runs = flow_runs(port, "retrain")
        return [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]

    (run,) = up.wait_for(finished_retrain, 240, "the new-data retrain")
    assert run["parameters"]["request"]["trigger"] == "new_data"
    assert run["state_type"] == "COMPLETED" and run["state_name"] == "Skipped", run["state"]
    assert run["state"]["message"] == (
        f"waiting for {BOOTSTRAP_ROWS} labelled rows (have {ROWS})"
    ), run["state"]
    assert run["name"] == "retrain-new_data"


# how each home's `up` is stopped: SIGTERM twice, then SIGKILL of `up` itself (not its group)
STOPS = (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL)


def test_up_on_three_fresh_homes_starts_every_time_and_leaves_nothing_running(tmp_path):
    began = time.monotonic()

    def phase(what: str) -> None:  # shown with -s, and on a failure
        print(f"{time.monotonic() - began:6.1f} s  home {index + 1}: {what}", flush=True)

    for index, how in enumerate(STOPS):
        up = Up(tmp_path / f"home{index + 1}")
        try:
            up.start()
            up.wait_up()
            phase("up")
            _check_answers(up)
            if index == 0:
                _check_landing_and_skipped(up)
                phase("landing files and the Skipped retrain checked")
            up.note_descendants(psutil.Process(up.proc.pid))
            names = {" ".join(_cmdline(p)) for p in up.tree.values()}
            for part in ("prefect", "mlflow", "deployments.serve", "serve", "watch_parent"):
                assert any(part in n for n in names), (part, names)

            os.kill(up.proc.pid, how)  # the process itself, not its group
            code = up.proc.wait(timeout=90)
            up._stop.set()
            if how == signal.SIGTERM:
                assert code == 0, up.output()
                left = up.left_running(timeout=20)
            else:
                assert code == -signal.SIGKILL
                # the watchdog terminates, then kills after its 10 s grace
                left = up.left_running(timeout=45)
            assert left == [], f"home {index + 1}, after {how.name}: still running {left}"
            busy = [name for name, port in up.ports.items() if not port_is_free(port)]
            assert busy == [], f"home {index + 1}, after {how.name}: ports held {busy}"
            phase(f"stopped by {how.name}; {len(up.tree)} processes started, none left")
            if how == signal.SIGTERM:  # announced while up lives, forgotten when it stops
                assert not (up.home / "prefect" / "server.json").exists()
        finally:
            up.cleanup()
