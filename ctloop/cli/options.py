"""The options every `ctloop` command shares, declared once for all command modules."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="path to ctloop.yaml")]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="state folder (CTLOOP_HOME)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]
TargetOpt = Annotated[str | None, typer.Option("--target", help="label column")]
TaskOpt = Annotated[str | None, typer.Option("--task", help="binary|multiclass|regression")]
TimeOpt = Annotated[str | None, typer.Option("--timestamp", help="event time column")]
IdOpt = Annotated[str | None, typer.Option("--id", help="row id column")]
VersionArg = Annotated[
    str, typer.Argument(help="3, v3, a semver (1.2.0) or an alias (champion, challenger)")
]
ExcludeOpt = Annotated[str | None, typer.Option("--exclude", help="columns to ignore, COL,COL")]


def print_json(data: Any) -> None:
    """One JSON object on one line of stdout (the `--json` answer); a NaN or infinite number
    is null (JSON has no NaN: a strict parser would refuse the whole answer)."""
    sys.stdout.write(json.dumps(_finite(data), default=str, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
