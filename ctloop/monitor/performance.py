"""Online performance: served predictions joined to their true labels (the measurement; the
performance-decay rule that judges it is `ctloop.loop.decay`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ctloop.config.settings import Config
from ctloop.stores.home import home_of

ONLINE_METRICS = ("roc_auc", "accuracy", "rmse", "mae")


def _log_url(config: Config) -> str:
    from ctloop.stores.predlog import default_log_url

    return config.serving.prediction_log_url or default_log_url(home_of(config).root)


def served_feedback(config: Config) -> pd.DataFrame:
    """Served predictions (not shadow) joined to their true labels; empty before any log."""
    from ctloop.stores.predlog import SERVED, PredictionLog

    url = _log_url(config)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return pd.DataFrame()
    log = PredictionLog(url)
    try:
        joined = log.joined()
    finally:
        log.close()
    return joined if joined.empty else joined[joined["role"] == SERVED]
