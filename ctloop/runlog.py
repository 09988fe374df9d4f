"""What a Prefect run page shows of ctloop's runs: its own lines, not one per finished task.

Prefect logs `Finished in state Completed()` for every task run, at INFO, on the
`prefect.task_runs` logger, the one ctloop's task logs use too; so a retrain's page held some 20
of them among ctloop's own lines. The flows install `quiet_completed_tasks` as an `on_running`
hook: in the flow run's process, that one line is dropped, and every other task-run line stays
(a failed or crashed task's `Finished in state Failed(...)`, ctloop's own messages, warnings).
"""

from __future__ import annotations

import logging

TASK_RUNS_LOGGER = "prefect.task_runs"
_COMPLETED = "Finished in state Completed("


class QuietCompletedTasks(logging.Filter):
    """Drops the INFO `Finished in state Completed(...)` line of a task run."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        return not str(record.getMessage()).startswith(_COMPLETED)


def quiet_completed_tasks(*_hook_args) -> None:
    """Install the filter on the task-run logger once per process (a flow's `on_running`
    hook: Prefect passes the flow, the flow run and its state, which are not needed)."""
    logger = logging.getLogger(TASK_RUNS_LOGGER)
    if not any(isinstance(f, QuietCompletedTasks) for f in logger.filters):
        logger.addFilter(QuietCompletedTasks())
