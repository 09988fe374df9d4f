"""Replay a labelled history as a stream of batches and compare retraining policies.

The policies, the oracle, the label delay and the clock are documented in
`ctloop.loop.replay.replayer` (its module docstring). The package's modules: `replayer` (the
`Replayer`, its helpers and `replay()`), `results` (`BatchPoint`, `PolicyResult`, `OracleResult`,
`ReplayResult`) and `report` (`plot_replay`, `report_html`; matplotlib only when a plot is drawn).
The names below are re-exported so that `from ctloop.loop.replay import X` keeps working.
"""

from ctloop.loop.replay.replayer import (
    CTLOOP_POLICIES,
    KNOWN_POLICIES,
    POLICIES,
    SCORE_MIN_ROWS,
    Replayer,
    label_arrivals,
    parse_label_delay,
    replay,
    split_batches,
)
from ctloop.loop.replay.replayer import _manifest as _manifest  # tests/unit/test_replay_window.py
from ctloop.loop.replay.report import plot_replay, report_html
from ctloop.loop.replay.results import BatchPoint, OracleResult, PolicyResult, ReplayResult

__all__ = [
    "CTLOOP_POLICIES",
    "KNOWN_POLICIES",
    "POLICIES",
    "SCORE_MIN_ROWS",
    "BatchPoint",
    "OracleResult",
    "PolicyResult",
    "ReplayResult",
    "Replayer",
    "label_arrivals",
    "parse_label_delay",
    "plot_replay",
    "replay",
    "report_html",
    "split_batches",
]
