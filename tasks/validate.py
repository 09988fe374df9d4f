"""Validate stage: the reference comparison (drift, Evidently report) and the gate."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ctloop.config.settings import Config
from ctloop.errors import BatchRejected
from ctloop.gates.verdict import Verdict
from ctloop.ingest.stage import StagedBatch
from ctloop.stores.home import home_of
from ctloop.validate import checks, quality
from ctloop.validate.checks import ValidationReport


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
def gate_batch(report: ValidationReport) -> Verdict:
    """The validation gate as a `Verdict`: it fails when any finding blocks.

    A rejected batch is an expected outcome, not a failed task: the run completes, the verdict
    says why (the first blocking check and how many more, logged as one warning line), and the
    flow quarantines the file.
    """
    verdict = report.verdict()
    if not verdict.passed:
        rejected = BatchRejected(report.source, [v.details for v in verdict.parts if v.blocks])
        get_run_logger().warning("rejected: %s", rejected)
    return verdict


@task(name="check-split-parity", cache_policy=NO_CACHE)
def check_split_parity(train: pd.DataFrame, holdout: pd.DataFrame, config: Config) -> Verdict:
    """Label-distribution parity between the train and validation split, as a `Verdict`."""
    verdict = checks.split_parity(train, holdout, config)
    if not verdict.passed:
        issue = verdict.details
        get_run_logger().warning("%s [%s] %s", issue["check"], issue["severity"], issue["message"])
    return verdict
