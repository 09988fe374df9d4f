"""System test: the demo stream through `ctloop up --profile cluster` on this machine.

PostgreSQL at 127.0.0.1:5432: a PostgreSQL-backed Prefect server with a process work pool and
two workers, a PostgreSQL-backed MLflow server, a Dask scheduler with two workers. The demo
stream (a compact script with every episode: bootstrap, a corrupt batch, a gradual shift and a
concept drift) is fed the production way (`deployments.stream`); one Prefect worker is killed,
with the flow run it was executing, in the middle of a retrain. The outcomes must be those of
the embedded demo on the same script and config: the same snapshots, the same quarantined
file, the same model versions with the same triggers, the same champion, nothing lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
import yaml
from clitools import prefect_api as api
from test_up import BIN, stop_up, wait_for

from ctloop.config.settings import Profile
from ctloop.data.demo import DemoScript, demo_config, demo_stream
from ctloop.launcher import free_port
from deployments import cluster as cl

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# every episode of the demo, in 5 days (labels a day late): 2 labelled days bootstrap the first
# model, a gradual shift from day 1, day 2 is corrupt, the concept drift on day 3 (retrain once
# 2 labelled days of it arrived: the last file). Every flow run on a process worker pays a
# process start: no day more than the episodes need, and the rules sized to the script.
SCRIPT = DemoScript(
    days=5,
    rows_per_day=300,
    label_lag_days=1,
    shift_start=1,
    shift_end=3,
    concept_drift_day=3,
    corrupt_day=2,
)


def _config(home):
    config = demo_config(str(home), rows_per_day=SCRIPT.rows_per_day)
    config.triggers.bootstrap_rows = 2 * SCRIPT.rows_per_day
    config.triggers.drift_min_rows = 2 * SCRIPT.rows_per_day
    config.triggers.schedule_cron = None
    config.triggers.monitor_every_minutes = None
    config.tuning.enabled = True
    config.tuning.workers = 2
    config.tuning.trials = 4  # two per Dask worker: enough to show the study shared out
    # a budget, not a proof: the 4 trials end the study; generous for a busy 2-core machine
    config.tuning.timeout_seconds = 900
    return config


def _children(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture
def cluster_stack(tmp_path):
    home = tmp_path / "cluster"
    config = _config(home)
    config.cluster.database_prefix = f"ctloop_t{uuid.uuid4().hex[:10]}"
    config.cluster.prefect_port = free_port()
    config.cluster.mlflow_port = free_port()
    config.cluster.dask_port = free_port()
    config.cluster.work_pool = f"pool-{uuid.uuid4().hex[:6]}"
    config.cluster.prefect_workers = 2
    config.cluster.dask_workers = 2
    config.cluster.lost_run_seconds = 60
    config.paths.lake = (home / "lake").as_uri()  # the lake through fsspec: file:///...
    path = tmp_path / "ctloop.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CTLOOP_"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    server_port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "ctloop"), "up", "-c", str(path), "--profile", "cluster", "--mlflow-port", "0",
         "--server-port", str(server_port), "--optuna-port", "-1", "--poll-seconds", "0.5"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    log: list[str] = []
    threading.Thread(target=lambda: [log.append(x) for x in proc.stdout], daemon=True).start()
    config.profile = Profile.CLUSTER  # what `up --profile cluster` resolves
    try:
        # not waited for here: the test runs the embedded demo while the stack starts
        yield {"proc": proc, "log": log, "home": home, "config": config}
    finally:
        stop_up(proc)
        cl.drop_databases(config.cluster)


def _flow_run(port: int, run_id: str) -> dict:
    return api(port, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})[0]


class WorkerKiller(threading.Thread):
    """Kills the Prefect worker executing the first retrain that trains (its `select-window`
    task has started), together with that flow run's process: a machine lost mid-run."""

    def __init__(self, stack_proc: subprocess.Popen, port: int):
        super().__init__(daemon=True)
        self.stack_proc, self.port = stack_proc, port
        self.killed_run: str | None = None
        self.killed_worker: str | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def _victim(self, run_id: str) -> tuple[psutil.Process, psutil.Process] | None:
        for worker in _children(self.stack_proc):
            if "worker start --pool" not in " ".join(worker.cmdline()):
                continue
            for child in worker.children(recursive=True):
                try:
                    if child.environ().get("PREFECT__FLOW_RUN_ID") == run_id:
                        return worker, child
                except psutil.Error:
                    continue
        return None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                tasks = api(self.port, "/task_runs/filter",
                            {"task_runs": {"name": {"like_": "select-window"}}})  # fmt: skip
                for task_run in tasks:
                    run = _flow_run(self.port, task_run["flow_run_id"])
                    if run["state_type"] != "RUNNING":
                        continue
                    found = self._victim(run["id"])
                    if found:
                        worker, child = found
                        self.killed_worker = " ".join(worker.cmdline())
                        for p in [worker, *worker.children(recursive=True)]:
                            p.kill()
                        self.killed_run = run["id"]
                        return
                time.sleep(0.3)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def _outcome(config) -> dict:
    """What a stream leaves behind, in the stores every profile has."""
    from ctloop.lake import snapshots as lake
    from ctloop.registry.store import CHAMPION, open_registry
    from ctloop.stores.home import home_of

    registry = open_registry(config)
    versions = sorted(registry.versions(), key=lambda r: int(r.version))
    champion = registry.by_alias(CHAMPION)
    where = home_of(config)
    return {
        "snapshots": sorted(m.snapshot for m in lake.list_snapshots(where)),
        "quarantined": sorted(Path(q.path).name for q in lake.list_quarantined(where)),
        "versions": [(r.semver, r.tags["ctloop.trigger"]) for r in versions],
        "champion": (champion.semver, champion.tags["ctloop.trigger"]) if champion else None,
        "champion_ref": champion,
    }


def test_demo_stream_on_the_cluster_matches_the_embedded_demo(
    prefect_harness, cluster_stack, tmp_path
):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.stream import StreamError, drive_stream
    from flows.demo import run_demo

    proc, log, config = cluster_stack["proc"], cluster_stack["log"], cluster_stack["config"]
    port = config.cluster.prefect_port

    # -- the embedded demo on the same script and config: the expected outcomes
    embedded_home = tmp_path / "embedded"
    embedded = _config(embedded_home)
    run_demo(embedded, SCRIPT)
    expected = _outcome(embedded)
    # the script did its job: a first model, then a drift retrain is champion
    assert expected["versions"] == [("1.0.0", "new_data"), ("1.1.0", "drift")], expected
    assert expected["champion"] == ("1.1.0", "drift"), expected
    assert expected["quarantined"] == ["day02_labelled.csv"]

    wait_for(lambda: any("ctloop is up" in x for x in log), 300, "start-up", proc, log)

    # -- every component is its own process, bound to 127.0.0.1
    assert config.paths.tracking_uri.startswith("http://127.0.0.1:")
    commands = [" ".join(p.cmdline()) for p in _children(proc)]
    assert sum("worker start --pool" in c for c in commands) == 2, commands
    assert sum(" worker tcp://" in c for c in commands) == 2, commands
    assert any("mlflow server" in c or "mlflow.server" in c for c in commands), commands
    pools = api(port, "/work_pools/filter", {})
    assert any(p["name"] == config.cluster.work_pool and p["type"] == "process" for p in pools)
    deployments = api(port, "/deployments/filter", {})
    assert {d["work_pool_name"] for d in deployments} == {config.cluster.work_pool}
    automations = api(port, "/automations/filter", {})
    assert cl.lost_runs_automation_name(config) in {a["name"] for a in automations}

    # -- the stream, with one worker killed in the middle of a retrain
    killer = WorkerKiller(proc, port)
    killer.start()

    def alive():
        assert proc.poll() is None, "ctloop up exited:\n" + "".join(log[-50:])

    home = cluster_stack["home"]
    with temporary_settings(updates={PREFECT_API_URL: config.cluster.prefect_api()}):
        try:
            steps = drive_stream(
                config, demo_stream(SCRIPT), home / "landing", home / "features", liveness=alive
            )
        except StreamError as exc:
            killed = f"killed run {killer.killed_run} of worker {killer.killed_worker!r}"
            tail = "".join(log[-80:])
            pytest.fail(f"{exc}\n{killed}\n-- the last lines of `ctloop up`:\n{tail}")
    killer.stop.set()
    print(*steps, sep="\n")  # what each file led to, and how long it took (shown on failure)
    assert killer.error is None, killer.error
    assert killer.killed_run, "no retrain was caught mid-run"

    # the run of the lost worker was rescheduled and completed by the other worker
    run = _flow_run(port, killer.killed_run)
    assert run["state_type"] == "COMPLETED"
    assert run["run_count"] >= 2
    url = f"http://127.0.0.1:{port}/api/flow_run_states/?flow_run_id={killer.killed_run}"
    with urllib.request.urlopen(url, timeout=10) as response:
        names = [s["name"] for s in json.loads(response.read())]
    assert "AwaitingRetry" in names, names
    workers = api(port, f"/work_pools/{config.cluster.work_pool}/workers/filter", {})
    assert len(workers) == 2

    # -- the same outcomes as the embedded demo: nothing lost, nothing doubled
    assert config.paths.lake.startswith("file:///")
    assert list((home / "lake" / "snapshots").glob("*.parquet")), "the lake is not at its URL"
    got = _outcome(config)
    assert got["snapshots"] == expected["snapshots"]
    assert got["quarantined"] == expected["quarantined"]
    assert got["versions"] == expected["versions"]
    assert got["champion"] == expected["champion"]
    assert [s.outcome for s in steps].count("quarantined") == 1
    assert sum(s.outcome == "accepted" for s in steps) == len(expected["snapshots"])

    # tuning spread over the two Dask workers: one study in PostgreSQL holding every trial
    import optuna

    from ctloop.model.tune import open_storage

    assert config.tuning.storage.startswith("postgresql+psycopg://")
    storage = open_storage(config.tuning.storage)
    study_name = got["champion_ref"].tags["ctloop.tuning_study"]
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
    assert n == len(expected["versions"])

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    time.sleep(1)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
