"""The state home and the promise that the core never imports Prefect or MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ctloop.config.settings import load_config
from ctloop.stores.home import (
    Home,
    activate,
    forget_server,
    home_of,
    record_server,
    running_server,
)


def test_ensure_creates_every_folder_under_the_root(tmp_path):
    home = Home(tmp_path / "h")
    assert not home.root.exists()
    assert home.ensure() is home
    for folder in (
        home.snapshots,
        home.manifests,
        home.schema_dir,
        home.quarantine,
        home.mlflow / "artifacts",
        home.prefect,
        home.reports,
    ):
        assert folder.is_dir()
        assert folder.resolve().is_relative_to(home.root.resolve())
    home.ensure()  # idempotent


def test_home_of_and_tracking_uri(tmp_path):
    cfg = load_config(overrides={"paths.home": str(tmp_path / "state")}, environ={})
    home = home_of(cfg)
    assert home.root == (tmp_path / "state").resolve()
    assert home.tracking_uri(cfg) == f"sqlite:///{home.root / 'mlflow' / 'mlflow.db'}"
    assert home.artifact_root().startswith("file://")
    remote = load_config(overrides={"paths.tracking_uri": "http://mlflow:5000"}, environ={})
    assert home_of(remote).tracking_uri(remote) == "http://mlflow:5000"


def test_activate_points_prefect_at_the_home_and_keeps_explicit_settings(tmp_path):
    home = Home(tmp_path)
    env = {"PREFECT_HOME": "/elsewhere", "DO_NOT_TRACK": "0", "PREFECT_API_URL": "http://x/api"}
    activate(home, env)
    assert env["PREFECT_HOME"] == str(home.prefect)  # always follows the home
    assert env["DO_NOT_TRACK"] == "0"  # an explicit setting wins
    assert env["PREFECT_API_URL"] == "http://x/api"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"  # no idle job consumers


def test_a_running_up_server_is_used_only_while_its_announcer_lives_and_its_port_answers(
    tmp_path,
):
    import socket

    home = Home(tmp_path / "h")
    assert running_server(home) is None  # no record
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/api"
        record_server(home, url)
        assert running_server(home) == url
        env: dict[str, str] = {}
        activate(home, env)
        assert env["PREFECT_API_URL"] == url
        explicit = {"PREFECT_API_URL": "http://elsewhere:4200/api"}
        activate(home, explicit)
        assert explicit["PREFECT_API_URL"] == "http://elsewhere:4200/api"

        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        record_server(home, url, pid=int(dead.stdout))  # a `ctloop up` that is gone
        assert running_server(home) is None
        forget_server(home)  # another process's record: kept
        assert (home.prefect / "server.json").exists()
        record_server(home, url)
    assert running_server(home) is None  # the port closed
    env = {}
    activate(home, env)
    assert "PREFECT_API_URL" not in env
    forget_server(home)
    assert not (home.prefect / "server.json").exists()
    (home.prefect / "server.json").write_text("{not json")
    assert running_server(home) is None


def test_core_imports_without_prefect_or_mlflow():
    code = (
        "import sys\n"
        "import ctloop.config.settings, ctloop.errors, ctloop.stores.home, ctloop.data.schema\n"
        "import ctloop.validate.checks, ctloop.lake.snapshots, ctloop.model.train\n"
        "import ctloop.model.evaluate, ctloop.gates.blessing, ctloop.monitor.drift\n"
        "import ctloop.loop.triggers, ctloop.data.demo, ctloop.registry.store\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'mlflow'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
