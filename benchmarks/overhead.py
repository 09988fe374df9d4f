"""Prefect's overhead: the `retrain` flow against the same pure functions in plain Python.

Both paths run on the same lake (>= 100k labelled rows of the demo stream, stored once as
snapshots, not timed), with the same config and the same MLflow store: the plain path is the
body of `flows/retrain.py` with every task replaced by the `ctloop` function it wraps, so the
only difference is Prefect (flow and task runs, their states, events, logs and artifacts on
the API). The ephemeral Prefect server is started, and both paths are warmed up, before timing.
Runs alternate (plain/flow, then flow/plain, ...) to cancel drift of the machine; the ratio is
median(flow) / median(plain).

Usage, from the repo root:

    python benchmarks/overhead.py [--rows-per-day 5000] [--days 24] [--repeats 5] [--keep]

The last line printed is one JSON object: {"bench": "overhead", "ratio": ..., ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_RATIO = 1.15
QUIET = {
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL": "WARNING",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL": "WARNING",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


# -- setup (not timed) -------------------------------------------------------------------------


def build_lake(home, config, rows_per_day: int, days: int) -> int:
    """Write `days` stable days of labelled demo rows into the lake, one snapshot per day."""
    import numpy as np

    from ctloop.data.demo import DemoScript, generate_day
    from ctloop.data.schema import infer_schema, save_schema
    from ctloop.lake import snapshots as lake
    from ctloop.validate.checks import coerce_to_schema

    never = days + 1000  # no gradual shift, no concept drift: every day is "stable"
    script = DemoScript(
        days=days,
        rows_per_day=rows_per_day,
        shift_start=never,
        shift_end=never,
        concept_drift_day=never,
        corrupt_day=never,
    )
    rng = np.random.default_rng(script.seed)
    schema = None
    rows = 0
    for day in range(days):
        frame = generate_day(script, day, rng)
        if schema is None:
            schema = infer_schema(frame, config.dataset)
            save_schema(schema, home.schema_dir)
        coerced = coerce_to_schema(frame, schema)
        lake.write_snapshot(
            coerced, home, f"benchmark/day{day:02d}.csv", schema.version, config.dataset.timestamp
        )
        rows += len(coerced)
    return rows


# -- the plain path ----------------------------------------------------------------------------


def retrain_plain(
    request, config, stages: dict[str, float] | None = None, ran: list[str] | None = None
) -> dict:
    """`flows/retrain.py` without Prefect: each task replaced by the body it wraps, same order.

    `stages` (if given) receives the seconds of each stage, for the breakdown; `ran` receives
    the name of each task whose body ran, to check that this still mirrors the flow.
    """
    from dataclasses import asdict

    from ctloop.config.home import home_of
    from ctloop.errors import NotEnoughData
    from ctloop.gates.blessing import bless
    from ctloop.gates.reports import blessing_markdown
    from ctloop.lake import snapshots as lake
    from ctloop.loop import triggers
    from ctloop.model import analyse as analysis_mod
    from ctloop.model import train as training
    from ctloop.model.evaluate import evaluate_predictions
    from ctloop.model.train import prepare_features
    from ctloop.registry.lineage import RECIPE_FILE, make_recipe
    from ctloop.registry.store import CHALLENGER, CHAMPION, git_commit, next_semver, open_registry
    from ctloop.validate.checks import label_parity
    from flows.retrain import _trained_on  # the flow's own formatter, so the tags are equal

    stages = {} if stages is None else stages
    ran = [] if ran is None else ran
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        stages[name] = stages.get(name, 0.0) + now - clock[0]
        clock[0] = now

    if request.check_rules or config.tuning.enabled:
        raise SystemExit("the benchmark runs a manual retrain without tuning")

    # -- data (tasks/train.py, tasks/register.py:load_champion)
    manifests_list = lake.list_snapshots(home_of(config))
    ids = lake.select_window(
        manifests_list, config.training.window_days, request.since, config.training.max_rows
    )
    if not ids:
        raise NotEnoughData("the lake has no accepted snapshots in the training window")
    ran.append("select-window")
    by_id = {m.snapshot: m.sha256 for m in lake.list_snapshots(home_of(config))}
    digests = {i: by_id[i] for i in ids if i in by_id}
    ran.append("snapshot-digests")
    frame = lake.load_snapshots(home_of(config), ids)
    ran.append("load-window")
    split = training.split_holdout(frame, config)
    ran.append("split-holdout")
    target = config.require_target()
    label_parity(split.train[target], split.holdout[target], config)
    ran.append("check-split-parity")
    registry = open_registry(config)
    champion_ref = registry.by_alias(CHAMPION)
    champion = None if champion_ref is None else (champion_ref, registry.load(champion_ref))
    ran.append("load-champion")
    tuned = None  # tuning is off in this benchmark
    family = params = None
    lap("data")

    # -- train (tasks/train.py:train_candidate)
    if config.training.system_metrics:
        with training.ResourceSampler() as sampler:
            candidate = training.train_candidate(split.train, config, family, params)
        system_samples = sampler.samples
    else:
        candidate = training.train_candidate(split.train, config, family, params)
        system_samples = []
    ran.append("train-candidate")
    lap("train")

    # -- analyse (tasks/analyse.py, tasks/evaluate.py; slices per column as flows/fanout.py)
    columns = analysis_mod.slice_columns(split.holdout, candidate.categorical, config)
    challenger_by_slice = analysis_mod.slice_metrics(
        candidate.pipeline, split.holdout, candidate.numeric, candidate.categorical, columns, config
    )
    ran.extend(["slice-metrics"] * len(columns))
    analysis = analysis_mod.analyse_model(
        candidate.pipeline,
        split.holdout,
        candidate.numeric,
        candidate.categorical,
        config,
        challenger_by_slice,
    )
    ran.append("analyse-challenger")
    challenger_metrics = analysis.metrics
    champion_metrics = champion_by_slice = None
    if champion is not None:
        ref, model = champion
        numeric = [n for n, kind in ref.signature if kind == "numeric"]
        categorical = [n for n, kind in ref.signature if kind == "categorical"]
        X = prepare_features(split.holdout, numeric, categorical)
        champion_metrics = evaluate_predictions(
            model, X, split.holdout[config.require_target()], config
        )
        ran.append("evaluate-model")
        if config.gates.slice_columns:
            champion_by_slice = analysis_mod.slice_metrics(
                model, split.holdout, numeric, categorical, config.gates.slice_columns, config
            )
            ran.extend(["slice-metrics"] * len(config.gates.slice_columns))
    sensitive = set(config.analysis.sensitive_columns)
    fairness_gaps = tuple(g for g in analysis.gaps if g.column in sensitive)
    lap("analyse")

    # -- bless (tasks/bless.py; its Prefect artifact has no plain counterpart)
    blessing = bless(
        challenger_metrics,
        champion_metrics,
        config.gates,
        challenger_slices=analysis.slices,
        champion_slices=champion_by_slice,
        gaps=fairness_gaps,
    )
    ran.append("bless-candidate")

    # -- record
    registry = open_registry(config)
    signature = candidate.signature
    semver = next_semver(registry.latest(), signature) if blessing.blessed else None
    manifests = {m.snapshot: m for m in lake.list_snapshots(home_of(config))}
    commit = git_commit()
    trained_on = _trained_on(manifests, ids, len(frame))
    recipe = make_recipe(
        candidate,
        config,
        ids,
        digests,
        commit,
        split.strategy,
        len(frame),
        challenger_metrics,
        None,
    )
    card = analysis_mod.model_card(
        analysis,
        project=config.project,
        family=candidate.family,
        params=candidate.params,
        trained_on=trained_on,
        snapshots=ids,
        train_rows=candidate.train_rows,
        holdout_rows=len(split.holdout),
        split=split.strategy,
        config=config,
        blessing_reasons=list(blessing.reasons),
        blessed=blessing.blessed,
        semver=semver,
        dp_epsilon=candidate.dp_epsilon,
    )
    ran.append("publish-model-card")  # a Prefect artifact only: nothing to do here
    tags = {
        "ctloop.trigger": request.trigger,
        "ctloop.reason": request.reason,
        "ctloop.snapshots": ",".join(ids),
        "ctloop.snapshot_digests": json.dumps({i: d[:16] for i, d in digests.items()}),
        "ctloop.git_commit": commit,
        "ctloop.signature": json.dumps(signature),
        "ctloop.trained_on": trained_on,
        "ctloop.split": split.strategy,
        "ctloop.family": candidate.family,
        "ctloop.params": json.dumps(candidate.params, default=str),
        "ctloop.recipe_params": json.dumps(candidate.recipe_params, default=str),
        "ctloop.blessed": str(blessing.blessed).lower(),
        "ctloop.blessing": "; ".join(blessing.reasons),
        "ctloop.prefect_flow_run": "",
    }
    if candidate.dp_epsilon is not None:
        tags["ctloop.dp_epsilon"] = str(candidate.dp_epsilon)
    metrics = {f"holdout_{k}": v for k, v in challenger_metrics.items()}
    if champion_metrics:
        metrics.update({f"champion_holdout_{k}": v for k, v in champion_metrics.items()})
    metrics.update({f"importance_{k}": v for k, v in analysis.importances.items()})
    metrics.update({f"slice_gap_{g.column}": g.gap for g in analysis.gaps})
    artifacts = {
        "blessing.json": json.dumps(blessing.as_dict(), indent=2, default=str),
        "blessing.md": blessing_markdown(blessing, semver),
        "model_card.md": card,
        "analysis.json": json.dumps(analysis.as_dict(), indent=2, default=str),
        RECIPE_FILE: recipe.to_json(),
        "config.json": config.model_dump_json(indent=2),
    }
    lap("bless")
    run_id, model_uri = open_registry(config).log_candidate(
        pipeline=candidate.pipeline,
        input_example=prepare_features(
            split.holdout.head(50), candidate.numeric, candidate.categorical
        ),
        params={**candidate.params, "train_rows": candidate.train_rows, "since": request.since},
        metrics=metrics,
        tags=tags,
        artifacts=artifacts,
        run_name=f"{request.trigger}-{semver or 'refused'}",
        images=analysis.plots,
        histories=system_samples,
        trials=[asdict(t) for t in tuned.trials] if tuned else None,
        inputs=[(lake.mlflow_dataset(home_of(config), ids)[0], "training")],
    )
    ran.append("log-candidate")
    lap("log")

    # -- register and move the alias (tasks/register.py)
    version = None
    promoted = False
    if blessing.blessed:
        ref = open_registry(config).register(model_uri, run_id, {**tags, "semver": semver})
        ran.append("register-version")
        if config.gates.promote:
            registry = open_registry(config)
            registry.set_alias(CHAMPION, ref.version)
            challenger = registry.by_alias(CHALLENGER)
            if challenger is not None and challenger.version <= ref.version:
                registry.delete_alias(CHALLENGER)
            ran.append("promote")
            promoted = True
        else:
            open_registry(config).set_alias(CHALLENGER, ref.version)
            ran.append("mark-challenger")
        version = ref.version
    if request.trigger == "drift":
        triggers.save_pending(home_of(config), None)
    lap("register")
    return {
        "version": version,
        "semver": semver,
        "blessed": blessing.blessed,
        "reasons": list(blessing.reasons),
        "promoted": promoted,
        "run_id": run_id,
        "snapshots": ids,
        "metrics": challenger_metrics,
        "champion_metrics": champion_metrics,
    }


# -- measurement helpers -----------------------------------------------------------------------


def children_cpu_seconds() -> float | None:
    """CPU seconds used so far by this process's live children (the ephemeral server); Linux."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        pids: set[str] = set()
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            pids.update((task / "children").read_text().split())
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return total / tick
    except (OSError, ValueError, IndexError):
        return None


class Measured:
    """Wall, own-process CPU and server-process CPU of one run."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.server_cpu: float | None = None

    def __enter__(self) -> Measured:
        self._server = children_cpu_seconds()
        self._cpu = time.process_time()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
        server = children_cpu_seconds()
        if server is not None and self._server is not None:
            self.server_cpu = server - self._server


def task_run_breakdown(flow_run_ids: list[Any]) -> dict[str, Any] | None:
    """Per flow run: seconds inside its task runs (Running state) and the tasks it ran."""
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        inside, counts, names = [], [], []
        with get_client(sync_client=True) as client:
            for _ in range(20):  # task runs are recorded from events, asynchronously
                runs = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)),
                    limit=200,
                )
                if runs and all(r.state and r.state.is_final() for r in runs):
                    break
                time.sleep(0.5)
            for flow_run_id in flow_run_ids:
                mine = [r for r in runs if r.flow_run_id == flow_run_id]
                inside.append(sum(r.total_run_time.total_seconds() for r in mine))
                counts.append(len(mine))
                names.append(sorted(r.name.rsplit("-", 1)[0] for r in mine))
        return {"inside_tasks": inside, "task_runs": statistics.median(counts), "names": names}
    except Exception as exc:  # a diagnostic only; never fail the benchmark on it
        print(f"(task run breakdown unavailable: {type(exc).__name__}: {exc})", file=sys.stderr)
        return None


class QuietMlflow:
    """stderr without MLflow's registry chatter ("Created version '3' of model ...")."""

    DROP = ("Successfully registered model ", "Registered model ", "Created version ")

    def __init__(self, stream) -> None:
        self.stream = stream
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not line.startswith(self.DROP):
                self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.stream.write(self.pending)
            self.pending = ""
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:7.2f}"


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=5000)
    parser.add_argument("--days", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each path")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="OpenMP threads for training (default: the library's, all cores); 1 is far less "
        "sensitive to other load on the machine",
    )
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before scikit-learn is imported

    from ctloop.config.home import Home, activate

    root = Path(tempfile.mkdtemp(prefix="ctloop-overhead-"))
    home = Home(root)
    activate(home)  # before anything imports Prefect
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    try:
        with contextlib.redirect_stderr(QuietMlflow(sys.stderr)):
            return run(home, args)
    finally:
        if args.keep:
            print(f"home kept at {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def run(home, args) -> int:
    import warnings

    from ctloop.data.demo import demo_config

    warnings.filterwarnings("ignore")  # MLflow's schema hints: the same for both paths

    home.ensure()
    base = demo_config(str(home.root))
    config = base.model_copy(
        update={"training": base.training.model_copy(update={"window_days": 100})}
    )
    config = type(config).model_validate(config.model_dump())

    load_at_start = os.getloadavg()[0]
    started = time.perf_counter()
    rows = build_lake(home, config, args.rows_per_day, args.days)
    setup_seconds = time.perf_counter() - started

    from prefect import flow

    from flows.retrain import RetrainRequest, retrain

    @flow(name="overhead-ping")
    def ping() -> int:
        return 1

    request = RetrainRequest(trigger="manual", reason="overhead benchmark")

    # -- warm-up, not timed: the ephemeral server, imports, the MLflow store, a first champion
    started = time.perf_counter()
    ping()
    server_seconds = time.perf_counter() - started
    started = time.perf_counter()
    first = retrain(request, config)
    warm_flow_seconds = time.perf_counter() - started
    started = time.perf_counter()
    retrain_plain(request, config)
    warm_plain_seconds = time.perf_counter() - started
    empty_flow_runs = []
    # the fixed cost of one flow run with no work in it (in Prefect 3.9 most of it is the join
    # of the flow-run heartbeat thread, which sleeps in 1 s steps)
    for _ in range(3):
        started = time.perf_counter()
        ping()
        empty_flow_runs.append(time.perf_counter() - started)
    empty_flow_seconds = statistics.median(empty_flow_runs)
    print(
        f"setup: {rows} rows in {args.days} snapshots ({setup_seconds:.1f}s); "
        f"ephemeral Prefect server started before timing ({server_seconds:.1f}s, not counted); "
        f"warm-up flow {warm_flow_seconds:.1f}s (first model v{first['version']}), "
        f"plain {warm_plain_seconds:.1f}s; load average {load_at_start:.1f} on "
        f"{os.cpu_count()} cores"
    )

    # -- timed runs, interleaved: P F, F P, P F, ...
    plain: list[Measured] = []
    prefect_runs: list[Measured] = []
    stages: list[dict[str, float]] = []
    mirrored: list[list[str]] = []
    flow_run_ids = []
    outcomes = []
    for i in range(args.repeats):
        order = ("plain", "flow") if i % 2 == 0 else ("flow", "plain")
        for which in order:
            if which == "plain":
                stage: dict[str, float] = {}
                ran: list[str] = []
                with Measured() as m:
                    result = retrain_plain(request, config, stage, ran)
                plain.append(m)
                stages.append(stage)
                mirrored.append(sorted(ran))
            else:
                with Measured() as m:
                    state = retrain(request, config, return_state=True)
                result = state.result()
                prefect_runs.append(m)
                flow_run_ids.append(state.state_details.flow_run_id)
            outcomes.append((which, result["blessed"], result["version"]))
            print(
                f"  run {len(outcomes):2d} {which:5s} {m.wall:6.2f}s  "
                f"blessed={result['blessed']} version={result['version']}"
            )

    plain_s = statistics.median(m.wall for m in plain)
    prefect_s = statistics.median(m.wall for m in prefect_runs)
    ratio = prefect_s / plain_s
    ratio_min = min(m.wall for m in prefect_runs) / min(m.wall for m in plain)
    breakdown = task_run_breakdown(flow_run_ids)

    print()
    print(f"{'':34s} {'plain':>7s} {'prefect':>7s}")
    print(f"{'wall seconds (median)':34s} {_fmt(plain_s)} {_fmt(prefect_s)}")
    print(
        f"{'wall seconds (best)':34s} {_fmt(min(m.wall for m in plain))} "
        f"{_fmt(min(m.wall for m in prefect_runs))}"
    )
    print(
        f"{'this process CPU seconds':34s} {_fmt(_median([m.cpu for m in plain]))} "
        f"{_fmt(_median([m.cpu for m in prefect_runs]))}"
    )
    print(
        f"{'server process CPU seconds':34s} {_fmt(_median([m.server_cpu for m in plain]))} "
        f"{_fmt(_median([m.server_cpu for m in prefect_runs]))}"
    )
    for name in ("data", "train", "analyse", "bless", "log", "register"):
        print(f"{'  plain stage: ' + name:34s} {_fmt(_median([s.get(name) for s in stages]))}")
    if breakdown:
        inside = breakdown["inside_tasks"]
        outside = [m.wall - s for m, s in zip(prefect_runs, inside, strict=True)]
        print(f"{'  flow: inside its task runs':34s} {'':7s} {_fmt(statistics.median(inside))}")
        print(f"{'  flow: outside task runs':34s} {'':7s} {_fmt(statistics.median(outside))}")
        print(f"{'  flow: task runs per flow run':34s} {'':7s} {breakdown['task_runs']:7.0f}")
    print(f"{'empty flow run (no tasks)':34s} {'':7s} {_fmt(empty_flow_seconds)}")
    parity = None
    if breakdown:
        parity = all(names == mirrored[-1] for names in breakdown["names"]) and all(
            ran == mirrored[-1] for ran in mirrored
        )
        if not parity:
            print(
                "WARNING: the plain path no longer mirrors the flow: the flow ran "
                f"{breakdown['names'][-1]}, the plain path {mirrored[-1]}; update retrain_plain"
            )
    spread = max(m.wall for m in plain) / min(m.wall for m in plain)
    if spread > 1.5:
        print(
            f"WARNING: noisy machine: plain runs vary {spread:.1f}x (load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); the ratio is unreliable, "
            "rerun when the machine is idle (or with --threads 1, --repeats 9)"
        )
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(
        f"ratio prefect/plain = {ratio:.3f} ({verdict} target {TARGET_RATIO}); "
        f"overhead {prefect_s - plain_s:+.2f}s per retrain on {rows} rows, "
        f"median of {args.repeats} interleaved runs each (best-of ratio {ratio_min:.3f})"
    )
    sys.stdout.flush()
    print(
        json.dumps(
            {
                "bench": "overhead",
                "ratio": round(ratio, 4),
                "target_ratio": TARGET_RATIO,
                "prefect_seconds": round(prefect_s, 3),
                "plain_seconds": round(plain_s, 3),
                "rows": rows,
                "repeats": args.repeats,
                "prefect_runs_seconds": [round(m.wall, 3) for m in prefect_runs],
                "plain_runs_seconds": [round(m.wall, 3) for m in plain],
                "ratio_best": round(ratio_min, 4),
                "empty_flow_seconds": round(empty_flow_seconds, 3),
                "plain_spread": round(spread, 3),
                "same_tasks": parity,
                "omp_threads": args.threads,
                "load_average_start": round(load_at_start, 2),
                "server_startup_seconds": round(server_seconds, 3),
                "server_startup_counted": False,
                "all_blessed": all(b for _, b, _ in outcomes),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
