"""Score stage: load the champion, read a batch, score it, write the predictions."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from ctloop.config.settings import Config
from ctloop.errors import NoChampion
from ctloop.registry.store import CHAMPION, ModelRef, open_registry
from ctloop.serving import batch


@task(name="load-scoring-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def load_scoring_model(config: Config, alias: str = CHAMPION) -> tuple[ModelRef, object]:
    """The version behind an alias and its fitted pipeline."""
    registry = open_registry(config)
    ref = registry.by_alias(alias)
    if ref is None:
        raise NoChampion(f"no version has the alias '{alias}' in '{registry.name}'")
    return ref, registry.load(ref)


@task(name="read-scoring-input", cache_policy=NO_CACHE)
def read_scoring_input(source: str, config: Config) -> pd.DataFrame:
    return batch.read_scoring_input(source, config)


@task(name="score-rows", cache_policy=NO_CACHE)
def score_rows(pipeline, ref: ModelRef, frame: pd.DataFrame, config: Config) -> batch.BatchScores:
    return batch.score_batch_frame(pipeline, ref, frame, config)


@task(name="write-predictions", cache_policy=NO_CACHE)
def write_predictions(frame: pd.DataFrame, path: str) -> str:
    """Write the predictions file (a side effect: never cached)."""
    return str(batch.write_predictions(frame, path))
