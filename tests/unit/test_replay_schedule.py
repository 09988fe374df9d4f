"""Replay fires the retrain deployment's schedule on the data's clock, as the live scheduled
run does: on river's S&P 500 stream (real trading days, read from the installed wheel)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ctloop.config.settings import Config
from ctloop.loop.replay.replayer import replay
from ctloop.loop.replay.stream import cron_fires

MONTHLY = "0 3 1 * *"


@pytest.fixture(scope="module")
def sp500() -> pd.DataFrame:
    """Daily returns of ten stocks and the next day's index return, Feb 2013 to Jan 2014."""
    import river

    path = Path(river.__file__).parent / "datasets" / "sp500.csv.gz"
    return pd.read_csv(path).head(250)


def config_for(tmp_path, cron: str | None) -> Config:
    """Only the schedule can retrain: the new-data rule is off, a drift retrain waits for more
    rows than the stream has, a decay must be 1000% worse and the summed-loss rule is off."""
    return Config.model_validate(
        {
            "dataset": {"target": "next_day_return", "task": "regression", "timestamp": "date"},
            "training": {"family": "logistic_regression", "choose_window": False},
            "triggers": {
                "schedule_cron": cron,
                "bootstrap_rows": 60,
                "min_new_rows": None,
                "drift_min_rows": 10**6,
                "performance_drop": 10.0,
                "retrain_cost": 0.0,
            },
            "paths": {"home": str(tmp_path)},
        }
    )


def test_cron_fires_are_prefects_dates():
    assert cron_fires(MONTHLY, "2024-01-15T00:00:00", "2024-04-01T02:59:59") == [
        "2024-02-01T03:00:00",
        "2024-03-01T03:00:00",
    ]
    assert len(cron_fires("0 * * * *", "2024-01-01T00:00:00", "2024-03-01T00:00:00")) == 1441
    assert cron_fires(None, "2024-01-01T00:00:00", "2024-02-01T00:00:00") == []


def test_ctloop_retrains_after_each_month_start_and_only_then(sp500, tmp_path):
    result = replay(sp500, config_for(tmp_path, MONTHLY), "14D", policies=("ctloop",))
    points = result.policies["ctloop"].points
    dated = sp500.assign(date=pd.to_datetime(sp500["date"]))
    ends = list(dated.groupby(pd.Grouper(key="date", freq="14D"))["date"].max().dropna())
    assert len(ends) == len(points)
    first = next(i for i, p in enumerate(points) if p.note.startswith("first model"))
    # the month starts at 03:00 (pandas, independent of Prefect's cron), each answered after
    # the first batch whose newest row passes it
    starts = pd.date_range(ends[0], ends[-1], freq="MS") + pd.Timedelta(hours=3)
    expected = sorted(
        {next(i for i, end in enumerate(ends) if end >= s) for s in starts if s > ends[first]}
    )
    retrained = [i for i, p in enumerate(points) if p.retrained and i > first]
    assert len(expected) >= 7 and retrained == expected
    for i in retrained:
        assert points[i].note.startswith("schedule: "), points[i].note
        assert "labelled rows since the last retrain" in points[i].note


def test_without_a_schedule_only_the_first_model(sp500, tmp_path):
    result = replay(sp500, config_for(tmp_path, None), "14D", policies=("ctloop",))
    assert result.policies["ctloop"].retrains == 1
    assert not any(p.note.startswith("schedule") for p in result.policies["ctloop"].points)
