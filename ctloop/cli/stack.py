"""Long-running commands: `up` (the whole loop) and `ui` (the Prefect and MLflow UIs)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer  # module level: typer resolves the string annotations in these globals

from ctloop.cli import run
from ctloop.cli.app import app, handles_errors, make_config, out
from ctloop.cli.options import (
    ConfigOpt,
    ExcludeOpt,
    HomeOpt,
    IdOpt,
    TargetOpt,
    TaskOpt,
    TimeOpt,
)


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
    ] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="MLflow UI port (0: none)")] = 5000,
    server_port: Annotated[int, typer.Option(help="model server port (0: none)")] = 8000,
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
        poll_seconds=poll_seconds,
        announce=announce,
    )


@app.command()
@handles_errors
def ui(
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    prefect_port: Annotated[int, typer.Option(help="Prefect UI port")] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="MLflow UI port")] = 5000,
) -> None:
    """Serve the Prefect UI and the MLflow UI on this home's state until Ctrl-C."""
    import os

    from ctloop.launcher import Launcher

    config, root = make_config(config_path, home)
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    prefect_url = f"http://127.0.0.1:{prefect_port}"
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    with Launcher(root.logs) as launcher:
        launcher.start(
            "prefect ui",
            [str(bindir / "prefect"), "server", "start", "--host", "127.0.0.1",
             "--port", str(prefect_port)],
            # the UI must call this server's API, not the one on the default port
            {**env, "PREFECT_UI_API_URL": f"{prefect_url}/api"},
        )  # fmt: skip
        launcher.start(
            "mlflow ui",
            [str(bindir / "mlflow"), "ui", "--host", "127.0.0.1", "--port", str(mlflow_port),
             "--backend-store-uri", root.tracking_uri(config)],
            env,
        )  # fmt: skip
        out.print(
            f"Prefect UI: {prefect_url}   MLflow UI: {mlflow_url}   (Ctrl-C stops both; "
            f"logs in {root.logs})"
        )
        try:
            launcher.wait_for_url(f"{prefect_url}/api/health", "the Prefect UI", 180)
            launcher.wait_for_url(mlflow_url, "the MLflow UI", 120)
            launcher.wait()
        except KeyboardInterrupt:
            pass
