"""Tune stage: an Optuna study on the training part (never the holdout), shares of trials as tasks.

`prepare-study` creates the study and shares the budget out; each `tune-trials` run adds its
share of trials to that one study (on Dask, fanned out by `flows/fanout.py`), or
`tune-trials-local` runs every share in local processes (embedded); `read-study` reads it back.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from ctloop.config.settings import Config
from ctloop.model import tune as tuning
from ctloop.registry.store import ModelRef
from ctloop.stores.home import home_of


@task(name="prepare-study", cache_policy=NO_CACHE)
def prepare_study(
    train: pd.DataFrame, config: Config, champion: ModelRef | None, run_label: str
) -> tuning.StudyPlan:
    """A new study in the configured storage, warm-started from the champion's parameters."""
    home = home_of(config).ensure()
    warm = None
    if champion is not None and config.tuning.warm_start:
        params: dict[str, Any] = json.loads(champion.tags.get("ctloop.params", "{}"))
        warm = tuning.warm_start_trial(
            params.get("family"), params, tuning.families_of(config), config.dataset.task
        )
    study_name = f"{config.registry_name}-{run_label}-{uuid.uuid4().hex[:8]}"
    return tuning.prepare_study(
        train, config, tuning.storage_url(config, home.root), study_name, warm_start=warm
    )


@task(name="tune-trials", cache_policy=NO_CACHE)
def tune_trials(train: pd.DataFrame, config: Config, plan: tuning.StudyPlan, worker: int) -> int:
    """One share of the study's trials, run where the task runs; returns the trials run.

    Never cached or retried: trials already in the study stay there, a rerun would add more.
    """
    return tuning.run_share(train, config, plan, worker)


@task(name="tune-trials-local", cache_policy=NO_CACHE)
def tune_trials_local(train: pd.DataFrame, config: Config, plan: tuning.StudyPlan) -> None:
    """Embedded profile: every share in its own spawned process (one share: in this one).

    Never cached or retried, as `tune-trials`.
    """
    tuning.run_shares_in_processes(train, config, plan)


@task(name="read-study", cache_policy=NO_CACHE)
def read_study(plan: tuning.StudyPlan, config: Config) -> tuning.TuningResult:
    """The study's trials and best parameters, also as a table artifact."""
    result = tuning.read_result(plan, config)
    create_table_artifact(
        key="tuning-trials",
        table=[
            {
                "trial": t.number,
                "state": t.state,
                "family": t.family,
                "value": None if t.value is None else round(t.value, 4),
                "params": json.dumps(t.params, default=str),
            }
            for t in result.trials
        ],
        description=f"Optuna study {plan.study_name}: best {result.metric} "
        f"{result.best_value:.4f} ({result.best_family}); {result.completed} complete, "
        f"{result.pruned} pruned, {result.workers} worker(s)",
    )
    return result
