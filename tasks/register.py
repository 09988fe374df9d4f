"""Register stage: log the run to MLflow, register the version, move the alias, atomically."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import get_transaction

from ctloop.config.settings import Config
from ctloop.loop.record import RunRecord
from ctloop.registry.store import CHALLENGER, CHAMPION, ModelRef, open_registry


@task(name="load-champion", cache_policy=NO_CACHE)
def load_champion(config: Config) -> tuple[ModelRef, object] | None:
    """The serving model and its fitted pipeline, or None before the first blessing.

    A registry that cannot be read fails the run (`StoreUnavailable`, after the registry's own
    bounded retries): without the champion there is nothing to bless against."""
    registry = open_registry(config)
    ref = registry.by_alias(CHAMPION)
    if ref is None:
        return None
    return ref, registry.load(ref)


@task(name="log-candidate", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def log_candidate(
    record: RunRecord, pipeline, input_example: pd.DataFrame, config: Config
) -> tuple[str, str]:
    """Log the training run from its record (params, metrics, tags, model, reports, plots, system
    metrics, tuning trials as nested runs, the window as dataset); returns (run id, model uri)."""
    inputs = []
    if record.window:
        from ctloop.lake import snapshots as lake
        from ctloop.stores.home import home_of

        dataset, _profile = lake.mlflow_dataset(home_of(config), list(record.window))
        inputs.append((dataset, "training"))
    return open_registry(config).log_candidate(
        pipeline=pipeline,
        input_example=input_example,
        params=record.params,
        metrics=record.metrics,
        tags=record.tags,
        artifacts=record.artifacts,
        run_name=record.run_name,
        images=record.images,
        histories=record.histories,
        trials=record.trials,
        inputs=inputs,
    )


@task(name="register-version", cache_policy=NO_CACHE)
def register_version(model_uri: str, run_id: str, tags: dict[str, str], config: Config) -> ModelRef:
    """Register a new model version; the surrounding transaction deletes it on rollback."""
    ref = open_registry(config).register(model_uri, run_id, tags)
    txn = get_transaction()
    if txn is not None:
        txn.set("version", ref.version)
        txn.set("config", config.model_dump(mode="json"))
    return ref


@register_version.on_rollback
def _delete_registered_version(txn) -> None:
    version = txn.get("version", None)
    if version is not None:
        open_registry(Config.model_validate(txn.get("config"))).delete_version(version)


@task(name="promote", cache_policy=NO_CACHE)
def promote(ref: ModelRef, config: Config) -> ModelRef:
    """Point the `champion` alias at this version (the serving model)."""
    registry = open_registry(config)
    registry.set_alias(CHAMPION, ref.version)
    challenger = registry.by_alias(CHALLENGER)
    if challenger is not None and challenger.version <= ref.version:
        registry.delete_alias(CHALLENGER)  # superseded by the new champion
    get_run_logger().info("champion is now version %s (%s)", ref.version, ref.semver)
    return ref


@task(name="mark-challenger", cache_policy=NO_CACHE)
def mark_challenger(ref: ModelRef, config: Config) -> ModelRef:
    """Point the `challenger` alias at this version (blessed, awaiting `ctloop promote`)."""
    open_registry(config).set_alias(CHALLENGER, ref.version)
    get_run_logger().info("challenger is now version %s (%s)", ref.version, ref.semver)
    return ref
