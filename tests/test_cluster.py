"""System test: `ctloop up --profile cluster` on this machine (PostgreSQL at 127.0.0.1:5432).

PostgreSQL-backed Prefect server, two process workers, a PostgreSQL-backed MLflow server, a Dask
scheduler with two workers: a landed file ends as a champion in the MLflow server's registry.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
import uuid

import numpy as np
import psutil
import pytest
import yaml
from test_up import BIN, api, flow_runs, free_port, wait_for

from ctloop.config import Profile
from ctloop.demo_data import DemoScript, demo_config, generate_day
from deployments import cluster as cl

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _children(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture
def cluster_stack(tmp_path):
    home = tmp_path / "home"
    config = demo_config(str(home), rows_per_day=300)
    config.triggers.bootstrap_rows = 500
    config.triggers.schedule_cron = None
    config.triggers.monitor_every_minutes = None
    config.cluster.database_prefix = f"ctloop_t{uuid.uuid4().hex[:10]}"
    config.cluster.prefect_port = free_port()
    config.cluster.mlflow_port = free_port()
    config.cluster.dask_port = free_port()
    config.cluster.work_pool = f"pool-{uuid.uuid4().hex[:6]}"
    config.cluster.prefect_workers = 2
    config.cluster.dask_workers = 2
    config.tuning.enabled = True
    config.tuning.workers = 2
    config.tuning.trials = 6
    config.tuning.timeout_seconds = 120
    path = tmp_path / "ctloop.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CTLOOP_"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    server_port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "ctloop"), "up", "-c", str(path), "--profile", "cluster", "--mlflow-port", "0",
         "--server-port", str(server_port), "--poll-seconds", "0.5"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    log: list[str] = []
    threading.Thread(target=lambda: [log.append(x) for x in proc.stdout], daemon=True).start()
    config.profile = Profile.CLUSTER  # what `up --profile cluster` resolves
    try:
        wait_for(lambda: any("ctloop is up" in x for x in log), 240, "start-up", proc, log)
        yield {"proc": proc, "log": log, "home": home, "config": config, "env": env}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        cl.drop_databases(config.cluster)


def test_cluster_profile_runs_the_stream_to_a_champion(cluster_stack, tmp_path):
    from ctloop.registry import CHAMPION, open_registry

    proc, log, config = cluster_stack["proc"], cluster_stack["log"], cluster_stack["config"]
    port = config.cluster.prefect_port
    assert config.paths.tracking_uri.startswith("http://127.0.0.1:")
    # every component is its own process, bound to 127.0.0.1
    commands = [" ".join(p.cmdline()) for p in _children(proc)]
    assert sum("worker start --pool" in c for c in commands) == 2, commands
    assert sum(" worker tcp://" in c for c in commands) == 2, commands
    assert any("mlflow server" in c or "mlflow.server" in c for c in commands), commands
    pools = api(port, "/work_pools/filter", {})
    assert any(p["name"] == config.cluster.work_pool and p["type"] == "process" for p in pools)
    workers = api(port, f"/work_pools/{config.cluster.work_pool}/workers/filter", {})
    assert len(workers) == 2
    deployments = api(port, "/deployments/filter", {})
    assert {d["work_pool_name"] for d in deployments} == {config.cluster.work_pool}

    # kill one Prefect worker: the other picks the runs up, nothing is lost
    victim = next(p for p in _children(proc) if "ctloop-worker-1" in " ".join(p.cmdline()))
    victim.kill()
    landing = cluster_stack["home"] / "landing"
    frame = generate_day(DemoScript(rows_per_day=600), 0, np.random.default_rng(1))
    staging = tmp_path / "day00.csv"
    frame.to_csv(staging, index=False)
    staging.rename(landing / "day00.csv")

    registry = open_registry(config)
    champion = wait_for(lambda: registry.by_alias(CHAMPION), 300, "a champion", proc, log)
    assert champion.tags["ctloop.trigger"] == "new_data"
    assert champion.semver == "1.0.0"

    def completed(name):
        return [r for r in flow_runs(port, name) if r["state_type"] == "COMPLETED"]

    assert wait_for(lambda: completed("ingest-landing"), 60, "ingest-landing", proc, log)
    assert wait_for(lambda: completed("monitor"), 120, "a monitor run", proc, log)
    runs = [r for name in ("ingest-landing", "monitor", "retrain") for r in flow_runs(port, name)]
    assert all(r["state_type"] == "COMPLETED" for r in runs), [r["state_type"] for r in runs]
    assert {r["work_pool_name"] for r in runs} == {config.cluster.work_pool}

    # tuning spread over the two Dask workers: one study in PostgreSQL holding every trial
    import optuna

    from ctloop.tuning import open_storage

    assert config.tuning.storage.startswith("postgresql+psycopg://")
    storage = open_storage(config.tuning.storage)
    study_name = champion.tags["ctloop.tuning_study"]
    assert study_name in optuna.get_all_study_names(storage=storage)
    trials = optuna.load_study(study_name=study_name, storage=storage).trials
    assert len(trials) == config.tuning.trials
    assert all(t.state.is_finished() for t in trials)
    assert {t.user_attrs["worker"] for t in trials} == {"dask:ctloop-1", "dask:ctloop-2"}
    storage.engine.dispose()

    # the MLflow registry lives in PostgreSQL
    import psycopg

    with psycopg.connect(config.cluster.database_url("mlflow")) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM model_versions WHERE name = %s", (config.registry_name,)
        ).fetchone()
    assert n >= 1

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    time.sleep(1)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
