"""Prefect's overhead: the `retrain` flow against the same flow body with Prefect taken out.

Both paths run the one body of `flows/retrain.py` on the same lake (>= 100k labelled demo rows,
not timed), config and MLflow store. The plain path calls `retrain.fn` with every task and
subflow of the `flows` and `tasks` modules swapped for its function (`.fn`), fan-outs in order
and the Prefect calls in task bodies (artifacts, loggers, transactions, events) doing nothing:
it cannot drift from the flow, and the only difference is Prefect. The server is started and
both paths warmed up before timing; runs alternate; the ratio is median(flow) / median(plain).

    python benchmarks/overhead.py [--rows-per-day 5000] [--days 24] [--repeats 5] [--threads N]

The last line printed is one JSON object: {"bench": "overhead", "ratio": ..., ...}.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: flows, tasks

TARGET_RATIO = 1.15
QUIET = ("", "HANDLERS_CONSOLE_", "HANDLERS_CONSOLE_FLOW_RUNS_", "HANDLERS_CONSOLE_TASK_RUNS_")


def build_lake(home, config, rows_per_day: int, days: int) -> int:
    """Write `days` stable days of labelled demo rows into the lake, one snapshot per day."""
    import numpy as np

    from ctloop.data.demo import DemoScript, generate_day
    from ctloop.data.schema import infer_schema, save_schema
    from ctloop.lake import snapshots as lake
    from ctloop.validate.checks import coerce_to_schema

    never = days + 1000  # no shift, no concept drift, no corrupt day: every day is "stable"
    stable = dict.fromkeys(("shift_start", "shift_end", "concept_drift_day", "corrupt_day"), never)
    script = DemoScript(days=days, rows_per_day=rows_per_day, **stable)
    rng = np.random.default_rng(script.seed)
    frames = [generate_day(script, day, rng) for day in range(days)]
    schema = infer_schema(frames[0], config.dataset)
    save_schema(schema, home.schema_dir)
    for day, frame in enumerate(frames):
        coerced = coerce_to_schema(frame, schema)
        name, timestamp = f"benchmark/day{day:02d}.csv", config.dataset.timestamp
        lake.write_snapshot(coerced, home, name, schema.version, timestamp)
    return sum(len(frame) for frame in frames)


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def plain_map(runner, fn, parameters: dict) -> list:
    """`flows.fanout.map_on` without a task runner: one call per item, in order."""
    from prefect.utilities.annotations import unmapped

    n = next(len(v) for v in parameters.values() if not isinstance(v, unmapped))
    return [fn(**{k: v[i] for k, v in parameters.items()}) for i in range(n)]


# Prefect calls made beside the tasks or inside their bodies, and what the plain path does
PLAIN = {
    "map_on": plain_map,
    "emit_event": lambda *a, **k: None,
    "create_markdown_artifact": lambda *a, **k: None,
    "create_table_artifact": lambda *a, **k: None,
    "get_run_logger": lambda: logging.getLogger("ctloop.plain"),
    "get_transaction": lambda: None,
    "transaction": contextlib.nullcontext,
}


@contextlib.contextmanager
def without_prefect(ran: list[tuple[str, float]]):
    """Every task and subflow of the loaded `flows` and `tasks` modules swapped for its function,
    and the calls of `PLAIN` for theirs; `ran` gets (task name, seconds) of each task body run."""
    import prefect.events
    from prefect import Flow, Task

    def timed_task(task):
        def run(*args, **kwargs):
            seconds, result = timed(lambda: task.fn(*args, **kwargs))
            ran.append((task.name, seconds))
            return result

        return run

    ours = [m for n, m in list(sys.modules.items()) if n.split(".")[0] in ("flows", "tasks")]
    saved = [
        (module, name, obj)
        for module in [prefect.events, *ours]
        for name, obj in list(vars(module).items())
        if isinstance(obj, Task | Flow) or name in PLAIN
    ]
    for module, name, obj in saved:
        plain = PLAIN.get(name) or (timed_task(obj) if isinstance(obj, Task) else obj.fn)
        setattr(module, name, plain)
    try:
        yield
    finally:
        for module, name, obj in saved:
            setattr(module, name, obj)


def flow_task_runs(flow_run_ids: list) -> tuple[list[float], list[list[str]]] | None:
    """Per flow run: the seconds inside its task runs, and the sorted names of its tasks."""
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        runs_of = FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
        with get_client(sync_client=True) as client:
            for _ in range(20):  # task runs are recorded from events, asynchronously
                runs = client.read_task_runs(flow_run_filter=runs_of, limit=200)
                if runs and all(r.state and r.state.is_final() for r in runs):
                    break
                time.sleep(0.5)
        mine = [[r for r in runs if r.flow_run_id == i] for i in flow_run_ids]
        inside = [sum(r.total_run_time.total_seconds() for r in rs) for rs in mine]
        return inside, [sorted(r.name.rsplit("-", 1)[0] for r in rs) for rs in mine]
    except Exception as exc:  # a diagnostic only; never fail the benchmark on it
        print(f"(task runs unavailable: {type(exc).__name__}: {exc})", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=5000)
    parser.add_argument("--days", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each path")
    parser.add_argument("--threads", type=int, default=None, help="OpenMP threads (1 is steadier)")
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before scikit-learn is imported
    from ctloop.stores.home import Home, activate

    root = Path(tempfile.mkdtemp(prefix="ctloop-overhead-"))
    activate(Home(root))  # before anything imports Prefect
    for key in QUIET:
        os.environ.setdefault(f"PREFECT_LOGGING_{key}LEVEL", "WARNING")
    try:
        print(json.dumps(measure(Home(root).ensure(), args)), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def measure(home, args) -> dict:
    from ctloop.data.demo import demo_config

    warnings.filterwarnings("ignore")  # MLflow's schema hints: the same for both paths
    base = demo_config(str(home.root))
    training = base.training.model_copy(update={"window_days": 100})
    config = type(base).model_validate(base.model_copy(update={"training": training}).model_dump())
    load_at_start = os.getloadavg()[0]
    setup_seconds, rows = timed(lambda: build_lake(home, config, args.rows_per_day, args.days))

    from prefect import flow

    from flows.retrain import RetrainRequest, retrain

    ping = flow(name="overhead-ping")(lambda: 1)  # an empty flow run: the fixed cost of one
    request = RetrainRequest(trigger="manual", reason="overhead benchmark")

    def plain(ran: list[tuple[str, float]]) -> dict:
        with without_prefect(ran):
            return retrain.fn(request, config)

    # -- warm-up, not timed: the ephemeral server, imports, the MLflow store, a first champion
    server_seconds, _ = timed(ping)
    warm_flow, first = timed(lambda: retrain(request, config))
    warm_plain, _ = timed(lambda: plain([]))
    empty_flow = statistics.median(timed(ping)[0] for _ in range(3))
    print(
        f"setup: {rows} rows ({setup_seconds:.1f}s); server start {server_seconds:.1f}s (not "
        f"counted); warm-up flow {warm_flow:.1f}s (v{first['version']}), plain {warm_plain:.1f}s"
    )

    # -- timed runs, interleaved: P F, F P, P F, ...
    walls, plain_ran, flow_run_ids, blessed = {"plain": [], "prefect": []}, [], [], []
    for i in range(args.repeats):
        for which in ("plain", "prefect") if i % 2 == 0 else ("prefect", "plain"):
            if which == "plain":
                plain_ran.append([])
                wall, result = timed(lambda: plain(plain_ran[-1]))
            else:
                wall, state = timed(lambda: retrain(request, config, return_state=True))
                result = state.result()
                flow_run_ids.append(state.state_details.flow_run_id)
            walls[which].append(wall)
            blessed.append(result["blessed"])
            print(f"  run {len(blessed):2d} {which:5s} {wall:6.2f}s version={result['version']}")

    plain_s, prefect_s = (statistics.median(walls[k]) for k in ("plain", "prefect"))
    ratio, ratio_best = prefect_s / plain_s, min(walls["prefect"]) / min(walls["plain"])
    spread = max(walls["plain"]) / min(walls["plain"])
    plain_names = [sorted(name for name, _ in ran) for ran in plain_ran]
    per_task = collections.Counter()
    for name, seconds in (call for ran in plain_ran for call in ran):
        per_task[name] += seconds / args.repeats
    top = ", ".join(f"{name} {sec:.2f}s" for name, sec in per_task.most_common(6))
    print(f"plain path, mean seconds per task body: {top}")
    same_tasks = None
    runs = flow_task_runs(flow_run_ids)
    if runs:
        inside, flow_names = runs
        outside = statistics.median(w - s for w, s in zip(walls["prefect"], inside, strict=True))
        print(
            f"flow: {statistics.median(inside):.2f}s inside task runs, {outside:.2f}s outside, "
            f"{len(flow_names[-1])} task runs; an empty flow run {empty_flow:.2f}s"
        )
        same_tasks = all(names == plain_names[0] for names in flow_names + plain_names)
        if not same_tasks:
            print(f"WARNING: the flow ran {flow_names[-1]}, the plain path {plain_names[-1]}")
    if spread > 1.5:
        load = f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        print(f"WARNING: noisy machine: plain runs vary {spread:.1f}x ({load}); rerun when idle")
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(
        f"ratio prefect/plain = {ratio:.3f} ({verdict} target {TARGET_RATIO}); overhead "
        f"{prefect_s - plain_s:+.2f}s per retrain, median of {args.repeats} interleaved runs each "
        f"(best-of ratio {ratio_best:.3f})"
    )
    answer = {"bench": "overhead", "ratio": round(ratio, 4), "target_ratio": TARGET_RATIO}
    answer.update(prefect_seconds=round(prefect_s, 3), plain_seconds=round(plain_s, 3))
    answer.update(rows=rows, repeats=args.repeats, ratio_best=round(ratio_best, 4))
    answer.update({f"{k}_runs_seconds": [round(w, 3) for w in walls[k]] for k in walls})
    answer.update(empty_flow_seconds=round(empty_flow, 3), plain_spread=round(spread, 3))
    answer.update(same_tasks=same_tasks, all_blessed=all(blessed), omp_threads=args.threads)
    answer.update(load_average_start=round(load_at_start, 2), server_startup_counted=False)
    answer.update(load_average_end=round(os.getloadavg()[0], 2))
    answer.update(server_startup_seconds=round(server_seconds, 3))
    return answer


if __name__ == "__main__":
    sys.exit(main())
