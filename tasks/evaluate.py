"""Analyse stage: metrics of the challenger and the champion on the same recent holdout."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from ctloop.config.settings import Config
from ctloop.model.evaluate import evaluate_predictions
from ctloop.model.train import prepare_features


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(
    model, numeric: list[str], categorical: list[str], holdout: pd.DataFrame, config: Config
) -> dict[str, float]:
    X = prepare_features(holdout, numeric, categorical)
    return evaluate_predictions(model, X, holdout[config.require_target()], config)
