"""Cluster profile: store resolution and idempotent database creation on the local PostgreSQL."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from ctloop.config.settings import ClusterConfig, Config, Profile, load_config
from ctloop.errors import CtloopError
from deployments import cluster as cl


def test_embedded_profile_leaves_stores_empty():
    config = Config()
    assert config.paths.tracking_uri is None
    assert config.tuning.storage is None
    assert config.serving.prediction_log_url is None


def test_cluster_profile_points_stores_at_postgres_and_the_mlflow_server():
    config = Config(
        profile="cluster",
        cluster={"postgres_url": "postgresql://u@db.example:5433", "database_prefix": "prod",
                 "mlflow_port": 5055},
    )  # fmt: skip
    assert config.paths.tracking_uri == "http://127.0.0.1:5055"
    assert config.tuning.storage == "postgresql+psycopg://u@db.example:5433/prod_optuna"
    assert config.serving.prediction_log_url == (
        "postgresql+psycopg://u@db.example:5433/prod_predictions"
    )
    assert config.cluster.database_url("prefect", "asyncpg") == (
        "postgresql+asyncpg://u@db.example:5433/prod_prefect"
    )
    assert config.cluster.prefect_api() == "http://127.0.0.1:4200/api"
    assert config.cluster.dask_scheduler() == "tcp://127.0.0.1:8786"


def test_explicit_urls_win_and_switching_profile_resolves(tmp_path):
    path = tmp_path / "ctloop.yaml"
    path.write_text(
        "profile: cluster\n"
        "paths: {tracking_uri: 'http://mlflow.internal:80'}\n"
        "cluster: {dask_address: 'tcp://dask.internal:8786', mlflow_url: 'http://x:1'}\n"
    )
    config = load_config(path)
    assert config.paths.tracking_uri == "http://mlflow.internal:80"
    assert config.cluster.dask_scheduler() == "tcp://dask.internal:8786"
    embedded = Config()
    embedded.profile = Profile.CLUSTER
    assert embedded.paths.tracking_uri == "http://127.0.0.1:5000"
    assert load_config(path, environ={"CTLOOP_PROFILE": "embedded"}).tuning.storage is None


def test_bad_database_prefix_is_refused():
    with pytest.raises(ValueError):
        ClusterConfig(database_prefix="drop table; --")


def test_prefect_server_environment_uses_asyncpg():
    env = cl.server_environment(Config(profile="cluster"))
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].endswith("/ctloop_prefect")


@pytest.fixture
def cluster():
    c = ClusterConfig(database_prefix=f"t_{uuid.uuid4().hex[:10]}")
    yield c
    cl.drop_databases(c)


def test_databases_are_created_once_and_usable(cluster):
    assert cl.existing_databases(cluster) == []
    created = cl.ensure_databases(cluster)
    assert sorted(created) == sorted(cluster.database(c) for c in cl.COMPONENTS)
    assert cl.ensure_databases(cluster) == []  # idempotent: a second start creates nothing
    assert len(cl.existing_databases(cluster)) == len(cl.COMPONENTS)
    url = cluster.database_url("optuna")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == cluster.database("optuna")
    cl.drop_databases(cluster)
    assert cl.existing_databases(cluster) == []


def test_optuna_study_lives_in_the_cluster_database(cluster):
    import optuna

    from ctloop.model.tune import open_storage

    cl.ensure_databases(cluster)
    config = Config(profile="cluster", cluster=cluster.model_dump())
    storage = open_storage(config.tuning.storage)
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    again = optuna.load_study(study_name="s", storage=open_storage(config.tuning.storage))
    assert len(again.trials) == 3


def test_unreachable_postgres_is_one_clear_error():
    bad = ClusterConfig(postgres_url="postgresql://postgres@127.0.0.1:1", database_prefix="x")
    with pytest.raises(CtloopError, match="cluster.postgres_url"):
        cl.ensure_databases(bad)


def test_lost_run_window_must_exceed_the_heartbeat(tmp_path):
    path = tmp_path / "ctloop.yaml"
    path.write_text("cluster:\n  heartbeat_seconds: 60\n  lost_run_seconds: 50\n")
    with pytest.raises(CtloopError, match="lost_run_seconds \\(50\\) must exceed heartbeat"):
        load_config(path)
    assert ClusterConfig(heartbeat_seconds=30, lost_run_seconds=45).lost_run_seconds == 45


def test_workers_send_the_heartbeats_the_lost_run_automation_watches():
    config = Config(profile=Profile.CLUSTER, cluster={"heartbeat_seconds": 40})
    env = cl.worker_environment(config)
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "40"
    assert env["PYTHONUNBUFFERED"] == "1"  # a killed worker's log keeps its last lines
    assert cl.lost_runs_automation_name(config) == "ctloop-ctloop-ctloop-lost-runs"


def test_the_lost_run_automation_watches_only_silence_while_running(prefect_harness):
    """A heartbeat opens the watch; any state change closes it. A run sent back to Scheduled
    (AwaitingConcurrencySlot, AwaitingRetry) stops beating without ending: rescheduling it
    once more, while another worker started it, kept the concurrency slot taken in a loop."""
    from prefect.automations import Automation

    config = Config(profile=Profile.CLUSTER, cluster={"lost_run_seconds": 75})
    deployment = str(uuid.uuid4())
    automation_id = cl.ensure_lost_run_automation(config, [deployment])
    assert cl.ensure_lost_run_automation(config, [deployment]) != automation_id  # replaced
    automation = Automation.read(name=cl.lost_runs_automation_name(config))
    trigger = automation.trigger
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.posture == "Proactive" and trigger.within.total_seconds() == 75
    # the server's own matching: every flow-run event closes the watch, whatever the state's
    # name (a retrain that ends `Skipped` sends `prefect.flow-run.Skipped`; a listed set of
    # state names missed it, and each skipped run was "lost" and rerun 60 s after it ended)
    from prefect.server.events.schemas.automations import EventTrigger as ServerTrigger

    server = ServerTrigger.model_validate(trigger.model_dump())
    for name in ("heartbeat", "AwaitingConcurrencySlot", "AwaitingRetry", "Pending",
                 "Submitting", "Running", "Completed", "Skipped", "Failed", "Crashed",
                 "Cancelled"):  # fmt: skip
        assert server.expects(f"prefect.flow-run.{name}"), name
    assert not server.expects("prefect.task-run.Completed")
    related = trigger.match_related
    assert related.root["prefect.resource.id"] == [f"prefect.deployment.{deployment}"]
    (action,) = automation.actions
    assert action.state == "SCHEDULED" and action.name == "AwaitingRetry" and action.force
