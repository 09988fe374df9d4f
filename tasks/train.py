"""Train stage: pick the data window, split it, fit a candidate pipeline."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from ctloop.config.settings import Config
from ctloop.data import privacy
from ctloop.errors import NotEnoughData
from ctloop.lake import snapshots as lake
from ctloop.loop.policy import window_ids
from ctloop.loop.window import RULE, WindowChoice
from ctloop.loop.window import choose_window as pick_window
from ctloop.model import train as training
from ctloop.stores.home import home_of


@task(name="select-window", cache_policy=NO_CACHE)
def select_window(config: Config, since: str | None = None) -> list[str]:
    """Snapshot ids of the training window (newest `window_days`, reaching back to
    `training.min_rows` rows, from `since` when given)."""
    manifests = lake.list_snapshots(home_of(config))
    ids = window_ids(manifests, config, since)
    if not ids:
        raise NotEnoughData("the lake has no accepted snapshots in the training window")
    return ids


@task(name="choose-window", cache_policy=NO_CACHE)
def choose_window(ids: list[str], config: Config, since: str | None = None) -> WindowChoice:
    """The window to train on: the rule's (`ids`), or all the data or the recent span when a
    model on it scores better on the newest rows (`training.choose_window`; see
    `ctloop.loop.window`)."""
    if not config.training.choose_window:
        return WindowChoice(tuple(ids), RULE, {}, "the rule's window (training.choose_window off)")
    home = home_of(config)

    def frame_of(window: list[str]) -> pd.DataFrame:
        return _window_rows(home, window)

    margin = config.gates.min_improvement
    return pick_window(lake.list_snapshots(home), config, frame_of, since, margin)


@task(name="load-window", cache_policy=NO_CACHE)
def load_window(ids: list[str], config: Config) -> pd.DataFrame:
    """The window's rows, without hashed identifying columns (names, emails: never features)."""
    return _window_rows(home_of(config), ids)


def _window_rows(home, ids: list[str]) -> pd.DataFrame:
    """The rows of snapshots `ids`, without hashed identifying columns (never features)."""
    return privacy.without_identifying(lake.load_snapshots(home, ids), lake.current_schema(home))


@task(name="snapshot-digests", cache_policy=NO_CACHE)
def snapshot_digests(ids: list[str], config: Config) -> dict[str, str]:
    """The sha256 of each snapshot of the window, from the lake's manifests."""
    by_id = {m.snapshot: m.sha256 for m in lake.list_snapshots(home_of(config))}
    return {i: by_id[i] for i in ids if i in by_id}


@task(name="split-holdout", cache_policy=NO_CACHE)
def split_holdout(frame: pd.DataFrame, config: Config) -> training.Split:
    return training.split_holdout(frame, config)


@task(name="train-candidate", cache_policy=NO_CACHE)
def train_candidate(
    train: pd.DataFrame,
    config: Config,
    family: str | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[training.Candidate, list[tuple[str, float, int, int]]]:
    """Fit the candidate; returns it with the CPU and memory samples taken while fitting."""
    if not config.training.system_metrics:
        return training.train_candidate(train, config, family, params), []
    with training.ResourceSampler() as sampler:
        candidate = training.train_candidate(train, config, family, params)
    return candidate, sampler.samples
