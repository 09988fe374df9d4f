"""The `ctloop` command line. Flows are imported inside commands, after the home is set."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

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
from ctloop.config.home import Home, activate, home_of
from ctloop.config.settings import CONFIG_FILENAME, Config, dump_config, load_config
from ctloop.errors import CtloopError, InputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="ctloop: continuous training for tabular ML on Prefect and MLflow.",
)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _handles_errors(fn: Callable) -> Callable:
    """One clear line and a non-zero exit for every ctloop error; no traceback."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CtloopError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted", 130)

    return wrapper


def _default_config_path(home: Path | None) -> Path | None:
    """`./ctloop.yaml`, else the config the home was made with (e.g. by `ctloop demo`)."""
    if Path(CONFIG_FILENAME).is_file():
        return Path(CONFIG_FILENAME)
    root = home or Path(os.environ.get("CTLOOP_HOME", ".ctloop"))
    candidate = root / CONFIG_FILENAME
    return candidate if candidate.is_file() else None


def _config(
    config_path: Path | None,
    home: Path | None,
    target: str | None = None,
    task: str | None = None,
    timestamp: str | None = None,
    id_col: str | None = None,
    exclude: str | None = None,
) -> tuple[Config, Home]:
    overrides: dict[str, Any] = {
        "paths.home": str(home) if home else None,
        "dataset.target": target,
        "dataset.task": task,
        "dataset.timestamp": timestamp,
        "dataset.id": id_col,
        "dataset.exclude": exclude,
    }
    config = load_config(config_path or _default_config_path(home), overrides)
    root = home_of(config)
    _prepare_environment(root)
    return config, root.ensure()


def _prepare_environment(root: Home) -> None:
    """Point Prefect at the home and quiet its console, before anything imports Prefect.

    Prefect's own console lines would bury the answer; its logs still reach the API (the UI).
    """
    activate(root)
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", "WARNING")


@app.command()
@_handles_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="CSV or Parquet files")],
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    target: TargetOpt = None,
    task: TaskOpt = None,
    timestamp: TimeOpt = None,
    id_col: IdOpt = None,
    exclude: ExcludeOpt = None,
) -> None:
    """Validate files and store them as snapshots; quarantine bad ones (exit 1)."""
    for path in paths:
        if not path.exists():
            raise InputError(f"{path}: file not found")
    config, _ = _config(config_path, home, target, task, timestamp, id_col, exclude)
    config.require_target()
    from flows.ingest import ingest as ingest_flow

    result = ingest_flow([str(p) for p in paths], config)
    if as_json:
        print_json(result)
    else:
        for a in result["accepted"]:
            note = "new snapshot" if a["new"] else "already in the lake"
            out.print(
                f"[green]accepted[/green] {a['path']}: {a['rows']} rows → {a['snapshot']} ({note})"
            )
            for w in a["warnings"]:
                out.print(f"  [yellow]warn[/yellow] {w['message']}")
        for q in result["quarantined"]:
            blocking = [r["message"] for r in q["reasons"] if r["severity"] == "block"]
            more = f" (+{len(blocking) - 1} more)" if len(blocking) > 1 else ""
            err.print(
                f"[red]error:[/red] {q['path']}: quarantined: {blocking[0] if blocking else ''}"
                f"{more}",
                highlight=False,
                soft_wrap=True,
            )
    if result["quarantined"]:
        raise typer.Exit(1)


@app.command()
@_handles_errors
def train(
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    reason: Annotated[str, typer.Option(help="why this run (recorded)")] = "manual run",
    target: TargetOpt = None,
    task: TaskOpt = None,
    timestamp: TimeOpt = None,
    id_col: IdOpt = None,
    exclude: ExcludeOpt = None,
) -> None:
    """Retrain now (manual trigger): train, bless against the champion, promote if blessed."""
    config, _ = _config(config_path, home, target, task, timestamp, id_col, exclude)
    config.require_target()
    from prefect import tags

    from flows.retrain import RetrainRequest, retrain

    with tags("trigger:manual"):
        result = retrain(RetrainRequest(trigger="manual", reason=reason), config)
    if as_json:
        print_json(result)
        return
    verdict = (
        "[green]blessed and promoted[/green]" if result["promoted"] else "[red]not blessed[/red]"
    )
    out.print(f"{verdict}: version {result['version']} {result['semver'] or ''}")
    for r in result["reasons"]:
        out.print(f"  - {r}")


@app.command()
@_handles_errors
def monitor(
    path: Annotated[
        Path | None, typer.Argument(help="batch file; newest snapshot if omitted")
    ] = None,
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    target: TargetOpt = None,
    timestamp: TimeOpt = None,
    id_col: IdOpt = None,
) -> None:
    """Check a batch for drift against the champion's training window (Evidently)."""
    if path is not None and not path.exists():
        raise InputError(f"{path}: file not found")
    config, _ = _config(config_path, home, target, None, timestamp, id_col)
    from flows.monitor import monitor as monitor_flow

    result = monitor_flow(str(path) if path else None, config)
    if as_json:
        print_json(result)
        return
    head = "[red]drift detected[/red]" if result["drift"] else "[green]no drift[/green]"
    out.print(f"{head} in {result['source']}")
    for r in result["reasons"]:
        out.print(f"  - {r}")
    if result.get("report"):
        out.print(f"  report: {result['report']}")


def collect_status(config: Config, root: Home) -> dict[str, Any]:
    """Champion, challenger, snapshot and quarantine counts (no Prefect needed)."""
    from ctloop.lake import snapshots as lake
    from ctloop.registry.store import CHALLENGER, CHAMPION, open_registry

    registry = open_registry(config)
    champion = registry.by_alias(CHAMPION)
    challenger = registry.by_alias(CHALLENGER)
    quarantined = lake.list_quarantined(root)
    return {
        "champion": champion.summary() if champion else None,
        "challenger": challenger.summary() if challenger else None,
        "snapshots": len(lake.list_snapshots(root)),
        "quarantined": len(quarantined),
        "quarantine": [
            {"path": q.path, "folder": q.folder, "reasons": q.reasons} for q in quarantined
        ],
        "versions": [
            {"version": v.version, "semver": v.semver, "trigger": v.tags.get("ctloop.trigger")}
            for v in registry.versions()
        ],
        "home": str(root.root),
        "tracking_uri": registry.tracking_uri,
    }


@app.command()
@_handles_errors
def status(config_path: ConfigOpt = None, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """What serves now, what is in the lake, what was quarantined."""
    config, root = _config(config_path, home)
    data = collect_status(config, root)
    if as_json:
        print_json(data)
        return
    champ = data["champion"]
    if champ:
        out.print(
            f"champion: version {champ['version']} ({champ['semver']}), trained on "
            f"{champ['trained_on']}, trigger {champ['trigger']}"
        )
    else:
        out.print("champion: none yet")
    out.print(f"snapshots: {data['snapshots']}  quarantined: {data['quarantined']}")
    for q in data["quarantine"]:
        first = q["reasons"][0]["message"] if q["reasons"] else ""
        out.print(f"  [red]quarantined[/red] {Path(q['path']).name}: {first}")


@app.command()
@_handles_errors
def demo(
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    days: Annotated[int, typer.Option(help="days in the stream")] = 28,
    rows_per_day: Annotated[int, typer.Option(help="applications per day")] = 600,
    fresh: Annotated[bool, typer.Option(help="start from an empty home")] = True,
) -> None:
    """Replay a scripted stream of loan batches through the whole loop, then show what happened."""
    import shutil

    from ctloop.data.demo import DemoScript

    if days < 24:
        raise InputError(f"--days {days}: the scripted episodes need at least 24 days")
    root_path = Path(home or os.environ.get("CTLOOP_HOME", ".ctloop")).resolve()
    if fresh and root_path.exists():
        shutil.rmtree(root_path)
    from ctloop.data.demo import demo_config

    config = demo_config(str(root_path), rows_per_day)
    root = home_of(config).ensure()
    dump_config(config, root.root / CONFIG_FILENAME)
    # the table at the end reports every warning and rejection; Prefect's console lines would
    # only interleave with the progress bar (they still reach the Prefect UI)
    for handler in ("CONSOLE", "CONSOLE_FLOW_RUNS", "CONSOLE_TASK_RUNS"):
        os.environ.setdefault(f"PREFECT_LOGGING_HANDLERS_{handler}_LEVEL", "CRITICAL")
    _prepare_environment(root)
    script = DemoScript(days=days, rows_per_day=rows_per_day)

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from flows.demo import run_demo

    console = err if as_json else out
    with Progress(
        TextColumn("[bold]demo[/bold]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=as_json,
    ) as bar:
        task_id = bar.add_task("starting Prefect", total=None)

        def progress(i: int, total: int, text: str) -> None:
            bar.update(task_id, completed=i, total=total, description=text)

        rows = run_demo(config, script, progress)
    data = collect_status(config, root)
    if as_json:
        print_json({**data, "events": [r.__dict__ for r in rows]})
        return
    table = Table(title="What happened, batch by batch", show_lines=False)
    for col in ("day", "file", "episode", "outcome", "why"):
        table.add_column(col, overflow="fold")
    for r in rows:
        style = "red" if "quarantined" in r.outcome or "drift detected" in r.outcome else None
        style = "bold green" if "promoted" in r.outcome else style
        table.add_row(str(r.day), r.file, r.episode, r.outcome, r.why, style=style)
    out.print(table)
    champ = data["champion"]
    if champ:
        out.print(
            f"\nchampion: version {champ['version']} ({champ['semver']}), trigger "
            f"{champ['trigger']}, trained on {champ['trained_on']}"
        )
    out.print(f"snapshots: {data['snapshots']}, quarantined: {data['quarantined']}")
    out.print(
        "\nWhere to look:\n"
        f"  make ui            Prefect UI (http://127.0.0.1:4200) and MLflow UI "
        "(http://127.0.0.1:5000) on this demo's state\n"
        f"  ctloop status      the same summary, also with --json\n"
        f"  {root.quarantine}  quarantined files with reasons.json\n"
        f"  {root.reports}     Evidently drift reports (HTML)"
    )


@app.command()
@_handles_errors
def ui(
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    prefect_port: Annotated[int, typer.Option(help="Prefect UI port")] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="MLflow UI port")] = 5000,
) -> None:
    """Serve the Prefect UI and the MLflow UI on this home's state until Ctrl-C."""
    import subprocess

    config, root = _config(config_path, home)
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    procs = [
        subprocess.Popen(
            [
                str(bindir / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(prefect_port),
            ],
            # the UI must call this server's API, not the one on the default port
            env={**env, "PREFECT_UI_API_URL": f"http://127.0.0.1:{prefect_port}/api"},
        ),
        subprocess.Popen(
            [
                str(bindir / "mlflow"),
                "ui",
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--backend-store-uri",
                root.tracking_uri(config),
            ],
            env=env,
        ),
    ]
    out.print(
        f"Prefect UI: http://127.0.0.1:{prefect_port}   MLflow UI: http://127.0.0.1:{mlflow_port}"
        "   (Ctrl-C stops both)"
    )
    import signal

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        for p in procs:
            p.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _register_extensions() -> None:
    """Commands that live beside their subsystem register here (imports stay light).

    Each module has `register(app, make_config, handles_errors)`: `app` is this typer app;
    `make_config(config_path, home, target, task, timestamp, id_col, exclude) -> (Config, Home)`
    also points Prefect at the home, so call it before importing flows; `handles_errors` turns
    ctloop errors into one line and a non-zero exit.
    """
    import importlib

    for module in ("ctloop.cli.serving", "ctloop.cli.data", "ctloop.cli.model", "ctloop.cli.loop"):
        importlib.import_module(module).register(app, _config, _handles_errors)


def main() -> None:
    _register_extensions()
    app()


if __name__ == "__main__":
    main()
