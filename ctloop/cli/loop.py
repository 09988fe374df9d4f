"""Continuous-training commands: `ctloop replay` (and `ctloop up`)."""

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from ctloop.cli.options import (
    ConfigOpt,
    ExcludeOpt,
    HomeOpt,
    IdOpt,
    JsonOpt,
    TargetOpt,
    TaskOpt,
    TimeOpt,
    print_json,
)


def register(app, make_config, handles_errors) -> None:
    """Add this area's commands to the app (contract: `ctloop.cli.main._register_extensions`)."""

    @app.command()
    @handles_errors
    def replay(
        data: Annotated[Path, typer.Argument(help="labelled history, CSV or Parquet")],
        target: TargetOpt = None,
        timestamp: TimeOpt = None,
        freq: Annotated[str, typer.Option(help="batch length, a pandas frequency")] = "1D",
        task: TaskOpt = None,
        id_col: IdOpt = None,
        exclude: ExcludeOpt = None,
        schedule_every: Annotated[int, typer.Option(help="batches between scheduled retrains")] = 7,
        policies: Annotated[
            str, typer.Option(help="comma list")
        ] = "never,every_batch,schedule,ctloop",
        min_new_rows: Annotated[
            int | None,
            typer.Option(help="new-data rule for ctloop (off unless set here or in config)"),
        ] = None,
        out: Annotated[
            Path | None, typer.Option(help="folder for replay.png and replay.html")
        ] = None,
        config_path: ConfigOpt = None,
        home: HomeOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Replay a labelled history as batches and compare retraining policies (prequential)."""
        from rich.console import Console
        from rich.table import Table

        from ctloop.errors import InputError
        from ctloop.lake.snapshots import read_batch
        from ctloop.loop.replay import plot_replay, report_html
        from ctloop.loop.replay import replay as run_replay

        if not data.exists():
            raise InputError(f"{data}: file not found")
        config, root = make_config(config_path, home, target, task, timestamp, id_col, exclude)
        config.require_target()
        if min_new_rows is not None:
            config.triggers.min_new_rows = min_new_rows
        elif "min_new_rows" not in config.triggers.model_fields_set:
            config.triggers.min_new_rows = None  # a volume rule is a schedule by rows: off here
        frame = read_batch(data)
        chosen = tuple(p.strip() for p in policies.split(",") if p.strip())
        result = run_replay(frame, config, freq, schedule_every, chosen)
        folder = out or root.reports / f"replay-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        png = plot_replay(result, folder / "replay.png")
        page = report_html(result, png, folder / "replay.html")
        answer = result.as_json()
        answer.update({"plot": str(png), "report": str(page)})
        if as_json:
            print_json(answer)
            return
        console = Console()
        table = Table(title=f"replay of {data.name}: {result.batches} batches of {freq}")
        for col in ("policy", f"mean {result.metric_name}", "retrains", "compute s"):
            table.add_column(col)
        for name, p in result.policies.items():
            metric = "n/a" if p.mean_metric is None else f"{p.mean_metric:.4f}"
            table.add_row(name, metric, str(p.retrains), f"{p.seconds:.1f}")
        console.print(table)
        console.print(f"plot: {png}\nreport: {page}")

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

        from ctloop.config.settings import dump_config

        config, root = make_config(config_path, home, target, task, timestamp, id_col, exclude)
        config.require_target()
        if profile:
            from ctloop.config.settings import Profile
            from ctloop.errors import ConfigError

            try:
                config.profile = Profile(profile)
            except ValueError:
                raise ConfigError(f"--profile: {profile!r} is not embedded or cluster") from None
        resolved = root.root / "up-config.yaml"
        dump_config(config, resolved)
        from deployments.stack import StackOptions, run_stack

        options = StackOptions(
            prefect_port=prefect_port,
            mlflow_port=mlflow_port or None,
            server_port=server_port or None,
            poll_seconds=poll_seconds,
        )
        console = Console()

        def announce(urls: dict[str, str]) -> None:
            for name, url in urls.items():
                console.print(f"{name:>15}: {url}")
            console.print("ctloop is up; drop files into the landing folder. Ctrl-C stops all.")
            sys.stdout.flush()

        run_stack(config, resolved, root, options, announce)
