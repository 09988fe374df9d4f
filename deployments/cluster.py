"""The cluster profile: databases on PostgreSQL, and the processes `ctloop up --profile cluster`
starts (Prefect server + process workers, MLflow server, Dask scheduler + workers).

Everything here is idempotent: a database that exists is kept (the servers run their own
migrations on start), a work pool that exists is updated, deployments are upserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ctloop.config.settings import ClusterConfig, Config
from ctloop.errors import CtloopError
from ctloop.launcher import Launcher
from ctloop.stores.home import Home

COMPONENTS = ("prefect", "mlflow", "optuna", "predictions")
REPO_ROOT = Path(__file__).resolve().parent.parent


def _admin_url(cluster: ClusterConfig) -> str:
    """psycopg connection string of the maintenance database `postgres`."""
    scheme, rest = cluster.postgres_url.rstrip("/").split("://", 1)
    return f"{scheme.split('+')[0]}://{rest}/postgres"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ensure_database(cluster: ClusterConfig, component: str) -> bool:
    """Create `<prefix>_<component>` unless it exists; True when it was created now."""
    import psycopg
    from psycopg import errors

    name = cluster.database(component)
    try:
        with psycopg.connect(_admin_url(cluster), autocommit=True, connect_timeout=10) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return False
            try:
                conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
            except errors.DuplicateDatabase:  # created by a concurrent `up`
                return False
            return True
    except psycopg.OperationalError as exc:
        raise CtloopError(f"cluster.postgres_url: cannot connect ({exc})".strip()) from None


def ensure_databases(cluster: ClusterConfig) -> list[str]:
    """Create every component's database that is missing; returns the ones created."""
    return [cluster.database(c) for c in COMPONENTS if ensure_database(cluster, c)]


def existing_databases(cluster: ClusterConfig) -> list[str]:
    import psycopg

    with psycopg.connect(_admin_url(cluster), autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s) ORDER BY datname",
            ([cluster.database(c) for c in COMPONENTS],),
        ).fetchall()
    return [r[0] for r in rows]


def drop_databases(cluster: ClusterConfig) -> None:
    """Drop every component database (tests; closes other sessions first)."""
    import psycopg

    with psycopg.connect(_admin_url(cluster), autocommit=True, connect_timeout=10) as conn:
        for component in COMPONENTS:
            conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(cluster.database(component))} "
                         "WITH (FORCE)")  # fmt: skip


def server_environment(config: Config) -> dict[str, str]:
    """Environment of the Prefect server: its database on PostgreSQL."""
    return {
        "PREFECT_API_DATABASE_CONNECTION_URL": config.cluster.database_url("prefect", "asyncpg"),
        "PREFECT_API_DATABASE_MIGRATE_ON_START": "true",
    }


def start_prefect_server(launcher: Launcher, config: Config, env: dict[str, str]) -> None:
    bindir = Path(sys.executable).parent
    c = config.cluster
    launcher.start(
        "prefect server",
        [str(bindir / "prefect"), "server", "start", "--host", c.host, "--port",
         str(c.prefect_port)],
        {**env, **server_environment(config)},
        cwd=REPO_ROOT,
    )  # fmt: skip


def start_mlflow_server(
    launcher: Launcher, config: Config, home: Home, env: dict[str, str]
) -> None:
    bindir = Path(sys.executable).parent
    c = config.cluster
    artifacts = c.artifact_root or home.artifact_root()
    launcher.start(
        "mlflow server",
        [str(bindir / "mlflow"), "server", "--host", c.host, "--port", str(c.mlflow_port),
         "--backend-store-uri", c.database_url("mlflow", "psycopg2"),
         "--default-artifact-root", artifacts, "--workers", "1"],
        env,
        cwd=REPO_ROOT,
    )  # fmt: skip


def start_dask(launcher: Launcher, config: Config, env: dict[str, str]) -> None:
    """A Dask scheduler and `cluster.dask_workers` single-threaded workers."""
    bindir = Path(sys.executable).parent
    c = config.cluster
    launcher.start(
        "dask scheduler",
        [str(bindir / "dask"), "scheduler", "--host", c.host, "--port", str(c.dask_port),
         "--dashboard-address", ":0"],
        env,
        cwd=REPO_ROOT,
    )  # fmt: skip
    for i in range(c.dask_workers):
        launcher.start(
            f"dask worker {i + 1}",
            [str(bindir / "dask"), "worker", c.dask_scheduler(), "--nworkers", "1",
             "--nthreads", "1", "--host", c.host, "--dashboard-address", ":0",
             "--name", f"ctloop-{i + 1}"],
            env,
            cwd=REPO_ROOT,
        )  # fmt: skip


def dask_workers_ready(config: Config, count: int) -> bool:
    try:
        from distributed import Client

        with Client(config.cluster.dask_scheduler(), timeout=3) as client:
            return len(client.scheduler_info(n_workers=-1)["workers"]) >= count
    except Exception:  # noqa: BLE001 - not up yet
        return False


def worker_environment(config: Config) -> dict[str, str]:
    """Environment of a Prefect worker (and so of the flow runs it starts): poll often, send
    flow-run heartbeats, which the lost-run automation watches, and write the log unbuffered."""
    return {
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(config.cluster.heartbeat_seconds),
        # a worker lost to SIGKILL kept its last lines in a buffer: its log read only "started"
        "PYTHONUNBUFFERED": "1",
    }


def start_prefect_worker(
    launcher: Launcher, config: Config, env: dict[str, str], index: int
) -> None:
    bindir = Path(sys.executable).parent
    launcher.start(
        f"prefect worker {index}",
        [str(bindir / "prefect"), "worker", "start", "--pool", config.cluster.work_pool,
         "--type", "process", "--name", f"ctloop-worker-{index}", "--limit", "4"],
        {**env, **worker_environment(config)},
        cwd=REPO_ROOT,
    )  # fmt: skip


def lost_runs_automation_name(config: Config) -> str:
    return f"ctloop-{config.project}-{config.cluster.work_pool}-lost-runs"


def ensure_lost_run_automation(config: Config, deployment_ids: list[str]) -> str:
    """Reschedule the flow runs whose worker was lost, for another worker to run them again.

    Prefect's zombie-flow recipe (a proactive trigger on missing `prefect.flow-run.heartbeat`
    events), restricted to this project's deployments, with one change: the action puts the run
    back to `Scheduled` ("AwaitingRetry", as the UI's Retry does) instead of `Crashed`, so a
    run whose machine died is run again, same id and parameters, by a worker still alive.
    A run that crashes by itself is reported by its worker and is not retried: only silence is,
    and only while the run is Running (any state change closes the watch).
    Replaces an automation of the same name (idempotent). Returns the automation's id.
    """
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    name = lost_runs_automation_name(config)
    try:
        Automation.read(name=name).delete()
    except ValueError:  # none yet
        pass
    seconds = config.cluster.lost_run_seconds
    automation = Automation(
        name=name,
        description=f"ctloop: a flow run of project '{config.project}' silent for {seconds} s "
        "lost its worker; it is rescheduled for another worker.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            # a heartbeat, or any state change: only a run silent *while running* is lost. A
            # run sent back to Scheduled (AwaitingConcurrencySlot at its Running check,
            # AwaitingRetry) stops beating without ending; rescheduling it again, once more
            # while another worker starts it, held the concurrency slot in a loop. State
            # events are named after the state's *name* (`prefect.flow-run.Skipped`,
            # `.Submitting`), not its type: only the wildcard closes the watch on every one
            expect={"prefect.flow-run.*"},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification(
                {
                    "prefect.resource.role": "deployment",
                    "prefect.resource.id": [f"prefect.deployment.{d}" for d in deployment_ids],
                }
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.SCHEDULED,
                name="AwaitingRetry",
                message=f"no heartbeat for {seconds} s: the worker was lost; "
                "rescheduled for another worker",
                force=True,
            )
        ],
    )
    return str(automation.create().id)


def deploy_to_pool(config: Config) -> list[str]:
    """Create the process work pool (or keep it), upsert every deployment into it, and (re)create
    the automation that reschedules the runs of a lost worker."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from deployments.definitions import build_deployments

    pool = config.cluster.work_pool
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
    names, ids = [], []
    for deployment in build_deployments(config):
        deployment.work_pool_name = pool
        deployment.job_variables = {"working_dir": str(REPO_ROOT)}
        ids.append(str(deployment.apply(work_pool_name=pool)))
        names.append(f"{deployment.flow_name}/{deployment.name}")
    ensure_lost_run_automation(config, ids)
    return names


def prefect_workers_online(config: Config, count: int) -> bool:
    """Have `count` workers of the pool sent a heartbeat?"""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            workers = client.read_workers_for_work_pool(config.cluster.work_pool)
        return sum(getattr(w.status, "value", w.status) == "ONLINE" for w in workers) >= count
    except Exception:  # noqa: BLE001 - the API or the pool is not there yet
        return False


def main(argv: list[str] | None = None) -> None:
    """`python -m deployments.cluster {databases,deploy} -c FILE` (used by docker-compose.yml)."""
    import argparse

    from ctloop.config.settings import Profile, load_config

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("action", choices=["databases", "deploy"])
    parser.add_argument("--config", "-c", required=True, help="path to ctloop.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    config.profile = Profile.CLUSTER
    if args.action == "databases":
        created = ensure_databases(config.cluster)
        print(f"created: {', '.join(created) or 'none (all exist)'}")
    else:
        import os

        os.environ.setdefault("PREFECT_API_URL", config.cluster.prefect_api())
        print("\n".join(deploy_to_pool(config)))


if __name__ == "__main__":
    main()
