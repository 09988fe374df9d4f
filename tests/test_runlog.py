"""A run page holds ctloop's lines, not one `Finished in state Completed()` per task run."""

from __future__ import annotations

import logging

import pytest

from ctloop.runlog import TASK_RUNS_LOGGER, QuietCompletedTasks, quiet_completed_tasks


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(TASK_RUNS_LOGGER, level, __file__, 1, message, None, None)


def test_the_filter_drops_only_a_completed_tasks_line():
    quiet = QuietCompletedTasks()
    assert not quiet.filter(_record("Finished in state Completed()"))
    assert not quiet.filter(_record("Finished in state Completed('done')"))
    assert quiet.filter(_record("Finished in state Failed('Task run encountered an exception')"))
    assert quiet.filter(_record("Finished in state Completed()", logging.ERROR))
    assert quiet.filter(_record("gate passed: 1200 rows, 0 errors"))


def test_every_ctloop_flow_installs_the_filter_when_it_runs():
    from flows.ingest import ingest, ingest_landing
    from flows.monitor import monitor
    from flows.retrain import retrain
    from flows.score_batch import score_batch

    for flow in (ingest, ingest_landing, monitor, retrain, score_batch):
        assert quiet_completed_tasks in flow.on_running_hooks, flow.name


@pytest.mark.slow
def test_a_flow_run_keeps_its_task_lines_but_not_the_completed_ones(prefect_harness):
    from prefect import flow, get_run_logger, task

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    @task
    def step(n: int) -> int:
        get_run_logger().info("step %d checked", n)
        return n

    @flow(on_running=[quiet_completed_tasks])
    def two_steps() -> int:
        return step(1) + step(2)

    logger = logging.getLogger(TASK_RUNS_LOGGER)
    handler = Keep()
    logger.addHandler(handler)
    try:
        assert two_steps() == 3
    finally:
        logger.removeHandler(handler)
        logger.filters = [f for f in logger.filters if not isinstance(f, QuietCompletedTasks)]
    assert "step 1 checked" in seen and "step 2 checked" in seen
    assert not [m for m in seen if m.startswith("Finished in state Completed")], seen
