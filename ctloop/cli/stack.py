"""Long-running commands: `up` (the whole loop) and `ui` (the Prefect, MLflow and Optuna UIs)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer  # module level: typer resolves the string annotations in these globals

from ctloop.cli import run
from ctloop.cli.app import app, handles_errors, make_config
from ctloop.cli.options import (
    ConfigOpt,
    ExcludeOpt,
    HomeOpt,
    IdOpt,
    TargetOpt,
    TaskOpt,
    TimeOpt,
)
from ctloop.names import DEFAULT_PREFECT_PORT


@app.command()
@handles_errors
def up(
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    profile: Annotated[
        str | None,
        typer.Option(help="embedded or cluster (default: the config's profile)"),
    ] = None,
    prefect_port: Annotated[
        int, typer.Option(help="Prefect server port (cluster: cluster.prefect_port)")
    ] = DEFAULT_PREFECT_PORT,
    mlflow_port: Annotated[int, typer.Option(help="MLflow UI port (0: none)")] = 5000,
    server_port: Annotated[int, typer.Option(help="model server port (0: none)")] = 8000,
    optuna_port: Annotated[
        int, typer.Option(help="Optuna dashboard port (0: a free port, -1: none)")
    ] = 8080,
    poll_seconds: Annotated[float, typer.Option(help="landing folder poll interval")] = 1.0,
    target: TargetOpt = None,
    task: TaskOpt = None,
    timestamp: TimeOpt = None,
    id_col: IdOpt = None,
    exclude: ExcludeOpt = None,
) -> None:
    """Run the whole loop: Prefect server, deployments, model server, landing watcher.

    `--profile cluster`: PostgreSQL-backed Prefect server with process workers, MLflow
    server, Dask scheduler and workers (see the `cluster` section of the config).
    """
    from rich.console import Console

    from ctloop.config.settings import Profile, dump_config
    from ctloop.errors import ConfigError

    config, root = make_config(config_path, home, target, task, timestamp, id_col, exclude)
    config.require_target()
    if profile:
        try:
            config.profile = Profile(profile)
        except ValueError:
            raise ConfigError(f"--profile: {profile!r} is not embedded or cluster") from None
    resolved = root.root / "up-config.yaml"
    dump_config(config, resolved)
    console = Console()

    def announce(urls: dict[str, str]) -> None:
        for name, url in urls.items():
            console.print(f"{name:>15}: {url}")
        console.print("ctloop is up; drop files into the landing folder. Ctrl-C stops all.")
        sys.stdout.flush()

    run.up(
        config,
        resolved,
        root,
        prefect_port=prefect_port,
        mlflow_port=mlflow_port or None,
        server_port=server_port or None,
        optuna_port=optuna_port if optuna_port >= 0 else None,
        poll_seconds=poll_seconds,
        announce=announce,
    )


@app.command()
@handles_errors
def ui(
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    prefect_port: Annotated[int, typer.Option(help="Prefect UI port")] = DEFAULT_PREFECT_PORT,
    mlflow_port: Annotated[int, typer.Option(help="MLflow UI port")] = 5000,
    optuna_port: Annotated[
        int, typer.Option(help="Optuna dashboard port (0: a free port, -1: none)")
    ] = 8080,
) -> None:
    """Serve the Prefect UI (with this home's deployments, so "Run" works), the MLflow UI and
    the Optuna dashboard on this home's state until Ctrl-C."""
    from rich.console import Console

    from ctloop.config.settings import dump_config

    config, root = make_config(config_path, home)
    resolved = root.root / "ui-config.yaml"
    dump_config(config, resolved)
    console = Console()

    def announce(urls: dict[str, str]) -> None:
        for name, url in urls.items():
            console.print(f"{name:>16}: {url}")
        console.print("the UIs answer; Ctrl-C stops them all.")
        sys.stdout.flush()

    console.print(
        f"starting the Prefect server with this home's deployments, the MLflow UI and the "
        f"Optuna dashboard (logs in {root.logs}); their URLs follow once they answer"
    )
    run.ui(
        config,
        resolved,
        root,
        prefect_port=prefect_port,
        mlflow_port=mlflow_port or None,
        optuna_port=optuna_port if optuna_port >= 0 else None,
        announce=announce,
    )
