"""Loop commands: `status`, `monitor`, `demo` (the whole loop on a scripted stream), `replay`."""

from __future__ import annotations

import os
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer  # module level: typer resolves the string annotations in these globals

from ctloop.cli import run
from ctloop.cli.app import (
    app,
    check_readable,
    err,
    handles_errors,
    make_config,
    out,
    prepare_environment,
    quiet_run_logs,
    unset_task_guess,
)
from ctloop.cli.options import (
    ConfigOpt,
    ExcludeOpt,
    HomeOpt,
    IdOpt,
    JsonOpt,
    TargetOpt,
    TaskOpt,
    TimeOpt,
    print_json,
)
from ctloop.errors import InputError, NotEnoughData
from ctloop.names import CONFIG_FILENAME

if TYPE_CHECKING:
    from ctloop.config.settings import Config
    from ctloop.stores.home import Home


def collect_status(config: Config, root: Home) -> dict[str, Any]:
    """Champion, challenger, snapshot and quarantine counts (read only: no Prefect, no MLflow
    import on the embedded SQLite registry, nothing written there).

    Raises:
        DiskFull: the registry could only be read through MLflow (a database of a schema the
            view does not know), which would write to it first, and its disk is full.
    """
    from ctloop.lake import manifests as lake
    from ctloop.lake.sources import disk_full_raises
    from ctloop.names import CHALLENGER, CHAMPION
    from ctloop.registry.view import open_registry_view, sqlite_file

    database = sqlite_file(root.tracking_uri(config))  # a full disk of ours: the embedded store
    then = "MLflow must write to this database before it can read it; free some space"
    with disk_full_raises("the model registry", database, then) if database else nullcontext():
        registry = open_registry_view(config)
        champion = registry.by_alias(CHAMPION)
        challenger = registry.by_alias(CHALLENGER)
        versions = registry.versions()
    quarantined = lake.list_quarantined(root)
    return {
        "champion": champion.summary() if champion else None,
        "challenger": challenger.summary() if challenger else None,
        "snapshots": len(lake.list_snapshots(root)),
        "quarantined": len(quarantined),
        "quarantine": [
            {"path": q.path, "folder": q.folder, "reasons": q.reasons} for q in quarantined
        ],
        "versions": [
            {"version": v.version, "semver": v.semver, "trigger": v.tags.get("ctloop.trigger")}
            for v in versions
        ],
        "home": str(root.root),
        "tracking_uri": registry.tracking_uri,
    }


@app.command()
@handles_errors
def status(config_path: ConfigOpt = None, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """What serves now, what is in the lake, what was quarantined."""
    config, root = make_config(config_path, home, create=False)
    data = collect_status(config, root)
    if as_json:
        print_json(data)
        return
    for alias in ("champion", "challenger"):
        ref = data[alias]
        if ref:
            out.print(
                f"{alias}: version {ref['version']} ({ref['semver']}), trained on "
                f"{ref['trained_on']}, trigger {ref['trigger']}"
            )
        else:
            out.print(f"{alias}: none" + (" yet" if alias == "champion" else ""))
    if data["versions"]:
        out.print(f"versions ({len(data['versions'])}):")
        for v in data["versions"]:
            marks = [
                a
                for a in ("champion", "challenger")
                if (data[a] or {}).get("version") == v["version"]
            ]
            mark = f"  [bold]{', '.join(marks)}[/bold]" if marks else ""
            out.print(f"  v{v['version']}  {v['semver']}  trigger {v['trigger']}{mark}")
    out.print(f"snapshots: {data['snapshots']}  quarantined: {data['quarantined']}")
    out.print(f"home: {data['home']}  tracking: {data['tracking_uri']}", highlight=False)
    for q in data["quarantine"]:
        first = q["reasons"][0]["message"] if q["reasons"] else ""
        out.print(f"  [red]quarantined[/red] {Path(q['path']).name}: {first}")


@app.command()
@handles_errors
def monitor(
    path: Annotated[
        Path | None, typer.Argument(help="batch file; newest snapshot if omitted")
    ] = None,
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    target: TargetOpt = None,
    timestamp: TimeOpt = None,
    id_col: IdOpt = None,
) -> None:
    """Check a batch for drift against the champion's training window (Evidently)."""
    if path is not None and not path.exists():
        raise InputError(f"{path}: file not found")
    config, _ = make_config(config_path, home, target, None, timestamp, id_col)
    if path is not None:
        check_readable(path, config)  # a bad file is one line here, not a failed flow run
    quiet_run_logs("CRITICAL")  # a bad batch's error is printed once, below, as one line
    result = run.monitor(str(path) if path else None, config)
    if as_json:
        print_json(result)
        return
    head = "[red]drift detected[/red]" if result["drift"] else "[green]no drift[/green]"
    out.print(f"{head} in {result['source']}")
    for r in result["reasons"]:
        out.print(f"  - {r}")
    if result.get("report"):
        out.print(f"  report: {result['report']}")


@app.command()
@handles_errors
def demo(
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    days: Annotated[int, typer.Option(help="days in the stream")] = 28,
    rows_per_day: Annotated[int, typer.Option(help="applications per day")] = 600,
    fresh: Annotated[bool, typer.Option(help="start from an empty home")] = True,
    trials: Annotated[
        int, typer.Option(min=0, help="Optuna trials per retrain (0: no tuning)")
    ] = 4,
    export: Annotated[
        Path | None,
        typer.Option(
            help="write the stream's labelled rows to this CSV and exit (for `ctloop replay`)",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Replay a scripted stream of loan batches through the whole loop, then show what happened."""
    import shutil

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ctloop.config.settings import dump_config
    from ctloop.data.demo import DemoScript, demo_config
    from ctloop.stores.home import home_of

    if days < 24:
        raise InputError(f"--days {days}: the scripted episodes need at least 24 days")
    if export is not None:
        _export_stream(export, DemoScript(days=days, rows_per_day=rows_per_day), as_json)
        return
    root_path = Path(home or os.environ.get("CTLOOP_HOME", ".ctloop")).resolve()
    if fresh and root_path.exists():
        shutil.rmtree(root_path)
    config = demo_config(str(root_path), rows_per_day, tune_trials=trials)
    root = home_of(config).ensure()
    dump_config(config, root.root / CONFIG_FILENAME)
    # the table at the end reports every warning and rejection; Prefect's console lines would
    # only interleave with the progress bar (they still reach the Prefect UI)
    for handler in ("CONSOLE", "CONSOLE_FLOW_RUNS", "CONSOLE_TASK_RUNS"):
        os.environ.setdefault(f"PREFECT_LOGGING_HANDLERS_{handler}_LEVEL", "CRITICAL")
    prepare_environment(root)
    script = DemoScript(days=days, rows_per_day=rows_per_day)

    console = err if as_json else out
    with Progress(
        TextColumn("[bold]demo[/bold]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=as_json,
    ) as bar:
        task_id = bar.add_task("starting Prefect", total=None)

        def progress(i: int, total: int, text: str) -> None:
            bar.update(task_id, completed=i, total=total, description=text)

        rows = run.demo(config, script, progress)
    data = collect_status(config, root)
    if as_json:
        print_json({**data, "events": [r.__dict__ for r in rows]})
        return
    table = Table(title="What happened, batch by batch", show_lines=False)
    for col in ("day", "file", "episode", "outcome", "why"):
        table.add_column(col, overflow="fold")
    for r in rows:
        style = "red" if "quarantined" in r.outcome or "drift detected" in r.outcome else None
        style = "bold green" if "promoted" in r.outcome else style
        table.add_row(str(r.day), r.file, r.episode, r.outcome, r.why, style=style)
    out.print(table)
    champ = data["champion"]
    if champ:
        out.print(
            f"\nchampion: version {champ['version']} ({champ['semver']}), trigger "
            f"{champ['trigger']}, trained on {champ['trained_on']}"
        )
    out.print(f"snapshots: {data['snapshots']}, quarantined: {data['quarantined']}")
    out.print(
        "\nWhere to look:\n"
        "  make ui            Prefect UI (http://127.0.0.1:4200, with the deployments to run), "
        "MLflow UI (http://127.0.0.1:5000) and Optuna dashboard (http://127.0.0.1:8080) on "
        "this demo's state\n"
        f"  ctloop status      the same summary, also with --json\n"
        f"  {root.quarantine}  quarantined files with reasons.json\n"
        f"  {root.reports}     Evidently drift reports (HTML)"
    )


def _export_stream(path: Path, script, as_json: bool) -> None:
    """`demo --export FILE`: the labelled stream as one CSV, and how to replay it."""
    from ctloop.data.demo import ID, TARGET, TIMESTAMP, labelled_stream

    frame = labelled_stream(script)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    except OSError as exc:
        raise InputError(f"--export {path}: cannot write ({exc.strerror or exc})") from None
    if as_json:
        print_json({"path": str(path), "rows": len(frame), "columns": list(frame.columns)})
        return
    out.print(f"wrote {len(frame)} labelled rows ({script.days} days) to {path}")
    out.print(
        f"replay it: ctloop replay {path} --target {TARGET} --timestamp {TIMESTAMP} "
        f"--id {ID} --task binary --freq 1D"
    )


def replay_progress():
    """A line per replayed batch on stderr (a rich progress bar when stderr is a terminal)."""
    import sys

    from rich.console import Console

    console = Console(stderr=True)
    if console.is_terminal:
        from rich.progress import Progress

        bar = Progress(console=console, transient=True)
        tasks: dict[str, int] = {}

        def advance(policy: str, index: int, total: int, point) -> None:
            if policy not in tasks:
                bar.start()
                tasks[policy] = bar.add_task(policy, total=total, completed=index)
            bar.update(tasks[policy], completed=index + 1)
            if index + 1 == total:
                bar.remove_task(tasks[policy])

        return advance

    def line(policy: str, index: int, total: int, point) -> None:
        metric = "-" if point.metric is None else f"{point.metric:.4f}"
        mark = " retrain" if point.retrained else ""
        print(f"replay {policy} {index + 1}/{total} {point.batch} {metric}{mark}", file=sys.stderr)

    return line


@app.command()
@handles_errors
def replay(
    data: Annotated[Path, typer.Argument(help="labelled history, CSV or Parquet")],
    target: TargetOpt = None,
    timestamp: TimeOpt = None,
    freq: Annotated[str, typer.Option(help="batch length, a pandas frequency")] = "1D",
    task: TaskOpt = None,
    id_col: IdOpt = None,
    exclude: ExcludeOpt = None,
    schedule_every: Annotated[int, typer.Option(help="batches between scheduled retrains")] = 7,
    policies: Annotated[
        str,
        typer.Option(
            help="comma list of never, every_batch, schedule, ctloop (the live rules, the "
            "label-free estimate included) and ctloop_no_estimate (drift and decay alone)"
        ),
    ] = "never,every_batch,schedule,ctloop",
    min_new_rows: Annotated[
        int | None,
        typer.Option(help="new-data rule for ctloop (default: triggers.min_new_rows, as live)"),
    ] = None,
    label_delay: Annotated[
        str | None,
        typer.Option(
            help="labels arrive this many batches later (3) or after this duration (2D, 12h); "
            "features at once"
        ),
    ] = None,
    retrain_cost: Annotated[
        float | None,
        typer.Option(help="alpha of the oracle and regret (default: triggers.retrain_cost)"),
    ] = None,
    oracle: Annotated[
        bool, typer.Option(help="compute the hindsight-optimal schedule and the regrets")
    ] = True,
    out: Annotated[Path | None, typer.Option(help="folder for replay.png and replay.html")] = None,
    config_path: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay a labelled history as batches and compare retraining policies (prequential),
    with each policy's regret against the hindsight-optimal schedule."""
    from rich.console import Console
    from rich.table import Table

    from ctloop.lake.snapshots import read_batch
    from ctloop.loop.replay.replayer import SCORE_MIN_ROWS
    from ctloop.loop.replay.replayer import replay as run_replay
    from ctloop.loop.replay.report import plot_replay, report_html

    if not data.exists():
        raise InputError(f"{data}: file not found")
    config, root = make_config(
        config_path, home, target, task, timestamp, id_col, exclude, check=False
    )
    config.require_target()
    guess = unset_task_guess(config, data)
    if guess is not None:  # the task follows the target's values, as a first ingest's does
        task, line = guess
        config, root = make_config(
            config_path, home, target, task, timestamp, id_col, exclude, check=False
        )
        Console(stderr=True).print(line, markup=False, highlight=False, soft_wrap=True)
    if min_new_rows is not None:
        config.triggers.min_new_rows = min_new_rows
    if retrain_cost is not None:
        if retrain_cost < 0:
            raise InputError(f"--retrain-cost {retrain_cost:g}: must be >= 0")
        config.triggers.retrain_cost = retrain_cost
    frame = read_batch(data)
    chosen = tuple(p.strip() for p in policies.split(",") if p.strip())
    try:
        result = run_replay(
            frame,
            config,
            freq,
            schedule_every,
            chosen,
            replay_progress(),
            label_delay=label_delay,
            oracle=oracle,
        )
    except (InputError, NotEnoughData) as exc:
        raise type(exc)(f"{data}: {exc}") from None
    folder = out or root.reports / f"replay-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    png = plot_replay(result, folder / "replay.png")
    page = report_html(result, png, folder / "replay.html")
    answer = result.as_json()
    answer.update({"plot": str(png), "report": str(page)})
    if as_json:
        print_json(answer)
        return
    console = Console()
    late = f", labels {result.label_delay} late" if result.label_delay else ""
    table = Table(title=f"replay of {data.name}: {result.batches} batches of {freq}{late}")
    for col in ("policy", f"mean {result.metric_name}", "retrains", "compute s", "regret"):
        table.add_column(col)
    for name, p in result.policies.items():
        metric = "n/a" if p.mean_metric is None else f"{p.mean_metric:.4f}"
        regret = "n/a" if p.regret is None else f"{p.regret:.4f}"
        table.add_row(name, metric, str(p.retrains), f"{p.seconds:.1f}", regret)
    if result.oracle is not None:
        best = result.oracle.summary()
        table.add_row(
            "oracle",
            f"{best['mean_metric']:.4f}",
            str(best["retrains"]),
            f"{best['seconds']:.1f}",
            f"{best['regret']:.4f}",
        )
    console.print(table)
    if result.oracle is not None:
        console.print(
            f"regret = {best['cost_in_metric_units']:.4g} x retrains (triggers.retrain_cost "
            f"{best['retrain_cost']:g}) + the {result.metric_name} lost against the oracle "
            "(the hindsight-optimal schedule), summed over the scored batches; the oracle "
            f"retrains after {', '.join(u[:10] for u in best['retrain_after'][1:]) or 'no batch'}"
            f" and may install the rule's window or any of the {best['policy_fits']} other "
            f"models the policies fitted ({best['policy_fits_installed']} installed)"
        )
        below = [n for n, p in result.policies.items() if p.regret is not None and p.regret < 0]
        if below:
            console.print(
                f"{', '.join(below)} came in below the oracle: batches under {SCORE_MIN_ROWS} "
                "rows are scored pooled and the oracle retrains only at a pool's end; a --freq "
                f"that gives every batch {SCORE_MIN_ROWS} rows makes it exact"
            )
    console.print(f"plot: {png}\nreport: {page}")
