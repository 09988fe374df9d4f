"""Dockerfile and docker-compose.yml, checked without a Docker daemon (there is none here)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import yaml

from ctloop.config.settings import Profile, load_config

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_dockerfile_copies_what_exists_and_installs_the_package():
    text = (ROOT / "Dockerfile").read_text().splitlines()
    lines = [x.split() for x in text if x.strip() and not x.startswith("#")]
    assert lines[0][0] == "FROM"
    copies = [parts[1:-1] for parts in lines if parts[0] == "COPY"]
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
    assert any(p[:2] == ["RUN", "pip"] and "-e" in p for p in lines)


def test_compose_services_use_the_image_and_the_cluster_config():
    services = compose()["services"]
    assert {"postgres", "prefect-server", "mlflow", "dask-scheduler", "dask-worker",
            "prefect-worker", "ctloop", "databases"} <= set(services)  # fmt: skip
    config = load_config(ROOT / "deploy" / "ctloop.yaml")
    assert config.profile == Profile.CLUSTER
    c = config.cluster
    for name, service in services.items():
        if name == "postgres":
            continue
        assert service["build"] == "." and service["image"] == "ctloop:latest", name
        command = service["command"]
        if command[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(command[2]) is not None
    prefect = services["prefect-server"]
    assert prefect["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"] == c.database_url(
        "prefect", "asyncpg"
    )
    mlflow = services["mlflow"]["command"]
    assert mlflow[mlflow.index("--backend-store-uri") + 1] == c.database_url("mlflow", "psycopg2")
    assert mlflow[mlflow.index("--default-artifact-root") + 1] == c.artifact_root
    worker = services["prefect-worker"]["command"]
    assert worker[worker.index("--pool") + 1] == c.work_pool
    worker_env = services["prefect-worker"]["environment"]
    assert worker_env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(c.heartbeat_seconds)
    assert worker_env["PREFECT_API_URL"] == c.prefect_api()
    assert services["dask-worker"]["command"][2] == c.dask_scheduler()
    assert config.paths.tracking_uri == c.mlflow_url
    assert services["ctloop"]["environment"]["PREFECT_API_URL"] == c.prefect_api()


def test_cluster_module_command_line_parses():
    result = subprocess.run(
        [sys.executable, "-m", "deployments.cluster", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "databases" in result.stdout and "deploy" in result.stdout
