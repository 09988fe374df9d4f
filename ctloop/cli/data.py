"""Data commands: `ingest`, `landing`, `snapshots`, `schema`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer  # module level: typer resolves the string annotations in these globals
from rich.markup import escape

from ctloop.cli import run
from ctloop.cli.app import (
    app,
    err,
    handles_errors,
    keep_dataset_settings,
    make_config,
    out,
    quiet_run_logs,
    unset_task_guess,
)
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
from ctloop.errors import InputError, NotEnoughData


@app.command()
@handles_errors
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
    config, root = make_config(config_path, home, target, task, timestamp, id_col, exclude)
    config.require_target()
    guess = first_ingest_task(config, root, paths)
    if guess is not None:  # the first batch of a home: the task follows the target's values
        task, line = guess
        config, root = make_config(config_path, home, target, task, timestamp, id_col, exclude)
        if not as_json:
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    quiet_run_logs()
    result = run.ingest([str(p) for p in paths], config)
    if result["accepted"]:
        keep_dataset_settings(config, root)
    if as_json:
        print_json(result)
    else:
        for a in result["accepted"]:
            note = "new snapshot" if a["new"] else "already in the lake"
            out.print(
                f"[green]accepted[/green] {escape(a['path'])}: {a['rows']} rows → "
                f"{a['snapshot']} ({note})"
            )
            for w in a["warnings"]:
                out.print(f"  [yellow]warn[/yellow] {escape(w['message'])}")
        for q in result["quarantined"]:
            line = escape(quarantine_line(q))
            err.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
    if result["quarantined"]:
        raise typer.Exit(1)


def first_ingest_task(config, root, paths: list[Path]) -> tuple[str, str] | None:
    """The task guessed from the first regular file that holds the target (`unset_task_guess`)
    when nothing set it and the home's lake is empty; a lake that holds batches keeps the task
    they were checked with. A FIFO, device or link is never opened here (ingest refuses it)."""
    from ctloop.lake.manifests import list_snapshots

    if "task" in config.dataset.model_fields_set or list_snapshots(root):
        return None
    for path in paths:
        if path.is_file() and not path.is_symlink():
            guess = unset_task_guess(config, path)
            if guess is not None:
                return guess
    return None


def quarantine_line(quarantined: dict) -> str:
    """`PATH: quarantined: first blocking reason (+N more)`, the path said once."""
    path = quarantined["path"]
    blocking = [r["message"] for r in quarantined["reasons"] if r["severity"] == "block"]
    first = blocking[0] if blocking else ""
    first = first[len(path) + 2 :] if first.startswith(f"{path}: ") else first
    more = f" (+{len(blocking) - 1} more)" if len(blocking) > 1 else ""
    return f"{path}: quarantined: {first}{more}"


@app.command()
@handles_errors
def landing(
    folder: Annotated[
        Path | None, typer.Argument(help="landing folder (default <home>/landing)")
    ] = None,
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest every new file of the landing folder once (exit 1 if any is quarantined)."""
    config, root = make_config(config_path, home)
    config.require_target()
    from ctloop.ingest.landing import landing_folder, pending_files

    waiting = pending_files(landing_folder(config, root, folder), config.ingest.patterns)
    guess = first_ingest_task(config, root, waiting)
    if guess is not None:  # as a first `ingest`: from the first file that holds the target
        task, line = guess
        config, root = make_config(config_path, home, task=task)
        if not as_json:
            typer.echo(line)
    result = run.ingest_landing(str(folder) if folder else None, config)
    if result["accepted"]:
        keep_dataset_settings(config, root)
    if as_json:
        print_json(result)
    else:
        for a in result["accepted"]:
            typer.echo(f"accepted {a['path']}: {a['rows']} rows -> {a['snapshot']}")
        for m in result.get("monitored", []):
            typer.echo(f"monitored {m['path']}: " + ("; ".join(m["reasons"]) or "no drift"))
        for q in result["quarantined"]:
            first = next((r["message"] for r in q["reasons"] if r["severity"] == "block"), "")
            typer.echo(f"quarantined {q['path']}: {first}", err=True)
    if result["quarantined"]:
        raise typer.Exit(1)


@app.command()
@handles_errors
def snapshots(
    config_path: ConfigOpt = None, home: HomeOpt = None, as_json: JsonOpt = False
) -> None:
    """The lake's snapshots, oldest data first (id, rows, time range, source)."""
    from ctloop.lake import manifests as lake

    _config, root = make_config(config_path, home, create=False)
    found = lake.list_snapshots(root)
    if as_json:
        print_json({"snapshots": [asdict(m) for m in found]})
        return
    for m in found:
        span = f"{(m.time_min or '')[:19]}..{(m.time_max or '')[:19]}"
        typer.echo(f"{m.snapshot}  {m.rows:>9} rows  {span}  v{m.schema_version}  {m.source}")
    typer.echo(f"{len(found)} snapshots")


@app.command()
@handles_errors
def schema(config_path: ConfigOpt = None, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """The current schema (edit the file it names to change it; save as a new version)."""
    from ctloop.lake import snapshots as lake

    _config, root = make_config(config_path, home, create=False)
    current = lake.current_schema(root)
    if current is None:
        raise NotEnoughData("no schema yet: the first accepted batch defines it")
    path = lake.schema_location(root, current.version)
    if as_json:
        print_json({"path": str(path), "schema": json.loads(current.to_json())})
        return
    typer.echo(f"schema v{current.version}: {path}")
    for c in current.columns.values():
        detail = (
            f"[{c.min:g}, {c.max:g}]"
            if c.min is not None and c.max is not None
            else (", ".join(c.categories[:8]) + (" ..." if len(c.categories) > 8 else ""))
        )
        personal = f"  personal: {c.personal} -> {c.handling}" if c.handling else ""
        typer.echo(f"  {c.name:<24} {c.kind:<12} {detail}{personal}")
    if current.class_shares:
        typer.echo(f"  target {current.target}: {current.class_shares}")
