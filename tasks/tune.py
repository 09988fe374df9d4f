"""Tune stage: an Optuna study on the training part (never the holdout), trials in processes."""

from __future__ import annotations

import uuid
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from ctloop import tuning
from ctloop.config import Config
from ctloop.home import home_of
from ctloop.registry import ModelRef


@task(name="tune-hyperparameters", cache_policy=NO_CACHE)
def tune_hyperparameters(
    train: pd.DataFrame, config: Config, champion: ModelRef | None, run_label: str
) -> tuning.TuningResult:
    """Run the study (see `ctloop.tuning` for why trials are processes inside this one task)."""
    import json

    home = home_of(config).ensure()
    warm = None
    if champion is not None and config.tuning.warm_start:
        params: dict[str, Any] = json.loads(champion.tags.get("ctloop.params", "{}"))
        warm = tuning.warm_start_trial(
            params.get("family"), params, tuning.families_of(config), config.dataset.task
        )
    study_name = f"{config.registry_name}-{run_label}-{uuid.uuid4().hex[:8]}"
    result = tuning.tune(
        train, config, tuning.storage_url(config, home.root), study_name, warm_start=warm
    )
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
        description=f"Optuna study {study_name}: best {result.metric} "
        f"{result.best_value:.4f} ({result.best_family}); {result.completed} complete, "
        f"{result.pruned} pruned, {result.workers} worker(s)",
    )
    return result
