"""Train stage: pick the data window, split it, fit a candidate pipeline."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from ctloop import lake, training
from ctloop.config import Config
from ctloop.errors import NotEnoughData
from ctloop.home import home_of


@task(name="select-window", cache_policy=NO_CACHE)
def select_window(config: Config, since: str | None = None) -> list[str]:
    """Snapshot ids of the training window (newest `window_days`, from `since` when given)."""
    manifests = lake.list_snapshots(home_of(config))
    ids = lake.select_window(
        manifests, config.training.window_days, since, config.training.max_rows
    )
    if not ids:
        raise NotEnoughData("the lake has no accepted snapshots in the training window")
    return ids


@task(name="load-window", cache_policy=NO_CACHE)
def load_window(ids: list[str], config: Config) -> pd.DataFrame:
    return lake.load_snapshots(home_of(config), ids)


@task(name="split-holdout", cache_policy=NO_CACHE)
def split_holdout(frame: pd.DataFrame, config: Config) -> training.Split:
    return training.split_holdout(frame, config)


@task(name="train-candidate", cache_policy=NO_CACHE)
def train_candidate(train: pd.DataFrame, config: Config) -> training.Candidate:
    return training.train_candidate(train, config)
