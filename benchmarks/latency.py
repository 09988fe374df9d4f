"""Landing-to-serving latency: a 100k-row file lands, how long until the model server answers
with the model trained on it? (HPO off.) Target: <= 30 s on this machine.

Runs `ctloop up` (Prefect server, served deployments, model server, landing watcher), drops the
file into the landing folder and polls `/predict` until the answer comes from the new version.
Stage times come from the Prefect runs. Baseline, measured in the same run: the same `ingest`
and `retrain` flows called directly in one process, with no watcher, events or deployments: the
ratio is what the automation costs on top of the work. Prints a table, then one JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _record import emit, loadavg, machine

from ctloop.launcher import free_port

ROWS = 100_000
BIN = Path(sys.executable).parent


def post(url: str, body: dict) -> dict | None:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def config_for(home: Path):
    from ctloop.data.demo import demo_config

    config = demo_config(str(home), rows_per_day=ROWS // 20)
    config.triggers.bootstrap_rows = 1000
    config.triggers.schedule_cron = None
    config.triggers.monitor_every_minutes = None
    return config


def make_data(folder: Path) -> tuple[Path, dict]:
    from ctloop.data.demo import DemoScript, generate_day

    script = DemoScript(rows_per_day=ROWS // 20)
    rng = np.random.default_rng(0)
    frame = pd.concat([generate_day(script, d, rng) for d in range(20)], ignore_index=True)
    path = folder / "history.csv"
    frame.to_csv(path, index=False)
    record = frame.drop(columns=["default", "application_id", "application_date"]).iloc[0]
    return path, {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}


def runs(port: int) -> dict[str, list[dict]]:
    def call(path):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api{path}",
            b'{"limit": 200}',
            {"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    flows = {f["id"]: f["name"] for f in call("/flows/filter")}
    out: dict[str, list[dict]] = {}
    for run in call("/flow_runs/filter"):
        out.setdefault(flows[run["flow_id"]], []).append(run)
    return out


def automated(tmp: Path, data: Path, record: dict) -> dict:
    """Time from the file landing to `/predict` answering with version 1, through `ctloop up`."""
    home = tmp / "up-home"
    cfg = tmp / "up.yaml"
    cfg.write_text(yaml.safe_dump(config_for(home).model_dump(mode="json")))
    prefect_port, server_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CTLOOP_"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    proc = subprocess.Popen(
        [str(BIN / "ctloop"), "up", "-c", str(cfg), "--prefect-port", str(prefect_port),
         "--mlflow-port", "0", "--server-port", str(server_port), "--optuna-port", "-1",
         "--poll-seconds", "0.25"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 300
        while not any("ctloop is up" in x for x in lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("ctloop up did not start:\n" + "".join(lines))
            time.sleep(0.5)
        landing = home / "landing"
        staged = landing.parent / "staged.csv"
        os.link(data, staged)
        t0 = datetime.now(UTC)
        start = time.perf_counter()
        staged.rename(landing / "history.csv")
        url = f"http://127.0.0.1:{server_port}/predict"
        while True:
            answer = post(url, {"records": [record]})
            if answer and answer.get("version") == 1:
                break
            if time.perf_counter() - start > 600:
                raise SystemExit("no champion served within 600 s:\n" + "".join(lines[-40:]))
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        found = runs(prefect_port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    def span(name: str, pick=lambda r: True):
        chosen = [r for r in found.get(name, []) if r["start_time"] and pick(r)]
        if not chosen:
            return None
        run = min(chosen, key=lambda r: r["start_time"])
        return (
            datetime.fromisoformat(run["start_time"]),
            datetime.fromisoformat(run["end_time"]) if run["end_time"] else None,
        )

    ingest = span("ingest-landing")
    retrain = span("retrain", lambda r: r["parameters"]["request"].get("trigger") == "new_data")
    stages = {}
    if ingest and retrain and ingest[1] and retrain[1]:
        stages = {
            "landing_to_ingest_start": (ingest[0] - t0).total_seconds(),
            "ingest": (ingest[1] - ingest[0]).total_seconds(),
            "event_to_retrain_start": (retrain[0] - ingest[1]).total_seconds(),
            "retrain": (retrain[1] - retrain[0]).total_seconds(),
            "retrain_end_to_serving": (
                t0 + pd.Timedelta(seconds=seconds) - retrain[1]
            ).total_seconds(),
        }
    return {"seconds": seconds, "stages": {k: round(v, 2) for k, v in stages.items()}}


def direct(tmp: Path, data: Path) -> float:
    """The same flows called in one process: ingest, then retrain (no watcher, no events)."""
    home = tmp / "direct-home"
    code = (
        "import sys, time\n"
        "from ctloop.stores.home import activate, home_of\n"
        "from ctloop.config.settings import Config\n"
        "import yaml\n"
        "config = Config.model_validate(yaml.safe_load(open(sys.argv[1])))\n"
        "activate(home_of(config).ensure())\n"
        "from flows.ingest import ingest\n"
        "from flows.retrain import RetrainRequest, retrain\n"
        "from prefect import flow\n"
        "flow(lambda: None, name='warm-up')()\n"
        "start = time.perf_counter()\n"
        "ingest([sys.argv[2]], config)\n"
        "retrain(RetrainRequest(trigger='new_data', reason='direct'), config)\n"
        "print(time.perf_counter() - start)\n"
    )
    cfg = tmp / "direct.yaml"
    cfg.write_text(yaml.safe_dump(config_for(home).model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CTLOOP_"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
    out = subprocess.run(
        [sys.executable, "-c", code, str(cfg), str(data)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def main(record_result: bool = False) -> None:
    load_before = loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="ctloop-latency-"))
    data, record = make_data(tmp)
    plain = direct(tmp, data)
    result = automated(tmp, data, record)
    print(f"rows: {ROWS}")
    for name, value in result["stages"].items():
        print(f"  {name:<26} {value:7.2f} s")
    print(f"landing → serving: {result['seconds']:.2f} s (direct flows: {plain:.2f} s)")
    line = {
        "bench": "latency",
        "seconds": round(result["seconds"], 2),
        "target_seconds": 30,
        "rows": ROWS,
        "stages": result["stages"],
        "direct_seconds": round(plain, 2),
        "ratio": round(result["seconds"] / plain, 3),
        "passed": result["seconds"] <= 30,
        **machine(),
        "loadavg_before": load_before,
    }
    emit(line, "latency", record_result)


if __name__ == "__main__":
    main(record_result="--record" in sys.argv[1:])
