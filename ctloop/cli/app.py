"""The one typer app of `ctloop` and what every command shares: consoles, errors, the config.

Command modules (`data`, `model`, `loop`, `serving`, `stack`) declare their commands on `app`;
`ctloop.cli.main` imports them. Only typer and rich are imported at module level, so
`ctloop --help` starts fast; a command imports what it needs when it runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from ctloop.errors import CtloopError
from ctloop.names import CONFIG_FILENAME

if TYPE_CHECKING:
    from ctloop.config.settings import Config
    from ctloop.stores.home import Home


def _flags_as_flags() -> None:
    """Help shows a flag as a flag (`--json  print one JSON object`), not `--json <bool>`:
    typer 0.2x prints a type for every option, a flag takes no value to type."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "_ctloop", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag or self.count else shown(self, ctx)

    display_type_rich._ctloop = True
    TyperOption.display_type_rich = display_type_rich


_flags_as_flags()
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="ctloop: continuous training for tabular ML on Prefect and MLflow.",
)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from ctloop import __version__

        typer.echo(f"ctloop {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the version"
    ),
) -> None:
    """ctloop: continuous training for tabular ML on Prefect and MLflow."""


def fail(message: str, code: int = 2) -> None:
    """Print one `error:` line on stderr and exit with `code` (the message as written: a
    column named `flow [l/s]` is not read as markup)."""
    from rich.markup import escape

    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handles_errors(fn: Callable) -> Callable:
    """One clear line and a non-zero exit for every ctloop error; no traceback."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CtloopError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper


def default_config_path(home: Path | None) -> Path | None:
    """`./ctloop.yaml`, else the config the home was made with (e.g. by `ctloop demo`)."""
    if Path(CONFIG_FILENAME).is_file():
        return Path(CONFIG_FILENAME)
    root = home or Path(os.environ.get("CTLOOP_HOME", ".ctloop"))
    candidate = root / CONFIG_FILENAME
    return candidate if candidate.is_file() else None


def make_config(
    config_path: Path | None,
    home: Path | None,
    target: str | None = None,
    task: str | None = None,
    timestamp: str | None = None,
    id_col: str | None = None,
    exclude: str | None = None,
    *,
    create: bool = True,
    check: bool = True,
) -> tuple[Config, Home]:
    """The config (file, environment, flags, and the home's kept dataset settings) and its home;
    points Prefect at the home.

    The dataset settings a home keeps (the `dataset:` of `<home>/ctloop.yaml`, written at the
    first ingest or by `ctloop init`/`ctloop demo`) fill in what nothing else gives; a flag, the
    environment or another config file that contradicts one of them is an error.
    Call it before anything imports Prefect (`ctloop.cli.run` imports it inside its functions).

    Args:
        create: make the home's folders; False for commands that only read.
        check: False for commands whose flags describe another file (`replay`): they override
            the kept settings instead of contradicting them.
    """
    from ctloop.config.settings import (
        env_overrides,
        kept_dataset,
        load_config,
        reconcile_dataset,
    )
    from ctloop.stores.home import home_of

    flags = {"target": target, "task": task, "timestamp": timestamp, "id": id_col}
    flags["exclude"] = exclude
    overrides: dict[str, Any] = {"paths.home": str(home) if home else None}
    overrides.update({f"dataset.{k}": v for k, v in flags.items()})
    path = config_path or default_config_path(home)
    config = load_config(path, overrides)
    root = home_of(config)
    home_file = root.root / CONFIG_FILENAME
    given: dict[str, str] = {}
    if path is not None and Path(path).resolve() != home_file.resolve():
        given.update(dict.fromkeys(kept_dataset(Path(path)), str(path)))
    for dotted in env_overrides():
        if dotted.startswith("dataset."):
            given[dotted.split(".", 1)[1]] = "the environment (CTLOOP_*)"
    given.update({k: f"--{k}" for k, v in flags.items() if v is not None})
    kept = kept_dataset(home_file)
    if check:
        config = reconcile_dataset(config, kept, home_file, given)
    prepare_environment(root)
    return config, root.ensure() if create else root


def unset_task_guess(config: Config, path: Path) -> tuple[str, str] | None:
    """The task guessed from the target column of `path` when no flag, variable or config file
    set it: (task, a line saying so); None when it is set or the column cannot be read (the
    command then reports the file's problem itself)."""
    if "task" in config.dataset.model_fields_set or not config.dataset.target:
        return None
    import pandas as pd

    from ctloop.data.schema import guess_task

    target = config.dataset.target
    try:
        if path.suffix.lower() == ".parquet":
            labels = pd.read_parquet(path, columns=[target])[target]
        else:
            labels = pd.read_csv(path, usecols=[target], low_memory=False)[target]
    except Exception:  # missing, unreadable, no such column: the command says which
        return None
    task, why = guess_task(labels)
    line = f"task: {task}, guessed from {target!r} ({why}); --task to choose another"
    return str(task), line


def keep_dataset_settings(config: Config, root: Home) -> dict[str, Any]:
    """Keep the dataset settings given for this home (flags, environment, a config file) in
    `<home>/ctloop.yaml`, so later commands need none of them; returns what was added.

    `ingest` calls it once a batch is accepted: the lake now holds data checked with them.
    """
    from ctloop.config.settings import DATASET_KEYS, keep_dataset

    given = config.dataset.model_fields_set & set(DATASET_KEYS)
    values = {k: getattr(config.dataset, k) for k in given}
    return keep_dataset(root.root / CONFIG_FILENAME, {k: v for k, v in values.items() if v})


def prepare_environment(root: Home) -> None:
    """Point Prefect at the home and quiet its console, before anything imports Prefect.

    Prefect's own console lines would bury the answer; its logs still reach the API (the UI).
    """
    from ctloop.stores.home import activate

    activate(root)
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", "WARNING")


def check_readable(path: Path, config: Config) -> None:
    """Read the whole file once as a batch (streamed, bounded memory) before a flow gets it.

    Raises:
        InputError: the file is empty, binary, not UTF-8, ragged, has duplicate or unnamed
            columns, or cannot be parsed; the message names the file (and the row).
    """
    from ctloop.data.batches import read_chunks
    from ctloop.lake.sources import open_source

    with open_source(path) as handle:  # refuses a FIFO, device or link out of its folder
        for _chunk in read_chunks(
            path, config.ingest.chunk_bytes, config.ingest.delimiter, handle=handle
        ):
            pass


def quiet_run_logs(level: str = "ERROR") -> None:
    """Only `level` and above on the console: the answer is the command's own lines.

    Warnings of flow and task runs (each check's finding, a rejected batch) still reach the
    Prefect API and UI; a bug that is no `CtloopError` still ends in a traceback. Call before
    Prefect is imported (it reads its settings once); a level the user chose is kept.
    """
    key = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"
    if os.environ.get(key, "WARNING") == "WARNING":
        os.environ[key] = level
    # the in-process (ephemeral) API, stopped at exit under load, logs the events it could not
    # flush in time as ERROR tracebacks; they are not the command's outcome
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    import logging

    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_expected_failure)


def _expected_failure(record) -> bool:
    """A run ended by a ctloop error (a full disk, a store down): the command prints its one
    line, so Prefect's echo of it (traceback, "Finished in state Failed") goes to the API as a
    warning, not to the console."""
    import logging

    if record.levelno < logging.ERROR:
        return True
    exc = record.exc_info[1] if record.exc_info else None
    text = str(record.msg) if exc is None else ""
    if isinstance(exc, CtloopError) or (
        "exception" in text and any(f" {n}:" in text for n in _ctloop_error_names())
    ):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
    return True


def _ctloop_error_names() -> set[str]:
    names, todo = set(), [CtloopError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names
