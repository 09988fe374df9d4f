"""Model commands: `train` (the manual trigger) and `lineage`."""

from __future__ import annotations

import json
from typing import Annotated

import typer  # module level: typer resolves the string annotations in these globals

from ctloop.cli import run
from ctloop.cli.app import app, handles_errors, make_config, out
from ctloop.cli.options import (
    ConfigOpt,
    ExcludeOpt,
    HomeOpt,
    IdOpt,
    JsonOpt,
    TargetOpt,
    TaskOpt,
    TimeOpt,
    VersionArg,
    print_json,
)


@app.command()
@handles_errors
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
    config, _ = make_config(config_path, home, target, task, timestamp, id_col, exclude)
    config.require_target()
    result = run.retrain(config, reason)
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
@handles_errors
def lineage(
    version: VersionArg,
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="fit it again and compare holdout metrics")
    ] = False,
) -> None:
    """Which data (snapshots, digests), code (git commit) and parameters made VERSION."""
    from ctloop.registry.lineage import lineage_of, rebuild_version, resolve_version
    from ctloop.registry.view import open_registry_view

    config, _ = make_config(config_path, home)
    version = resolve_version(open_registry_view(config), version)
    answer = lineage_of(config, version)
    if rebuild:
        result = rebuild_version(config, version)
        answer["rebuild"] = {
            "identical": result.identical,
            "metrics": result.metrics,
            "differences": {k: list(v) for k, v in result.differences.items()},
        }
    if as_json:
        print_json(answer)
    else:
        _print_lineage(answer)
    if rebuild and not answer["rebuild"]["identical"]:
        raise typer.Exit(1)


def _print_lineage(answer: dict) -> None:
    model = answer["model"]
    out.print(
        f"[bold]version {answer['version']}[/bold] {answer['semver']}  "
        f"trigger {answer['trigger']}: {answer['reason']}"
    )
    out.print(f"code: git {answer['code']['git_commit']}")
    out.print(f"model: {model['family']} params {json.dumps(model['params'])} seed {model['seed']}")
    out.print(f"data: {answer['trained_on']}")
    for d in answer["data"]:
        where = "in lake" if d["in_lake"] else "[red]missing[/red]"
        out.print(f"  {d['snapshot']} sha256 {str(d['sha256'])[:16]}… {d['rows']} rows ({where})")
    out.print(f"blessing: {answer['blessing']}")
    if "rebuild" in answer:
        verdict = "identical" if answer["rebuild"]["identical"] else "DIFFERENT"
        out.print(f"rebuild: holdout metrics {verdict}")
