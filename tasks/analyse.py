"""Analyse stage: slices and fairness gaps, importance, what-if, plots and the model card."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ctloop import analysis
from ctloop.config import Config


@task(name="analyse-challenger", cache_policy=NO_CACHE)
def analyse_challenger(
    model, numeric: list[str], categorical: list[str], holdout: pd.DataFrame, config: Config
) -> analysis.Analysis:
    return analysis.analyse_model(model, holdout, numeric, categorical, config)


@task(name="champion-slices", cache_policy=NO_CACHE)
def champion_slices(
    model,
    numeric: list[str],
    categorical: list[str],
    holdout: pd.DataFrame,
    columns: list[str],
    config: Config,
) -> dict:
    """The champion's metrics on the same slices of the same holdout (for the per-slice gate)."""
    return analysis.slice_metrics(model, holdout, numeric, categorical, columns, config)


@task(name="publish-model-card", cache_policy=NO_CACHE)
def publish_model_card(markdown: str) -> None:
    create_markdown_artifact(markdown=markdown, key="model-card", description="Model card")
