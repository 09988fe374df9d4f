"""Serving commands: `serve`, `promote`, `rollback`, `score`, `feedback-export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer  # module level: typer resolves the string annotations in these globals

from ctloop.cli import run
from ctloop.cli.app import app, check_readable, handles_errors, make_config, quiet_run_logs
from ctloop.cli.options import ConfigOpt, HomeOpt, JsonOpt, print_json


@app.command()
@handles_errors
def serve(
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    challenger_traffic: Annotated[
        float | None, typer.Option(help="share of requests for the challenger, 0..1")
    ] = None,
    shadow: Annotated[
        bool | None, typer.Option("--shadow/--no-shadow", help="challenger shadows")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Serve the registered versions over HTTP (A/B, shadow, hot swap, prediction log)."""
    import uvicorn

    from ctloop.errors import ConfigError
    from ctloop.serving.app import create_app
    from ctloop.serving.server import ModelServer

    config, _ = make_config(config_path, home)
    try:
        if host is not None:
            config.serving.host = host
        if port is not None:
            config.serving.port = port
        if challenger_traffic is not None:
            config.serving.challenger_traffic = challenger_traffic
        if shadow is not None:
            config.serving.shadow = shadow
    except ValueError as exc:
        raise ConfigError(f"serving: {str(exc).splitlines()[-1].strip()}") from None
    server = ModelServer(config)
    url = f"http://{config.serving.host}:{config.serving.port}"
    typer.echo(f"ctloop serve: {url} (OpenAPI docs at {url}/docs)", err=True)
    uvicorn.run(
        create_app(server),
        host=config.serving.host,
        port=config.serving.port,
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=config.serving.keep_alive_seconds,
        timeout_graceful_shutdown=10,
    )


@app.command()
@handles_errors
def promote(
    version: Annotated[
        str, typer.Argument(help="version to make the champion: 3, v3, 1.2.0 or an alias")
    ],
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make VERSION the champion once it loads and warms up; a running server follows."""
    from ctloop.loop.notify import notify
    from ctloop.registry.lineage import resolve_version
    from ctloop.registry.store import open_registry
    from ctloop.serving import admin

    config, _ = make_config(config_path, home)
    registry = open_registry(config)
    number = resolve_version(registry, version)
    result = admin.promote(registry, number, validate=_validator(config, registry))
    if result.get("changed", True):
        notify(config.notifications, "ctloop.model.promoted", result, config.project)
    _report(result, as_json)


@app.command()
@handles_errors
def rollback(config_path: ConfigOpt = None, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Return the champion to the previous one (validated first); a running server follows."""
    from ctloop.loop.notify import notify
    from ctloop.registry.store import open_registry
    from ctloop.serving import admin

    config, _ = make_config(config_path, home)
    registry = open_registry(config)
    result = admin.rollback(registry, validate=_validator(config, registry))
    notify(config.notifications, "ctloop.model.rolled_back", result, config.project)
    _report(result, as_json)


@app.command()
@handles_errors
def score(
    source: Annotated[str, typer.Argument(help="CSV/Parquet file, or a lake snapshot id")],
    out: Annotated[Path, typer.Option("--out", "-o", help="predictions file (.parquet/.csv)")],
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a file or snapshot with the champion (the `score-batch` flow)."""
    config, _ = make_config(config_path, home)
    if Path(source).is_file():
        check_readable(Path(source), config)  # a bad file is one line, not a failed flow run
    quiet_run_logs("CRITICAL")  # a bad batch's error is printed once, as one line
    result = run.score_batch(source, str(out), config)
    if as_json:
        print_json(result)
    else:
        typer.echo(
            f"scored {result['rows']} rows with version {result['version']} "
            f"({result['semver']}) -> {result['output']}"
        )


@app.command("feedback-export")
@handles_errors
def feedback_export(
    out: Annotated[Path, typer.Argument(help="CSV file for `ctloop ingest`")],
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write served predictions that have true labels as a labelled batch to ingest."""
    from ctloop.errors import NotEnoughData
    from ctloop.stores.home import home_of
    from ctloop.stores.predlog import PredictionLog, default_log_url, labelled_rows

    config, _ = make_config(config_path, home)
    target = config.require_target()
    url = config.serving.prediction_log_url or default_log_url(home_of(config).root)
    log = PredictionLog(url)
    try:
        frame = labelled_rows(log.joined(), target, config.dataset.timestamp, config.dataset.id)
    finally:
        log.close()
    if frame.empty:
        raise NotEnoughData("no served prediction has feedback yet")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    if as_json:
        print_json({"path": str(out), "rows": len(frame)})
    else:
        typer.echo(f"{len(frame)} labelled rows -> {out} (next: ctloop ingest {out})")


def _validator(config, registry):
    """Load and warm up a version before an alias may point at it (infra validation)."""
    from ctloop.serving import admin
    from ctloop.serving.models import WarmupFailed, load_version, read_dataset_inputs, warm_up

    dataset = config.dataset
    passthrough = [c for c in (dataset.id, dataset.timestamp, *dataset.exclude) if c]

    def validate(ref) -> None:
        try:
            inputs = read_dataset_inputs(config)
            warm_up(load_version(registry, ref, passthrough, inputs), config.serving.warmup_rows)
        except WarmupFailed as exc:
            raise admin.AdminError(str(exc)) from None
        except Exception as exc:  # cannot even be loaded: never promote it
            raise admin.AdminError(f"version {ref.version} failed to load: {exc}") from None

    return validate


def _report(result: dict, as_json: bool) -> None:
    if as_json:
        print_json(result)
    elif result.get("changed"):
        typer.echo(
            f"champion is now version {result['champion']} ({result.get('semver')}); "
            f"was {result['previous']}"
        )
    else:
        typer.echo(f"version {result['champion']} is already the champion")
