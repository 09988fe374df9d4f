"""Validate stage: the reference comparison (drift, Evidently report) and the gate."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ctloop import quality
from ctloop.config import Config
from ctloop.errors import BatchRejected
from ctloop.home import home_of
from ctloop.ingestion import StagedBatch
from ctloop.validation import ValidationReport


@task(name="compare-to-reference", cache_policy=NO_CACHE)
def compare_to_reference(staged: StagedBatch, config: Config) -> quality.ReferenceCheck:
    """Drift of the batch against the newest accepted data, and Evidently's HTML when asked."""
    return quality.compare_to_reference(staged, config, home_of(config))


@task(name="validate-batch", cache_policy=NO_CACHE)
def log_findings(report: ValidationReport) -> ValidationReport:
    """Warnings are logged (and shown in the ingest answer), never silent."""
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
