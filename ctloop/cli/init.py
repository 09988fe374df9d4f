"""`ctloop init [SAMPLE]`: a commented ctloop.yaml to start from, columns read from a sample."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer  # module level: typer resolves the string annotations in these globals
from rich.markup import escape

from ctloop.cli.app import app, handles_errors, out
from ctloop.cli.options import ExcludeOpt, IdOpt, TargetOpt, TaskOpt, TimeOpt
from ctloop.errors import ConfigError, InputError
from ctloop.names import CONFIG_FILENAME

if TYPE_CHECKING:
    import pandas as pd

    from ctloop.config.settings import DatasetConfig
    from ctloop.data.schema import Schema

SAMPLE_ROWS = 10_000
DATE_EXAMPLES = "2024-01-31, 2024-01-31T08:00:00"


def _describe(column) -> str:
    if column.min is not None and column.max is not None:
        return f"[{column.min:g}, {column.max:g}]"
    if column.categories:
        head = ", ".join(column.categories[:5])
        return head + (
            f" ... ({len(column.categories)} values)" if len(column.categories) > 5 else ""
        )
    return ""


def yaml_scalar(text: str, in_list: bool = False) -> str:
    """`text` as a YAML scalar that reads back as the same string: plain when it does, else
    double-quoted (a column named `a: b`, `yes`, `#id` or, in a list, `flow [l/s]`).

    Args:
        in_list: the scalar is an item of a flow list (`[a, b]`), where `,[]{}` end it.
    """
    import json

    import yaml

    try:
        plain = yaml.safe_load(f"[{text}]" if in_list else f"k: {text}")
    except yaml.YAMLError:
        plain = None
    if plain == ([text] if in_list else {"k": text}):
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a double-quoted YAML one


def render_config(dataset: DatasetConfig, schema: Schema | None, source: str | None) -> str:
    """The text of a commented ctloop.yaml: the dataset settings, the sample's columns and kinds
    as comments, and the settings a new user changes first (all valid as they stand).

    The gates are the task's defaults (`ctloop.model.metrics`), what the product would use with
    `gates.primary_metric` and `gates.min_metrics` unset, written out to be changed.
    """
    from ctloop.model.metrics import default_floors, primary_metric

    metric, floors = primary_metric(dataset.task), default_floors(dataset.task)

    def value(v: str | None) -> str:
        return yaml_scalar(v) if v else "null"

    def setting(key: str, text: str, comment: str) -> str:
        return f"  {key + ': ' + text:<28}  # {comment}"

    lines = [
        "# ctloop.yaml: the settings of one ctloop project (written by `ctloop init`).",
        "# Every key is checked when a command starts; a wrong one is an error naming it.",
        "# The environment overrides this file (CTLOOP_TARGET, CTLOOP_TRAINING__WINDOW_DAYS=7,",
        "# ...); the flags --target --task --timestamp --id --exclude override both, except that",
        "# a home keeps the dataset settings its lake was ingested with.",
        "project: ctloop                 # names the MLflow experiment and registered model",
        "",
        "dataset:",
        setting("target", value(dataset.target), "the label column to predict"),
        setting("task", str(dataset.task), "binary | multiclass | regression"),
        setting("timestamp", value(dataset.timestamp), "event time: training windows, replay"),
        setting("id", value(dataset.id), "row id: never a feature"),
        setting(
            "exclude",
            f"[{', '.join(yaml_scalar(c, in_list=True) for c in dataset.exclude)}]",
            "other columns, not features",
        ),
    ]
    if schema is not None:
        lines += ["", f"# columns of {source} ({len(schema.columns)}), as ctloop reads them:"]
        width = max(len(name) for name in schema.columns)
        for c in schema.columns.values():
            role = (
                "target"
                if c.name == dataset.target
                else ("excluded" if c.name in dataset.non_features() else "feature")
            )
            lines.append(f"#   {c.name:<{width}}  {c.kind:<11}  {role:<8}  {_describe(c)}".rstrip())
        lines.append("# the first accepted batch fixes the schema (ctloop schema shows it)")
    lines += [
        "",
        "training:",
        "  window_days: 14            # train on the newest N days (needs dataset.timestamp)",
        "  holdout_fraction: 0.2      # newest share of the window held out for the gates",
        "  family: hist_gradient_boosting   # or logistic_regression, random_forest",
        "",
        "tuning:",
        "  enabled: false             # Optuna search before each training",
        "  trials: 20",
        "  workers: 1",
        "",
        "gates:                       # the blessing: floors, and the margin over the champion",
        f"  primary_metric: {metric}",
        "  min_metrics:",
        *(f"    {name}: {floor}" for name, floor in floors.items()),
        "  min_improvement: 0.0       # margin over the champion (error metric: a fraction)",
        "  promote: true              # false: a blessed model becomes the challenger (canary)",
        "",
        "triggers:                    # when the retrain deployment runs",
        '  schedule_cron: "0 3 1 * *"  # monthly, on what arrived, whatever the rules (null: off)',
        "  bootstrap_rows: 1000       # labelled rows for a first model",
        "  min_new_rows: 5000         # new labelled rows that retrain (null: off)",
        "  drift_min_rows: 1000       # post-drift labelled rows a drift retrain waits for",
        "  cooldown_minutes: 0",
        "",
        "drift:",
        "  share: 0.3                 # drift when this share of the columns drifted",
        "  columns: []                # ... or any of these",
        "",
        "paths:",
        "  home: .ctloop              # all state of the embedded profile (CTLOOP_HOME)",
        "",
    ]
    return "\n".join(lines)


def timestamp_warning(frame: pd.DataFrame, schema: Schema, column: str) -> str | None:
    """Why ingest would refuse the sample's timestamp `column`, or None when its values are dates.

    The values are typed as ingest types a batch (`ctloop.data.batches.frame_to_raw` and
    `to_type`), so a value counted here is one ingest's check counts as not a date (a
    `type_error` that quarantines the batch by default).
    """
    from ctloop.data.batches import frame_to_raw, to_type

    conv = to_type(frame_to_raw(frame[[column]]).column(0), schema.columns[column], schema)
    if not conv.bad:
        return None
    return (
        f"--timestamp {column!r}: {conv.bad} of {len(frame)} sample values are not dates "
        f"(first at row {conv.first_bad + 1}: {conv.first_bad_value!r}); ingest quarantines "
        f"a batch whose timestamp is not a date: it needs dates or date-times ({DATE_EXAMPLES})"
    )


def _sample_schema(sample: Path, dataset: DatasetConfig) -> tuple[Schema, str, list[str]]:
    """The sample's columns and kinds (first rows only), the task it suggests, and warnings
    about what ingest would refuse in it."""
    from ctloop.data.schema import infer_schema
    from ctloop.lake.snapshots import read_batch

    frame = read_batch(sample).head(SAMPLE_ROWS)
    missing = [
        f"{col!r} ({flag})"
        for flag, col in (
            ("--target", dataset.target),
            ("--timestamp", dataset.timestamp),
            ("--id", dataset.id),
            *(("--exclude", c) for c in dataset.exclude),
        )
        if col and col not in frame.columns
    ]
    if missing:
        cols = ", ".join(map(str, frame.columns[:12])) + (" ..." if frame.shape[1] > 12 else "")
        raise InputError(f"{sample}: no column {'; '.join(missing)} (columns: {cols})")
    schema = infer_schema(frame, dataset)
    warning = timestamp_warning(frame, schema, dataset.timestamp) if dataset.timestamp else None
    from ctloop.data.schema import guess_task

    task, _ = guess_task(frame[dataset.target])
    return schema, str(task), [warning] if warning else []


@app.command()
@handles_errors
def init(
    sample: Annotated[
        Path | None, typer.Argument(help="a CSV or Parquet sample: columns and kinds")
    ] = None,
    target: TargetOpt = None,
    task: TaskOpt = None,
    timestamp: TimeOpt = None,
    id_col: IdOpt = None,
    exclude: ExcludeOpt = None,
    path: Annotated[Path, typer.Option("--out", "-o", help="where to write the config")] = Path(
        CONFIG_FILENAME
    ),
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a commented ctloop.yaml to start from (columns and kinds read from SAMPLE)."""
    from pydantic import ValidationError

    from ctloop.config.settings import DatasetConfig, load_config

    if path.exists() and not force:
        raise InputError(f"{path}: already exists (pass --force to overwrite it)")
    if sample is not None and not sample.exists():
        raise InputError(f"{sample}: file not found")
    if sample is not None and not target:
        raise InputError("--target: needed with a sample (the label column)")
    try:
        dataset = DatasetConfig(
            target=target,
            timestamp=timestamp,
            id=id_col,
            exclude=exclude or [],
            task=task or "binary",
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"--{first['loc'][0]}: {first['msg']}") from None
    schema, warnings = None, []
    if sample is not None:
        schema, guessed, warnings = _sample_schema(sample, dataset)
        if task is None:
            dataset = dataset.model_copy(update={"task": guessed})
    text = render_config(dataset, schema, sample.name if sample else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    try:
        load_config(tmp, environ={})  # what init writes is valid as it stands
    except ConfigError:
        tmp.unlink()
        raise
    tmp.replace(path)
    # names and paths are the user's: escaped, or rich reads `[l/s]` as markup and drops it
    what = f"{len(schema.columns)} columns of {sample.name}, " if schema else ""
    out.print(
        escape(f"wrote {path} ({what}target {dataset.target}, task {dataset.task})"),
        soft_wrap=True,
    )
    for warning in warnings:
        out.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    given = "" if path == Path(CONFIG_FILENAME) else f" -c {path}"  # ./ctloop.yaml is found
    out.print(
        escape(f"next: ctloop ingest FILE...{given}   (then ctloop train, or ctloop up{given})"),
        soft_wrap=True,
    )
