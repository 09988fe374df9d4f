"""Fan-out wiring: which Prefect task runner runs the parallel work, and the three fan-outs.

The parallel work of the pipeline (shares of tuning trials, per-slice evaluation, batch-scoring
partitions) is submitted as Prefect tasks to a task runner chosen from the config, so the same
code runs on both profiles:

- cluster profile: `DaskTaskRunner(address=cluster.dask_scheduler())` for all three: one
  `tune-trials` task per share of trials, one `slice-metrics` task per slice column, one
  `score-rows` task per partition;
- embedded profile: tuning shares in spawned processes inside one `tune-trials-local` task;
  `slice-metrics` and `score-rows` tasks on a `ThreadPoolTaskRunner` (at most one per core).

How the runner is entered, and why there is no subflow: each fan-out enters its runner as a
context manager *inside the calling flow run* and submits the tasks with `runner.map`. The task
runs are children of that flow run (Prefect serialises the flow-run context to threads,
and Dask workers alike), so the UI shows them in place and no extra flow run is made.
A nested subflow `.with_options(task_runner=...)` would do the same on Dask but cost a second
flow run (about 1 s of heartbeat join each in Prefect 3.9) on every retrain; the embedded
`retrain` path is held to the overhead target of `benchmarks/overhead.py`.

Small work stays out of any pool: one tuning share on the embedded profile runs in this
process (as before), one score partition is one task in this process on either profile,
and no slice column means no task. Slices are one task per column, not per value: a column's
values share one feature preparation, and values are many and small.

Tuning shares on the embedded profile are plain spawned processes inside one task, not
`ProcessPoolTaskRunner` tasks. Measured (`benchmarks/hpo.py --prefect`, 2 workers, 40 s budget):
with the embedded profile's ephemeral API, every pool process starts its own temporary Prefect
server to report its task run (about 30 s on a loaded 2-core machine, so no trial finished in
the budget), and those runs land in another database. A trial is CPU-bound Python (the GIL), so
threads are no substitute. The task is a share of trials, never one trial: a task run per trial
would cost about as much as the trial, and Optuna's storage already coordinates the shares.
Slices and partitions spend their time in scikit-learn's predict, which releases the GIL, so
threads serve and nothing is pickled.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import unmapped
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from ctloop.config.settings import Config, Profile
from ctloop.model import analyse as analysis
from ctloop.model import tune as tuning
from ctloop.registry.store import ModelRef
from ctloop.serving import batch
from tasks.analyse import slice_metrics
from tasks.score import score_rows
from tasks.tune import prepare_study, read_study, tune_trials, tune_trials_local


def fanout_runner(config: Config, workers: int) -> TaskRunner:
    """A fresh (not started) task runner for `workers` parallel tasks.

    Args:
        config: the cluster profile sends every fan-out to its Dask scheduler.
        workers: how many tasks may run at once on the embedded profile (threads).
    """
    if config.profile == Profile.CLUSTER:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=config.cluster.dask_scheduler())
    return ThreadPoolTaskRunner(max_workers=workers)


def map_on(runner: TaskRunner, task, parameters: dict[str, Any]) -> list[Any]:
    """`task` mapped over the iterable `parameters` on `runner`; results in the input order.

    Raises the first failed task's exception (after all of them have finished).
    """
    with runner:
        futures = runner.map(task, parameters)
        futures.wait()
        return [future.result() for future in futures]


def _workers(n: int) -> int:
    import os

    return max(1, min(n, os.cpu_count() or 1))


# -- tuning ------------------------------------------------------------------------------------


def tune_study(
    train: pd.DataFrame, config: Config, champion: ModelRef | None, run_label: str
) -> tuning.TuningResult:
    """Prepare the study, run its shares of trials (Dask tasks, or local processes), read it."""
    plan = prepare_study(train, config, champion, run_label)
    if config.profile == Profile.CLUSTER:
        map_on(
            fanout_runner(config, plan.workers),
            tune_trials,
            {
                "train": unmapped(train),
                "config": unmapped(config),
                "plan": unmapped(plan),
                "worker": list(range(plan.workers)),
            },
        )
    else:
        tune_trials_local(train, config, plan)
    return read_study(plan, config)


# -- per-slice evaluation ----------------------------------------------------------------------


def evaluate_slices(
    model,
    numeric: list[str],
    categorical: list[str],
    holdout: pd.DataFrame,
    columns: list[str],
    config: Config,
) -> dict[str, dict[str, dict[str, float]]]:
    """`analysis.slice_metrics` with one `slice-metrics` task per column on the fan-out runner."""
    if not columns:
        return {}
    parts = map_on(
        fanout_runner(config, _workers(len(columns))),
        slice_metrics,
        {
            "model": unmapped(model),
            "numeric": unmapped(numeric),
            "categorical": unmapped(categorical),
            "holdout": unmapped(holdout),
            "column": list(columns),
            "config": unmapped(config),
        },
    )
    return analysis.merge_slices(parts)


# -- batch scoring -----------------------------------------------------------------------------


def score_partitions(
    pipeline, ref: ModelRef, frame: pd.DataFrame, config: Config
) -> batch.BatchScores:
    """`score-rows` per partition of `serving.score_partition_rows` rows, in the input's order.

    One partition is one task in this process; more are mapped on the fan-out runner.
    """
    parts = batch.split_partitions(frame, config.serving.score_partition_rows)
    if len(parts) == 1:
        return score_rows(pipeline, ref, frame, config)
    scored = map_on(
        fanout_runner(config, _workers(len(parts))),
        score_rows,
        {
            "pipeline": unmapped(pipeline),
            "ref": unmapped(ref),
            "frame": parts,
            "config": unmapped(config),
        },
    )
    return batch.concat_scores(scored)
