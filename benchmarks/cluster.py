"""The demo stream on the cluster profile against the embedded profile, on this machine.

For each profile: `ctloop up` (embedded: Prefect server + served deployments; cluster:
PostgreSQL-backed Prefect server, 2 process workers, MLflow server, Dask scheduler + 2 workers),
then the demo stream is fed the production way by `deployments.stream.drive_stream`: labelled
batches into the landing folder (ingest-landing, then monitor and retrain by their event
triggers), features batches to the `monitor` deployment, one file at a time, each step waiting
until the runs it caused have finished. Same config, same data, tuning on (2 workers: processes
when embedded, Dask workers in the cluster profile). Timed from the first file to the last
step settled. The ratio is cluster / embedded seconds: one small machine is not where the
cluster wins, since every component competes for the same cores and every flow run pays a
worker's process start-up. The outcomes (snapshots, quarantine, versions and their triggers,
champion) must be the same on both profiles; the script says whether they are.

Usage, from the repo root (PostgreSQL at 127.0.0.1:5432, trust auth):

    python benchmarks/cluster.py [--days 12] [--rows-per-day 600]   # --days 28: the full demo

The last line printed is one JSON object: {"bench": "cluster", "ratio": ..., ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import yaml
from prefect.settings import PREFECT_API_URL, temporary_settings

from ctloop.config.settings import Profile
from ctloop.data.demo import DemoScript, demo_config, demo_stream
from ctloop.lake import snapshots as lake
from ctloop.launcher import free_port
from ctloop.stores.home import home_of
from deployments.stream import drive_stream

BIN = Path(sys.executable).parent


def compact_script(days: int, rows: int) -> DemoScript:
    """The demo's episodes squeezed into `days` (28: the demo itself)."""
    if days >= DemoScript.days:
        return DemoScript(rows_per_day=rows)
    return DemoScript(
        days=days, rows_per_day=rows, shift_start=days // 4, shift_end=days * 7 // 12,
        concept_drift_day=days * 7 // 12, corrupt_day=days * 5 // 12,
    )  # fmt: skip


def count_runs(api: str, state: str | None = None) -> int:
    """Flow runs on the API (of one state type when given); -1 when the API did not answer."""
    body = {"flow_runs": {"state": {"type": {"any_": [state]}}}} if state else {}
    request = urllib.request.Request(
        f"{api}/flow_runs/count", data=json.dumps(body).encode(),
        headers={"content-type": "application/json"}, method="POST",
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(json.loads(response.read()))
    except OSError:  # a count is not worth losing the measured run
        return -1


def wait(check, timeout: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            raise RuntimeError(f"ctloop up exited while waiting for {what}")
        time.sleep(0.5)
    raise TimeoutError(what)


def run_profile(profile: Profile, days: int, rows: int) -> dict:
    from ctloop.registry.store import CHAMPION, open_registry

    tmp = Path(tempfile.mkdtemp(prefix=f"ctloop-bench-{profile}-"))
    config = demo_config(str(tmp / "home"), rows_per_day=rows)
    config.triggers.schedule_cron = None
    config.triggers.monitor_every_minutes = None
    config.tuning.enabled, config.tuning.workers, config.tuning.trials = True, 2, 6
    config.cluster.database_prefix = f"ctloop_b{uuid.uuid4().hex[:8]}"
    config.cluster.prefect_port, config.cluster.mlflow_port = free_port(), free_port()
    config.cluster.dask_port = free_port()
    path = tmp / "ctloop.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    prefect_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CTLOOP_"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(BIN / "ctloop"), "up", "-c", str(path), "--profile", str(profile),
         "--prefect-port", str(prefect_port), "--mlflow-port", "0",
         "--server-port", str(free_port()), "--optuna-port", "-1", "--poll-seconds", "0.5"],
        cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    log: list[str] = []
    threading.Thread(target=lambda: [log.append(x) for x in proc.stdout], daemon=True).start()
    config.profile = profile
    port = config.cluster.prefect_port if profile == Profile.CLUSTER else prefect_port
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait(lambda: any("ctloop is up" in x for x in log), 300, "start-up", proc)
        startup = time.monotonic() - started
        script = compact_script(days, rows)
        home = Path(config.paths.home)

        def alive():
            if proc.poll() is not None:
                raise RuntimeError("ctloop up exited:\n" + "".join(log[-30:]))

        t0 = time.monotonic()
        with temporary_settings(updates={PREFECT_API_URL: api}):
            steps = drive_stream(
                config, demo_stream(script), home / "landing", home / "features", liveness=alive
            )
        seconds = time.monotonic() - t0
        registry = open_registry(config)
        champion = registry.by_alias(CHAMPION)
        return {
            "profile": str(profile), "startup_s": round(startup, 1),
            "stream_s": round(seconds, 1), "files": len(steps), "runs": count_runs(api),
            "completed": count_runs(api, "COMPLETED"),
            "outcome": {
                "snapshots": sorted(m.snapshot for m in lake.list_snapshots(home_of(config))),
                "quarantined": len(lake.list_quarantined(home_of(config))),
                "versions": [(r.semver, r.tags["ctloop.trigger"]) for r in
                             sorted(registry.versions(), key=lambda r: int(r.version))],
                "champion": champion.semver if champion else None,
            },
        }  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if profile == Profile.CLUSTER:
            from deployments.cluster import drop_databases

            drop_databases(config.cluster)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=12, help="28: the whole demo stream")
    parser.add_argument("--rows-per-day", type=int, default=600)
    args = parser.parse_args()
    embedded = run_profile(Profile.EMBEDDED, args.days, args.rows_per_day)
    cluster = run_profile(Profile.CLUSTER, args.days, args.rows_per_day)
    ratio = cluster["stream_s"] / embedded["stream_s"]
    print(f"{'profile':<10} {'start-up s':>10} {'stream s':>9} {'files':>5} {'runs':>5} "
          f"{'completed':>9}")  # fmt: skip
    for r in (embedded, cluster):
        print(f"{r['profile']:<10} {r['startup_s']:>10} {r['stream_s']:>9} {r['files']:>5} "
              f"{r['runs']:>5} {r['completed']:>9}")  # fmt: skip
    same = embedded.pop("outcome") == cluster.pop("outcome")
    print(f"cluster / embedded stream time: {ratio:.2f}x on {os.cpu_count()} cores")
    print(f"same outcomes on both profiles: {'yes' if same else 'NO'}")
    print(json.dumps({"bench": "cluster", "ratio": round(ratio, 2), "cores": os.cpu_count(),
                      "same_outcomes": same, "embedded": embedded, "cluster": cluster,
                      "days": args.days, "rows_per_day": args.rows_per_day}))  # fmt: skip


if __name__ == "__main__":
    main()
