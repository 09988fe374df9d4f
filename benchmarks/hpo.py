"""HPO benchmark: parallel trial throughput, and time to a target score with and without pruning.

Both measurements run ctloop's own `ctloop.model.tune.tune` on the demo loan stream (the
training part of the window only), with trials in processes sharing one Optuna journal file:

- parallel: the same study settings run for a fixed wall-clock budget with 1 worker, then with
  2 worker processes; trials per minute of each (worker start-up included). Target >= 1.7x.
- parallel through Prefect (`--prefect`): the same, but as the `retrain` flow runs it
  (`flows.fanout.tune_study` inside a flow: prepare-study, tune-trials-local, read-study); the
  ephemeral Prefect API is started before timing. Also target >= 1.7x.
- pruning: the same study, one worker, with the median pruner (folds as steps) and without;
  seconds until the first completed trial reaches the target score (the 90th percentile of all
  completed trial scores of both runs, the same number for both). Median over seeds. Target 2x.

Usage: python benchmarks/hpo.py [--seconds 40] [--seeds 2] [--rows-per-day 400] [--prefect]
The last line printed is one JSON object with the measured values, the ratios and the targets.
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

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _data(rows_per_day: int, days: int):
    import numpy as np
    import pandas as pd

    from ctloop.data.demo import DemoScript, demo_config, generate_day
    from ctloop.model.train import split_holdout

    rng = np.random.default_rng(0)
    script = DemoScript(rows_per_day=rows_per_day)
    frame = pd.concat([generate_day(script, d, rng) for d in range(days)], ignore_index=True)
    base = demo_config(str(Path(tempfile.gettempdir()) / "ctloop-hpo-unused"), rows_per_day)
    return split_holdout(frame, base).train, base


def _config(base, **tuning):
    config = base.model_copy(deep=True)
    data = config.model_dump(mode="json")
    data["tuning"].update({"enabled": True, "families": ["hist_gradient_boosting"], **tuning})
    return type(base).model_validate(data)


def measure_parallel(train, base, root: Path, seconds: float, workers: int) -> dict:
    from ctloop.model.tune import tune

    config = _config(base, trials=100_000, timeout_seconds=seconds, workers=workers, folds=3)
    config.tuning.pruning = False  # throughput of whole trials
    url = f"journal://{root / f'parallel-{workers}.log'}"
    started = time.perf_counter()
    result = tune(train, config, url, f"parallel-{workers}")
    elapsed = time.perf_counter() - started
    finished = result.completed + result.pruned
    return {"trials": finished, "seconds": elapsed, "trials_per_minute": 60 * finished / elapsed}


def measure_parallel_prefect(train, base, root: Path, seconds: float, workers: int) -> dict:
    from prefect import flow

    from flows.fanout import tune_study

    config = _config(base, trials=100_000, timeout_seconds=seconds, workers=workers, folds=3)
    config.tuning.pruning = False
    config.tuning.storage = f"journal://{root / f'prefect-{workers}.log'}"

    @flow(name="hpo-benchmark")
    def study():
        return tune_study(train, config, None, f"bench{workers}")

    started = time.perf_counter()
    result = study()
    elapsed = time.perf_counter() - started
    finished = result.completed + result.pruned
    return {"trials": finished, "seconds": elapsed, "trials_per_minute": 60 * finished / elapsed}


def measure_pruning(train, base, root: Path, pruning: bool, seed: int, trials: int) -> dict:
    from ctloop.model.tune import tune

    config = _config(
        base, trials=trials, timeout_seconds=600, workers=1, folds=5, pruning=pruning, seed=seed
    )
    url = f"journal://{root / f'pruning-{pruning}-{seed}.log'}"
    started = time.time()
    result = tune(train, config, url, f"pruning-{pruning}-{seed}")
    done = sorted(
        (t.finished - started, t.value)
        for t in result.trials
        if t.state == "COMPLETE" and t.finished is not None
    )
    return {"done": done, "seconds": time.time() - started, "pruned": result.pruned}


def time_to(done: list[tuple[float, float]], target: float) -> float | None:
    for at, value in done:
        if value >= target - 1e-12:
            return at
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40, help="budget of each parallel run")
    parser.add_argument("--seeds", type=int, default=2, help="pruning runs per mode")
    parser.add_argument("--trials", type=int, default=30, help="trials of each pruning run")
    parser.add_argument("--rows-per-day", type=int, default=400)
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument(
        "--prefect", action="store_true", help="also measure the Prefect fan-out (tune-trials)"
    )
    parser.add_argument("--skip-pruning", action="store_true", help="parallel measurements only")
    args = parser.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore")
    train, base = _data(args.rows_per_day, args.days)
    root = Path(tempfile.mkdtemp(prefix="ctloop-hpo-"))
    if args.prefect:
        from ctloop.stores.home import Home, activate

        activate(Home(root / "home").ensure())  # a private Prefect API; before Prefect is imported
    try:
        one = measure_parallel(train, base, root, args.seconds, 1)
        print(f"1 worker : {one['trials']} trials in {one['seconds']:.1f}s", file=sys.stderr)
        two = measure_parallel(train, base, root, args.seconds, 2)
        print(f"2 workers: {two['trials']} trials in {two['seconds']:.1f}s", file=sys.stderr)

        via_prefect = None
        if args.prefect:
            from prefect import flow

            @flow(name="hpo-ping")
            def ping() -> None:
                pass

            ping()  # the ephemeral API starts here, not timed
            p1 = measure_parallel_prefect(train, base, root, args.seconds, 1)
            print(
                f"prefect, 1 worker : {p1['trials']} trials in {p1['seconds']:.1f}s",
                file=sys.stderr,
            )
            p2 = measure_parallel_prefect(train, base, root, args.seconds, 2)
            print(
                f"prefect, 2 workers: {p2['trials']} trials in {p2['seconds']:.1f}s",
                file=sys.stderr,
            )
            via_prefect = {
                "trials_per_minute_1_worker": round(p1["trials_per_minute"], 2),
                "trials_per_minute_2_workers": round(p2["trials_per_minute"], 2),
                "parallel_ratio": round(p2["trials_per_minute"] / p1["trials_per_minute"], 3),
            }
        runs = {True: [], False: []}
        for seed in range(0 if args.skip_pruning else args.seeds):
            for pruning in (False, True):
                run = measure_pruning(train, base, root, pruning, seed, args.trials)
                runs[pruning].append(run)
                print(
                    f"seed {seed} pruning={pruning}: {len(run['done'])} complete, "
                    f"{run['pruned']} pruned, {run['seconds']:.1f}s",
                    file=sys.stderr,
                )
        target = with_pruning = without = None
        times: dict = {}
        if runs[True]:
            scores = [v for mode in runs.values() for run in mode for _, v in run["done"]]
            target = statistics.quantiles(scores, n=10)[-1]
            times = {
                p: [time_to(run["done"], target) or run["seconds"] for run in runs[p]] for p in runs
            }
            with_pruning = statistics.median(times[True])
            without = statistics.median(times[False])
    finally:
        shutil.rmtree(root, ignore_errors=True)

    result = {
        "bench": "hpo",
        "cores": os.cpu_count(),
        "rows": len(train),
        "trials_per_minute_1_worker": round(one["trials_per_minute"], 2),
        "trials_per_minute_2_workers": round(two["trials_per_minute"], 2),
        "parallel_ratio": round(two["trials_per_minute"] / one["trials_per_minute"], 3),
        "target_parallel_ratio": 1.7,
        "via_prefect": via_prefect,
        "target_score": None if target is None else round(target, 5),
        "seconds_to_target_with_pruning": None if target is None else round(with_pruning, 2),
        "seconds_to_target_without_pruning": None if target is None else round(without, 2),
        "seconds_to_target_runs": {str(k): [round(t, 2) for t in v] for k, v in times.items()},
        "pruning_ratio": None if target is None else round(without / with_pruning, 3),
        "target_pruning_ratio": 2.0,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
