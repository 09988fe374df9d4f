"""`ctloop estimate FILE`: the champion's (or a version's) metric estimated without labels."""

from __future__ import annotations

from typing import Annotated

import typer  # module level: typer resolves the string annotations in these globals

from ctloop.cli.app import app, handles_errors, make_config, out
from ctloop.cli.options import (
    ConfigOpt,
    HomeOpt,
    IdOpt,
    JsonOpt,
    TargetOpt,
    TimeOpt,
    print_json,
)


@app.command()
@handles_errors
def estimate(
    source: Annotated[str, typer.Argument(help="CSV/Parquet features file, or a lake snapshot id")],
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", help="rows per chunk")] = 1000,
    version: Annotated[
        str | None, typer.Option("--version", help="3, v3, 1.2.0 or an alias; champion if unset")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric", help="roc_auc, accuracy, f1, f1_macro, mae or rmse (primary if unset)"
        ),
    ] = None,
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    target: TargetOpt = None,
    timestamp: TimeOpt = None,
    id_col: IdOpt = None,
) -> None:
    """Estimate the model's metric on features without labels (CBPE for classifiers, DLE for
    regression), per chunk with a 95% interval. It assumes inputs still mean what they meant
    (it cannot see concept drift); a labelled file also gets the realized metric."""
    from ctloop.errors import InputError
    from ctloop.registry.estimator import estimate_version
    from ctloop.serving.batch import read_scoring_input

    if chunk_rows < 1:
        raise InputError(f"--chunk-rows {chunk_rows}: must be at least 1")
    config, _ = make_config(config_path, home, target, None, timestamp, id_col, create=False)
    frame = read_scoring_input(source, config)
    answer = estimate_version(
        config, frame, version, metric, chunk_rows, timestamp_column(frame, config)
    )
    answer["source"] = source
    if as_json:
        print_json(answer)
    else:
        _print_estimate(answer)


def timestamp_column(frame, config) -> str | None:
    """The config's timestamp column, else the lake schema's datetime column, if in the file."""
    from ctloop.serving.batch import kept_columns

    kept = kept_columns(frame, config)
    if config.dataset.timestamp in kept:
        return config.dataset.timestamp
    import pandas as pd

    dated = [c for c in kept if pd.api.types.is_datetime64_any_dtype(frame[c])]
    return dated[0] if dated else None


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_estimate(answer: dict) -> None:
    from rich.table import Table

    labelled = "realized" in answer
    out.print(
        f"[bold]{answer['metric']}[/bold] of version {answer['version']} ({answer['semver']}) "
        f"on {answer['rows']} rows of {answer['source']}: estimate {_fmt(answer['estimate'])} "
        f"(95% {_fmt(answer['ci_low'])}..{_fmt(answer['ci_high'])}), "
        f"holdout {_fmt(answer['reference'])}"
        + (f", realized {_fmt(answer['realized'])}" if labelled else "")
    )
    table = Table("start", "end", "rows", "estimate", "ci_low", "ci_high")
    if labelled:
        table.add_column("realized")
    for c in answer["chunks"]:
        cells = [str(c["start"]), str(c["end"]), str(c["rows"])]
        cells += [_fmt(c["estimate"]), _fmt(c["ci_low"]), _fmt(c["ci_high"])]
        table.add_row(*cells, *([_fmt(c.get("realized"))] if labelled else []))
    out.print(table)
    out.print(
        "label-free: assumes the inputs still mean what they meant at training; "
        "concept drift is invisible to it"
    )
