"""Validate stage: schema, checks, and the gate that stops a bad batch."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ctloop import schema as schema_mod
from ctloop.config import Config
from ctloop.errors import BatchRejected
from ctloop.home import home_of
from ctloop.validation import ValidationReport
from ctloop.validation import validate_batch as _validate


@task(name="current-schema", cache_policy=NO_CACHE)
def current_schema(config: Config) -> schema_mod.Schema | None:
    return schema_mod.load_latest_schema(home_of(config).schema_dir)


@task(name="validate-batch", cache_policy=NO_CACHE)
def validate_batch(
    frame: pd.DataFrame, schema: schema_mod.Schema | None, config: Config, source: str
) -> ValidationReport:
    """Run every configured check; warnings are logged, never silent."""
    report = _validate(frame, schema, config, source)
    logger = get_run_logger()
    for issue in report.issues:
        logger.warning("%s [%s] %s", issue.check, issue.severity, issue.message)
    return report


@task(name="gate-batch", cache_policy=NO_CACHE)
def gate_batch(report: ValidationReport) -> ValidationReport:
    """The validation gate: raises BatchRejected naming every blocking check."""
    if report.blocking:
        raise BatchRejected(report.source, [i.as_dict() for i in report.blocking])
    return report


@task(name="ensure-schema", cache_policy=NO_CACHE)
def ensure_schema(
    frame: pd.DataFrame, schema: schema_mod.Schema | None, config: Config
) -> schema_mod.Schema:
    """The current schema, inferred from this batch when it is the first accepted one."""
    if schema is not None:
        return schema
    inferred = schema_mod.infer_schema(frame, config.dataset)
    schema_mod.save_schema(inferred, home_of(config).schema_dir)
    return inferred
