"""Analyse stage: slices and fairness gaps, importance, what-if, plots and the model card."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ctloop.config.settings import Config
from ctloop.model import analyse as analysis


@task(name="analyse-challenger", cache_policy=NO_CACHE)
def analyse_challenger(
    model,
    numeric: list[str],
    categorical: list[str],
    holdout: pd.DataFrame,
    config: Config,
    slices: dict | None = None,
    train: pd.DataFrame | None = None,
) -> analysis.Analysis:
    """Everything but the slices, which come in fanned out (`slice-metrics`) when given; the
    leakage check when the training rows are given."""
    return analysis.analyse_model(model, holdout, numeric, categorical, config, slices, train)


@task(name="slice-metrics", cache_policy=NO_CACHE)
def slice_metrics(
    model,
    numeric: list[str],
    categorical: list[str],
    holdout: pd.DataFrame,
    column: str,
    config: Config,
) -> dict:
    """The metrics per value of one slice column (one mapped task per column)."""
    return analysis.slice_column_metrics(model, holdout, numeric, categorical, column, config)


@task(name="publish-model-card", cache_policy=NO_CACHE)
def publish_model_card(markdown: str) -> None:
    create_markdown_artifact(markdown=markdown, key="model-card", description="Model card")
