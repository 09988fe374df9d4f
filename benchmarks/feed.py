"""The Prefect event feed during a burst: events by name while `ctloop up` answers one
labelled file and then a burst of `ctloop.drift.detected` events.

A fresh `ctloop up` on a temporary home (free ports), one labelled file landed, the champion
awaited, then `--burst` drift events at once; the window runs from the burst to the moment
every retrain run is final (plus a few seconds for the event service to persist). Events are
counted by name through the Prefect API's events endpoint (`/events/filter`), over the window
and over the whole session. The baseline is the same measurement on another checkout
(`PYTHONPATH=<checkout>`: its code comes before the editable install, in `up` and every process
it starts); the figure of interest is `prefect.flow-run.AwaitingConcurrencySlot` against
ctloop's own events.

    python benchmarks/feed.py [--burst 5] [--ctloop .venv/bin/ctloop] [--record]
    PYTHONPATH=../base python benchmarks/feed.py   # the baseline
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import emit, machine  # noqa: E402

from ctloop.launcher import free_port

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def call(port: int, path: str, body: dict | None = None, method: str = "POST"):
    url = path if path.startswith("http") else f"http://127.0.0.1:{port}/api{path}"
    data = json.dumps(body or {}).encode() if method == "POST" else None
    request = urllib.request.Request(
        url, data=data, headers={"content-type": "application/json"}, method=method
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def events_by_name(port: int, since: datetime, until: datetime) -> Counter:
    """Every event the API holds between `since` and `until`, counted by name (all pages)."""
    body = {
        "filter": {"occurred": {"since": since.isoformat(), "until": until.isoformat()}},
        "limit": 50,
    }
    page = call(port, "/events/filter", body)
    names = Counter(e["event"] for e in page["events"])
    while page.get("next_page"):
        page = call(port, page["next_page"], method="GET")
        names.update(e["event"] for e in page["events"])
    return names


def retrain_runs(port: int) -> list[dict]:
    flows = {f["id"]: f["name"] for f in call(port, "/flows/filter", {})}
    runs = call(port, "/flow_runs/filter", {"limit": 200})
    return [r for r in runs if flows.get(r["flow_id"]) == "retrain"]


def wait(check, timeout: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            raise SystemExit(f"ctloop up died while waiting for {what}")
        time.sleep(1)
    raise SystemExit(f"timed out waiting for {what}")


def measure(ctloop: Path, burst: int, workdir: Path) -> dict:
    import numpy as np
    import yaml

    from ctloop.data.demo import DemoScript, demo_config, generate_day
    from ctloop.registry.store import CHAMPION, open_registry

    home = workdir / "home"
    config = demo_config(str(home), rows_per_day=300)
    config.triggers.bootstrap_rows = 500
    config.triggers.schedule_cron = None
    config.triggers.monitor_every_minutes = None
    path = workdir / "ctloop.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CTLOOP_"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    log = open(workdir / "up.log", "w")  # noqa: SIM115 - closed after the process ends
    started = datetime.now(UTC)
    proc = subprocess.Popen(
        [str(ctloop), "up", "-c", str(path), "--prefect-port", str(port), "--mlflow-port", "0",
         "--server-port", str(free_port()), "--optuna-port", "-1", "--poll-seconds", "0.5"],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        up_log = workdir / "up.log"
        wait(lambda: "ctloop is up" in up_log.read_text(), 300, "start-up", proc)
        frame = generate_day(DemoScript(rows_per_day=600), 0, np.random.default_rng(1))
        staging = workdir / "day00.csv"
        frame.to_csv(staging, index=False)
        staging.rename(home / "landing" / "day00.csv")
        registry = open_registry(config)
        wait(lambda: registry.by_alias(CHAMPION), 300, "a champion", proc)
        wait(lambda: all(r["state_type"] in FINAL for r in retrain_runs(port)), 120, "idle", proc)
        before = len(retrain_runs(port))
        emitter = (
            "import sys\nfrom prefect.events import emit_event\n"
            "for i in range(int(sys.argv[1])):\n"
            "    emit_event(event='ctloop.drift.detected',\n"
            "               resource={'prefect.resource.id': 'ctloop.project.loans',\n"
            "                         'ctloop.project': 'loans'},\n"
            "               payload={'reason': f'burst {i}', 'reasons': [f'burst {i}']})\n"
        )
        burst_at = datetime.now(UTC)
        clock = time.monotonic()
        api_env = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
        subprocess.run([sys.executable, "-c", emitter, str(burst)], env=api_env, check=True)

        def answered():
            runs = retrain_runs(port)
            return len(runs) - before >= burst and all(r["state_type"] in FINAL for r in runs)

        wait(answered, 900, "the burst's retrain runs", proc)
        seconds = time.monotonic() - clock
        time.sleep(5)  # the event service persists in batches
        window = events_by_name(port, burst_at, datetime.now(UTC))
        session = events_by_name(port, started, datetime.now(UTC))
        states = Counter(f"{r['state_type']}/{r['state_name']}" for r in retrain_runs(port))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    return {"seconds": round(seconds, 1), "window": dict(window), "session": dict(session),
            "retrain_states": dict(states)}  # fmt: skip


def summary(counts: dict) -> dict:
    total = sum(counts.values())
    slot = counts.get("prefect.flow-run.AwaitingConcurrencySlot", 0)
    own = sum(v for k, v in counts.items() if k.startswith("ctloop."))
    return {"events": total, "awaiting_concurrency_slot": slot, "ctloop_events": own}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=5)
    parser.add_argument("--ctloop", type=Path, default=Path(sys.executable).parent / "ctloop")
    parser.add_argument("--record", action="store_true", help="append to results/feed.jsonl")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ctloop-feed-") as tmp:
        result = measure(args.ctloop.resolve(), args.burst, Path(tmp))
    result = {
        "bench": "feed",
        "burst": args.burst,
        "ctloop": str(args.ctloop),
        **{f"window_{k}": v for k, v in summary(result["window"]).items()},
        **{f"session_{k}": v for k, v in summary(result["session"]).items()},
        **result,
        **machine(),
    }
    emit(result, "feed", args.record)


if __name__ == "__main__":
    main()
