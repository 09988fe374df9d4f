"""System test: `ctloop up` against a real Prefect server; a landed file ends as a champion."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from clitools import flow_runs

from ctloop.data.demo import DemoScript, demo_config, generate_day
from ctloop.launcher import free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen, log: list[str]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        assert proc.poll() is None, f"ctloop up died while waiting for {what}:\n" + "".join(log)
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}:\n" + "".join(log[-50:]))


def stop_up(proc: subprocess.Popen) -> None:
    """SIGTERM `ctloop up` (it stops what it started); SIGKILL its group after 60 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def stack(tmp_path):
    home = tmp_path / "home"
    config = demo_config(str(home), rows_per_day=300)
    config.triggers.bootstrap_rows = 500
    config.triggers.schedule_cron = None
    config.triggers.monitor_every_minutes = None
    path = tmp_path / "ctloop.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    prefect_port, server_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CTLOOP_"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    proc = subprocess.Popen(
        [str(BIN / "ctloop"), "up", "-c", str(path), "--prefect-port", str(prefect_port),
         "--mlflow-port", "0", "--server-port", str(server_port), "--optuna-port", "-1",
         "--poll-seconds", "0.5"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    log: list[str] = []
    lines: queue.Queue[str] = queue.Queue()

    def pump():
        for line in proc.stdout:
            log.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        wait_for(lambda: any("ctloop is up" in x for x in log), 240, "start-up", proc, log)
        yield {
            "proc": proc, "log": log, "home": home, "config": config,
            "prefect_port": prefect_port, "server_port": server_port, "env": env,
            "config_path": path,
        }  # fmt: skip
    finally:
        stop_up(proc)


# drift events at once: more than one is queued behind the first retrain run that decides, and
# its decision covers (cancels) the ones created before it started
BURST = 5


def test_landed_file_becomes_a_champion_and_a_burst_is_answered_one_at_a_time(stack, tmp_path):
    from ctloop.registry.store import CHAMPION, open_registry

    port, proc, log = stack["prefect_port"], stack["proc"], stack["log"]
    landing = stack["home"] / "landing"
    assert f"http://127.0.0.1:{port}" in "".join(log)

    # a labelled file lands: ingest-landing → accepted → monitor + retrain → champion
    frame = generate_day(DemoScript(rows_per_day=600), 0, np.random.default_rng(1))
    staging = tmp_path / "day00.csv"
    frame.to_csv(staging, index=False)
    staging.rename(landing / "day00.csv")  # atomic arrival, as a producer should deliver

    registry = open_registry(stack["config"])
    champion = wait_for(lambda: registry.by_alias(CHAMPION), 300, "a champion", proc, log)
    assert champion.tags["ctloop.trigger"] == "new_data"
    assert champion.semver == "1.0.0"

    def completed(name):
        return [r for r in flow_runs(port, name) if r["state_type"] == "COMPLETED"]

    assert wait_for(lambda: completed("ingest-landing"), 60, "an ingest-landing run", proc, log)
    assert wait_for(lambda: completed("monitor"), 120, "a monitor run", proc, log)

    # the champion is promoted before its run has ended (publish, answer): wait for the end
    def new_data_retrains():
        runs = completed("retrain")
        return [r for r in runs if r["parameters"]["request"]["trigger"] == "new_data"]

    assert wait_for(new_data_retrains, 60, "the new-data retrain run to complete", proc, log)

    # a burst of 5 drift events: every one answered by a retrain run that decided (trained or
    # Skipped) or by one Cancelled as covered by such a decision; never two at once
    before = {r["id"] for r in flow_runs(port, "retrain")}
    burst = (
        "from prefect.events import emit_event\n"
        f"for i in range({BURST}):\n"
        "    emit_event(event='ctloop.drift.detected',\n"
        "               resource={'prefect.resource.id': 'ctloop.project.loans',\n"
        "                         'ctloop.project': 'loans'},\n"
        "               payload={'reason': f'burst {i}', 'reasons': [f'burst {i}']})\n"
    )
    env = {**stack["env"], "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    subprocess.run([sys.executable, "-c", burst], env=env, check=True, timeout=120)
    final_states = ("COMPLETED", "CANCELLED", "FAILED", "CRASHED")

    def burst_done():
        runs = [r for r in flow_runs(port, "retrain") if r["id"] not in before]
        final = [r for r in runs if r["state_type"] in final_states]
        return runs if len(runs) >= BURST and len(final) == len(runs) else None

    def burst_state():
        runs = flow_runs(port, "retrain")
        return sorted((r["name"], r["state_type"], r["state_name"]) for r in runs)

    try:
        burst_runs = wait_for(burst_done, 900, f"{BURST} drift retrains answered", proc, log)
    except AssertionError as exc:
        raise AssertionError(f"{burst_state()}\n{exc}") from None
    assert len(burst_runs) == BURST, burst_state()  # one run per event, none lost
    assert all(r["parameters"]["request"]["trigger"] == "drift" for r in burst_runs)
    decided = {r["id"]: r for r in burst_runs if r["state_type"] == "COMPLETED"}
    cancelled = [r for r in burst_runs if r["state_type"] == "CANCELLED"]
    assert decided and cancelled and len(decided) + len(cancelled) == BURST, burst_state()
    by_id = {r["id"]: r for r in flow_runs(port, "retrain")}
    for run in cancelled:  # each names the run whose decision read the state it announced
        message = run["state"]["message"]
        assert message.startswith("covered by retrain run "), message
        cover = by_id[message.split("(")[1].split(")")[0]]
        assert cover["state_type"] == "COMPLETED" and cover["id"] in decided, (message, cover)
        created, covered_at = run["created"], cover["start_time"]
        assert datetime.fromisoformat(created) < datetime.fromisoformat(covered_at), message
        assert run["run_count"] == 0  # cancelled while queued: it never ran
    spans = sorted(
        (datetime.fromisoformat(r["start_time"]), datetime.fromisoformat(r["end_time"]))
        for r in flow_runs(port, "retrain")
        if r["run_count"] and r["start_time"] and r["end_time"]  # a Cancelled one never ran
    )
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, "two retrains overlapped"
    # the champion reflects all the data: it trained on every snapshot, and the rules see
    # nothing left to answer
    from ctloop.lake.snapshots import list_snapshots
    from ctloop.loop.policy import current_decision
    from ctloop.stores.home import home_of

    lake = {m.snapshot for m in list_snapshots(home_of(stack["config"]))}
    assert set(registry.by_alias(CHAMPION).snapshots) == lake
    assert current_decision(stack["config"]).retrain is False

    # a command on the same home finds up's Prefect server (no PREFECT_API_URL, no ephemeral
    # server of its own): its flow run is in up's API
    day = tmp_path / "day01.csv"
    generate_day(DemoScript(rows_per_day=200), 1, np.random.default_rng(2)).to_csv(day, index=False)
    assert not any(k.startswith("PREFECT_API") for k in stack["env"])
    ingested = subprocess.run(
        [str(BIN / "ctloop"), "ingest", str(day), "-c", str(stack["config_path"]), "--json"],
        cwd=tmp_path, env=stack["env"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    assert json.loads(ingested.stdout)["accepted"][0]["rows"] == 200
    assert [r for r in completed("ingest") if r["parameters"]["paths"] == [str(day)]]

    # SIGTERM stops everything that `up` started
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not (stack["home"] / "prefect" / "server.json").exists()  # no longer announced
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
