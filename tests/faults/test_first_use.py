"""Several commands started at once on a fresh home create each store once, and all go on.

Before, two of six parallel `ctloop ingest` on a fresh home failed: every command's ephemeral
Prefect server migrated the new database at the same time (`table configuration already
exists`; Alembic's `expected to match one row when updating ... 0 found`). Four processes that
migrate the same new Prefect database at once fail this way here too; `prepare_home` takes the
home's first-use lock, so only the first creates the stores and the others find them made."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

PREPARE = """
import sys
from ctloop.stores.home import activate, home_of
from ctloop.config.settings import Config
config = Config.model_validate({"paths": {"home": sys.argv[1]}})
activate(home_of(config))
from ctloop.cli.run import prepare_home
prepare_home(config)
print("ready")
"""


def test_parallel_first_use_creates_each_store_once(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTLOOP_", "PREFECT_"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    commands = [
        subprocess.Popen(
            [sys.executable, "-c", PREPARE, str(home)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for command in commands:
        out, err = command.communicate(timeout=600)
        assert command.returncode == 0 and out.strip() == "ready", err[-3000:]
    with sqlite3.connect(home / "prefect" / "prefect.db") as db:
        [(revision,)] = db.execute("SELECT version_num FROM alembic_version").fetchall()
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert revision and "flow_run" in tables
    with sqlite3.connect(home / "mlflow" / "mlflow.db") as db:
        assert db.execute("SELECT count(*) FROM experiments").fetchone()[0] >= 1
    assert (home / "prefect" / ".stores-ready").exists()
