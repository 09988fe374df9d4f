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
    """Print one `error:` line on stderr and exit with `code`."""
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
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
) -> tuple[Config, Home]:
    """The config (file, then flags) and its home; points Prefect at the home.

    Call it before anything imports Prefect (`ctloop.cli.run` imports it inside its functions).

    Args:
        create: make the home's folders; False for commands that only read.
    """
    from ctloop.config.settings import load_config
    from ctloop.stores.home import home_of

    overrides: dict[str, Any] = {
        "paths.home": str(home) if home else None,
        "dataset.target": target,
        "dataset.task": task,
        "dataset.timestamp": timestamp,
        "dataset.id": id_col,
        "dataset.exclude": exclude,
    }
    config = load_config(config_path or default_config_path(home), overrides)
    root = home_of(config)
    prepare_environment(root)
    return config, root.ensure() if create else root


def prepare_environment(root: Home) -> None:
    """Point Prefect at the home and quiet its console, before anything imports Prefect.

    Prefect's own console lines would bury the answer; its logs still reach the API (the UI).
    """
    from ctloop.stores.home import activate

    activate(root)
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", "WARNING")
