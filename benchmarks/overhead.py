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

    from ctloop import lake
    from ctloop.demo_data import DemoScript, generate_day
    from ctloop.schema import infer_schema, save_schema
    from ctloop.validation import coerce_to_schema

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


def retrain_plain(request, config, stages: dict[str, float] | None = None) -> dict:
    """`flows/retrain.py` without Prefect: each task replaced by the body it wraps, same order.

    `stages` (if given) receives the seconds of each stage, for the breakdown.
    """
    from ctloop import lake, training, triggers
    from ctloop.blessing import bless
    from ctloop.errors import NotEnoughData
    from ctloop.evaluation import evaluate_predictions
    from ctloop.home import home_of
    from ctloop.registry import CHAMPION, git_commit, next_semver, open_registry
    from ctloop.reports import blessing_markdown
    from flows.retrain import _trained_on  # the flow's own tag formatter, so tags are equal

    stages = {} if stages is None else stages
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        stages[name] = stages.get(name, 0.0) + now - clock[0]
        clock[0] = now

    def evaluate(model, numeric, categorical, holdout):  # tasks/evaluate.py:evaluate_model
        X = training.prepare_features(holdout, numeric, categorical)
        return evaluate_predictions(model, X, holdout[config.require_target()], config)

    # -- data (tasks/train.py: select_window, load_window, split_holdout)
    manifests_list = lake.list_snapshots(home_of(config))
    ids = lake.select_window(
        manifests_list, config.training.window_days, request.since, config.training.max_rows
    )
    if not ids:
        raise NotEnoughData("the lake has no accepted snapshots in the training window")
    frame = lake.load_snapshots(home_of(config), ids)
    split = training.split_holdout(frame, config)
    lap("data")

    # -- train (tasks/train.py: train_candidate)
    candidate = training.train_candidate(split.train, config)
    lap("train")

    # -- analyse (tasks/evaluate.py, tasks/register.py: load_champion)
    challenger_metrics = evaluate(
        candidate.pipeline, candidate.numeric, candidate.categorical, split.holdout
    )
    registry = open_registry(config)
    champion_ref = registry.by_alias(CHAMPION)
    champion = None if champion_ref is None else (champion_ref, registry.load(champion_ref))
    champion_metrics = None
    if champion is not None:
        ref, model = champion
        numeric = [n for n, kind in ref.signature if kind == "numeric"]
        categorical = [n for n, kind in ref.signature if kind == "categorical"]
        champion_metrics = evaluate(model, numeric, categorical, split.holdout)
    lap("evaluate")

    # -- bless (tasks/bless.py; its Prefect artifact has no plain counterpart)
    blessing = bless(challenger_metrics, champion_metrics, config.gates)

    # -- register and promote
    registry = open_registry(config)
    signature = [[n, "numeric"] for n in candidate.numeric] + [
        [n, "categorical"] for n in candidate.categorical
    ]
    semver = next_semver(registry.latest(), signature) if blessing.blessed else None
    manifests = {m.snapshot: m for m in lake.list_snapshots(home_of(config))}
    tags = {
        "ctloop.trigger": request.trigger,
        "ctloop.reason": request.reason,
        "ctloop.snapshots": ",".join(ids),
        "ctloop.git_commit": git_commit(),
        "ctloop.signature": json.dumps(signature),
        "ctloop.trained_on": _trained_on(manifests, ids, len(frame)),
        "ctloop.split": split.strategy,
        "ctloop.blessed": str(blessing.blessed).lower(),
        "ctloop.blessing": "; ".join(blessing.reasons),
        "ctloop.prefect_flow_run": "",
    }
    metrics = {f"holdout_{k}": v for k, v in challenger_metrics.items()}
    if champion_metrics:
        metrics.update({f"champion_holdout_{k}": v for k, v in champion_metrics.items()})
    lap("bless")
    run_id, model_uri = open_registry(config).log_candidate(
        pipeline=candidate.pipeline,
        input_example=split.holdout[candidate.features].head(50),
        params={**candidate.params, "train_rows": candidate.train_rows, "since": request.since},
        metrics=metrics,
        tags=tags,
        artifacts={
            "blessing.json": json.dumps(blessing.as_dict(), indent=2),
            "blessing.md": blessing_markdown(blessing, None),
        },
        run_name=f"{request.trigger}-{semver or 'refused'}",
    )
    lap("log")
    version = None
    if blessing.blessed:
        ref = open_registry(config).register(model_uri, run_id, {**tags, "semver": semver})
        open_registry(config).set_alias(CHAMPION, ref.version)
        version = ref.version
    if request.trigger == "drift":
        triggers.save_pending(home_of(config), None)
    lap("register")
    return {
        "version": version,
        "semver": semver,
        "blessed": blessing.blessed,
        "reasons": list(blessing.reasons),
        "promoted": version is not None,
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


def task_run_breakdown(flow_run_ids: list[Any]) -> dict[str, float] | None:
    """Median seconds spent inside tasks (Running state) per flow run, and task runs per run."""
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        inside, counts = [], []
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
        return {"inside_tasks": statistics.median(inside), "task_runs": statistics.median(counts)}
    except Exception as exc:  # a diagnostic only; never fail the benchmark on it
        print(f"(task run breakdown unavailable: {type(exc).__name__}: {exc})", file=sys.stderr)
        return None


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
    args = parser.parse_args(argv)

    from ctloop.home import Home, activate

    root = Path(tempfile.mkdtemp(prefix="ctloop-overhead-"))
    home = Home(root)
    activate(home)  # before anything imports Prefect
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    try:
        return run(home, args)
    finally:
        if args.keep:
            print(f"home kept at {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def run(home, args) -> int:
    import warnings

    from mlflow.utils.logging_utils import disable_logging

    from ctloop.demo_data import demo_config

    # MLflow's "Created version ..." lines and warnings: same for both paths, not the output
    warnings.filterwarnings("ignore")
    disable_logging()

    home.ensure()
    base = demo_config(str(home.root))
    config = base.model_copy(
        update={"training": base.training.model_copy(update={"window_days": 100})}
    )
    config = type(config).model_validate(config.model_dump())

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
    for _ in range(3):  # the fixed cost of one flow run, with no work in it
        started = time.perf_counter()
        ping()
        empty_flow_runs.append(time.perf_counter() - started)
    empty_flow_seconds = statistics.median(empty_flow_runs)
    print(
        f"setup: {rows} rows in {args.days} snapshots ({setup_seconds:.1f}s); "
        f"ephemeral Prefect server started before timing ({server_seconds:.1f}s, not counted); "
        f"warm-up flow {warm_flow_seconds:.1f}s (first model v{first['version']}), "
        f"plain {warm_plain_seconds:.1f}s"
    )

    # -- timed runs, interleaved: P F, F P, P F, ...
    plain: list[Measured] = []
    prefect_runs: list[Measured] = []
    stages: list[dict[str, float]] = []
    flow_run_ids = []
    outcomes = []
    for i in range(args.repeats):
        order = ("plain", "flow") if i % 2 == 0 else ("flow", "plain")
        for which in order:
            if which == "plain":
                stage: dict[str, float] = {}
                with Measured() as m:
                    result = retrain_plain(request, config, stage)
                plain.append(m)
                stages.append(stage)
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
    for name in ("data", "train", "evaluate", "bless", "log", "register"):
        print(f"{'  plain stage: ' + name:34s} {_fmt(_median([s.get(name) for s in stages]))}")
    if breakdown:
        outside = prefect_s - breakdown["inside_tasks"]
        print(f"{'  flow: inside its task runs':34s} {'':7s} {_fmt(breakdown['inside_tasks'])}")
        print(f"{'  flow: outside task runs':34s} {'':7s} {_fmt(outside)}")
        print(f"{'  flow: task runs per flow run':34s} {'':7s} {breakdown['task_runs']:7.0f}")
    print(f"{'empty flow run (no tasks)':34s} {'':7s} {_fmt(empty_flow_seconds)}")
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
