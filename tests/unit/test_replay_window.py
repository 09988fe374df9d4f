"""The training window chosen by evidence (`ctloop.loop.window`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctloop.config.settings import Config
from ctloop.loop.replay.stream import batch_manifest, split_batches
from ctloop.loop.window import RULE, candidate_windows, choose_window

DAYS, ROWS, FEATURES = 8, 80, 15


def stream(flip_from: int | None) -> pd.DataFrame:
    """A linear concept in 15 noisy features (more rows make a better model); with `flip_from`
    the concept is reversed from that day on."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=FEATURES)
    parts = []
    for day in range(DAYS):
        X = rng.normal(size=(ROWS, FEATURES))
        sign = -1 if flip_from is not None and day >= flip_from else 1
        y = (sign * X @ w + rng.normal(0, 2.0, ROWS) > 0).astype(int)
        frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(FEATURES)]).assign(y=y)
        minutes = np.linspace(0, 23 * 60, ROWS)
        when = pd.Timestamp("2024-01-01") + pd.Timedelta(days=day) + pd.to_timedelta(minutes, "m")
        parts.append(frame.assign(when=when))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture()
def config(tmp_path) -> Config:
    return Config.model_validate(
        {
            "dataset": {"target": "y", "task": "binary", "timestamp": "when"},
            "training": {
                "window_days": 1.5,
                "min_rows": None,
                "holdout_fraction": 0.4,
                "family": "logistic_regression",
            },
            "paths": {"home": str(tmp_path)},
        }
    )


def lake_of(frame: pd.DataFrame):
    batches = split_batches(frame, "when", "1D")
    manifests = [batch_manifest(i, b, "when") for i, (_, b) in enumerate(batches)]

    def frame_of(ids):
        return pd.concat([batches[int(i[1:])][1] for i in ids], ignore_index=True)

    return manifests, frame_of


def test_candidates(config):
    manifests, _ = lake_of(stream(None))
    found = candidate_windows(manifests, config)
    assert found[RULE] == ["b00006", "b00007"]  # 1.5 days: the newest two batches
    assert found["all"] == [m.snapshot for m in manifests]
    since = manifests[5].time_min
    with_onset = candidate_windows(manifests, config, since)
    assert with_onset[RULE] == ["b00006", "b00007"] and "recent" not in with_onset  # the same ids


def test_old_data_that_still_helps_is_kept(config):
    manifests, frame_of = lake_of(stream(None))
    choice = choose_window(manifests, config, frame_of)
    assert choice.name == "all", choice.reason
    assert choice.scores["all"] > choice.scores[RULE]


def test_after_a_drift_the_old_data_is_dropped(config):
    manifests, frame_of = lake_of(stream(flip_from=5))
    since = manifests[5].time_min
    choice = choose_window(manifests, config, frame_of, since)
    assert choice.name in (RULE, "recent"), choice.reason
    assert "b00000" not in choice.ids
    assert choice.scores["all"] < choice.scores[choice.name]


def test_a_margin_keeps_the_rule(config):
    manifests, frame_of = lake_of(stream(None))
    choice = choose_window(manifests, config, frame_of, margin=1.0)  # no AUC gain is 1.0
    assert choice.name == RULE


def test_a_timestamp_of_numbers_is_refused_not_read_as_nanoseconds():
    """river's Trump approval stream keys its rows by ordinal day (736389): read as epoch
    nanoseconds every row fell into one batch."""
    from ctloop.errors import InputError

    frame = pd.DataFrame({"ordinal_date": range(736389, 736489), "y": range(100)})
    with pytest.raises(InputError, match="'ordinal_date' holds numbers \\(736389, 736390"):
        split_batches(frame, "ordinal_date", "7D")
