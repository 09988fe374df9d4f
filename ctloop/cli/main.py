"""The `ctloop` command line: one typer app, its commands grouped by area.

`app` lives in `ctloop.cli.app`; importing an area module declares its commands on it:
`data` (ingest, landing, snapshots, schema), `model` (train, lineage), `loop` (status,
monitor, demo, replay), `serving` (serve, promote, rollback, score, feedback-export),
`estimate` (label-free metric estimates), `stack` (up, ui) and `init` (a commented
ctloop.yaml). Flows and deployments are reached only through `ctloop.cli.run`.
"""

from __future__ import annotations

from ctloop.cli import (  # noqa: F401 (declare the commands)
    data,
    estimate,
    init,
    loop,
    model,
    serving,
    stack,
)
from ctloop.cli.app import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()
