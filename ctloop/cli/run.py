"""The CLI's one way up into `flows/` and `deployments/`: each function imports its flow inside.

Every other module of `ctloop` stays importable without Prefect (a unit test reads the imports).
Call `ctloop.cli.app.make_config` first: it points Prefect at the home before Prefect loads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ctloop.config.settings import Config
    from ctloop.data.demo import DemoScript
    from ctloop.stores.home import Home


def _guard(config: Config) -> None:
    """Before a command's first flow: what it starts goes with it (Prefect's ephemeral API
    server when no server is set), and the home's stores exist."""
    from ctloop.launcher import guard_descendants

    guard_descendants()
    prepare_home(config)


def prepare_home(config: Config) -> None:
    """Create the home's stores once, under the home's first-use lock: its folders, Prefect's
    database (when no Prefect server is set: the ephemeral server of each command would
    otherwise migrate a new database at the same time as the others) and the registry's.
    A stamp file makes every later call one `stat`."""
    from ctloop.stores.home import first_use_lock, home_of

    home = home_of(config)
    stamp = home.prefect / ".stores-ready"
    if stamp.exists():
        return
    with first_use_lock(home):
        if stamp.exists():
            return
        home.ensure()
        from prefect.settings import get_current_settings

        if not get_current_settings().api.url:
            import asyncio

            from prefect.server.database import provide_database_interface

            asyncio.run(provide_database_interface().create_db())
        from ctloop.registry.store import open_registry

        open_registry(config)
        stamp.touch()


def ingest(paths: list[str], config: Config) -> dict[str, Any]:
    """The `ingest` flow on files: `{accepted, quarantined}`."""
    _guard(config)
    from flows.ingest import ingest as ingest_flow

    return ingest_flow(paths, config)


def ingest_landing(folder: str | None, config: Config) -> dict[str, Any]:
    """The `ingest-landing` flow: every new file of the landing folder, once."""
    _guard(config)
    from flows.ingest import ingest_landing as ingest_landing_flow

    return ingest_landing_flow(folder, config)


def retrain(config: Config, reason: str) -> dict[str, Any]:
    """The `retrain` flow, triggered by hand (tagged `trigger:manual`)."""
    _guard(config)
    from prefect import tags

    from flows.retrain import RetrainRequest
    from flows.retrain import retrain as retrain_flow

    with tags("trigger:manual"):
        return retrain_flow(RetrainRequest(trigger="manual", reason=reason), config)


def monitor(path: str | None, config: Config) -> dict[str, Any]:
    """The `monitor` flow on a batch file, or on the newest snapshot."""
    _guard(config)
    from flows.monitor import monitor as monitor_flow

    return monitor_flow(path, config)


def score_batch(source: str, out: str, config: Config) -> dict[str, Any]:
    """The `score-batch` flow: a file or snapshot scored by the champion."""
    _guard(config)
    from flows.score_batch import score_batch as score_batch_flow

    return score_batch_flow(source, out, config)


def demo(config: Config, script: DemoScript, progress: Callable[[int, int, str], None]) -> list:
    """The scripted demo stream through the whole loop; one row per batch."""
    _guard(config)
    from flows.demo import run_demo

    return run_demo(config, script, progress)


def up(
    config: Config,
    config_path: Path,
    home: Home,
    *,
    prefect_port: int,
    mlflow_port: int | None,
    server_port: int | None,
    optuna_port: int | None,
    poll_seconds: float,
    announce: Callable[[dict[str, str]], None],
) -> None:
    """The whole loop (`deployments/stack.py`) until Ctrl-C or SIGTERM."""
    # only the watchdog: its stack creates the stores before its children, and Prefect must not
    # be imported here before the stack has set PREFECT_API_URL (its settings are read once)
    from ctloop.launcher import guard_descendants

    guard_descendants()
    from deployments.stack import StackOptions, run_stack

    options = StackOptions(
        prefect_port=prefect_port,
        mlflow_port=mlflow_port,
        server_port=server_port,
        optuna_port=optuna_port,
        poll_seconds=poll_seconds,
    )
    run_stack(config, config_path, home, options, announce)


def ui(
    config: Config,
    config_path: Path,
    home: Home,
    *,
    prefect_port: int,
    mlflow_port: int | None,
    optuna_port: int | None,
    announce: Callable[[dict[str, str]], None],
) -> None:
    """The UIs with the home's deployments served (`deployments/stack.py`) until Ctrl-C."""
    from ctloop.launcher import guard_descendants

    guard_descendants()
    from deployments.stack import StackOptions, run_ui

    options = StackOptions(
        prefect_port=prefect_port, mlflow_port=mlflow_port, optuna_port=optuna_port
    )
    run_ui(config, config_path, home, options, announce)
