"""`ctloop serve`: registered on the main CLI by `ctloop.cli`."""

from __future__ import annotations


def register(app, make_config, handles_errors) -> None:
    """Add the serving commands to the typer app.

    Args:
        app: the typer app of `ctloop.cli`.
        make_config: `(config_path, home) -> (Config, Home)`; sets the environment for Prefect.
        handles_errors: decorator turning ctloop errors into one line and a non-zero exit.
    """
