"""Replay a labelled history as a stream of batches and compare retraining policies.

The policies, the oracle, the label delay and the clock are documented in
`ctloop.loop.replay.replayer` (its module docstring). The package's modules: `replayer` (the
`Replayer`, its helpers and `replay()`), `results` (`BatchPoint`, `PolicyResult`, `OracleResult`,
`ReplayResult`) and `report` (`plot_replay`, `report_html`; matplotlib only when a plot is drawn).
Import from the module itself (a package `__init__` is a room, not a re-export layer).
"""
