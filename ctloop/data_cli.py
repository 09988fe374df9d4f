"""Data-layer commands (schema, snapshots): registered on the main CLI by `ctloop.cli`."""

from __future__ import annotations


def register(app, make_config, handles_errors) -> None:
    """Add this area's commands to the typer app.

    Args:
        app: the typer app of `ctloop.cli`.
        make_config: `(config_path, home, target, task, timestamp, id_col, exclude) -> (Config,
            Home)`; also points Prefect at the home, so call it before importing flows.
        handles_errors: decorator turning ctloop errors into one line and a non-zero exit.
    """
