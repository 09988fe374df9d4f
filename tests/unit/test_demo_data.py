"""The seeded demo stream: determinism, label lag, the corrupt batch, the scripted episodes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctloop.config.settings import Config
from ctloop.data.demo import (
    ID,
    TARGET,
    TIMESTAMP,
    DemoScript,
    demo_config,
    demo_stream,
    generate_day,
    write_event,
)
from ctloop.lake.snapshots import read_batch


@pytest.fixture(scope="module")
def default_events():
    return list(demo_stream())


def test_stream_is_deterministic_for_a_seed():
    script = DemoScript(
        days=6, rows_per_day=80, corrupt_day=3, shift_start=2, shift_end=4, concept_drift_day=4
    )
    a, b = list(demo_stream(script)), list(demo_stream(script))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.arrival_day, x.data_day, x.kind, x.corrupt) == (
            y.arrival_day,
            y.data_day,
            y.kind,
            y.corrupt,
        )
        pd.testing.assert_frame_equal(x.frame, y.frame)
    other = list(demo_stream(DemoScript(**{**script.__dict__, "seed": script.seed + 1})))
    assert not a[0].frame.equals(other[0].frame)


def test_events_arrive_in_order_with_the_label_lag(default_events):
    script = DemoScript()
    arrivals = [e.arrival_day for e in default_events]
    assert arrivals == sorted(arrivals)
    features = [e for e in default_events if e.kind == "features"]
    labels = [e for e in default_events if e.kind == "labels"]
    assert [e.data_day for e in features] == list(range(script.days))
    assert [e.data_day for e in labels] == list(range(script.days))
    assert all(e.arrival_day == e.data_day for e in features)
    assert all(e.arrival_day - e.data_day == script.label_lag_days for e in labels)
    assert arrivals[-1] == script.days - 1 + script.label_lag_days


@pytest.mark.parametrize("lag", [0, 1, 4])
def test_label_lag_is_configurable(lag):
    events = list(demo_stream(DemoScript(days=5, rows_per_day=20, label_lag_days=lag)))
    assert {e.arrival_day - e.data_day for e in events if e.kind == "labels"} == {lag}


def test_features_have_no_target_and_labels_match_features(default_events):
    by_day = {}
    for e in default_events:
        by_day.setdefault(e.data_day, {})[e.kind] = e
    for pair in by_day.values():
        features, labels = pair["features"].frame, pair["labels"].frame
        assert TARGET not in features.columns
        assert list(labels.columns) == list(features.columns) + [TARGET]
        assert features[ID].tolist() == labels[ID].tolist()
        if not pair["labels"].corrupt:
            pd.testing.assert_frame_equal(labels.drop(columns=[TARGET]), features)
        assert set(labels[TARGET].unique()) <= {0, 1}


def test_exactly_one_corrupt_event(default_events):
    script = DemoScript()
    corrupt = [e for e in default_events if e.corrupt]
    assert len(corrupt) == 1
    event = corrupt[0]
    assert event.kind == "labels" and event.data_day == script.corrupt_day
    frame = event.frame
    text = frame["credit_score"].map(lambda v: isinstance(v, str))
    assert 0.2 < text.mean() < 0.4
    assert set(frame.loc[text, "credit_score"]) == {"UNKNOWN"}
    assert frame["income"].isna().mean() > 0.3
    # the features of that day are clean
    clean = next(
        e for e in default_events if e.kind == "features" and e.data_day == script.corrupt_day
    )
    assert pd.api.types.is_integer_dtype(clean.frame["credit_score"])
    assert clean.frame["income"].notna().all()


def test_episodes(default_events):
    script = DemoScript()
    for e in default_events:
        assert e.episode == script.episode(e.data_day)
    assert script.episode(0) == "stable"
    assert script.episode(script.shift_start) == "gradual shift"
    assert script.episode(script.concept_drift_day) == "concept drift"


def test_days_have_their_dates_and_unique_ids():
    script = DemoScript(rows_per_day=200)
    frame = generate_day(script, 3, np.random.default_rng(0))
    assert len(frame) == 200
    assert frame[ID].is_unique
    dates = pd.to_datetime(frame[TIMESTAMP]).dt.date.unique()
    assert list(dates) == [script.start + pd.Timedelta(days=3)]
    assert frame[TIMESTAMP].is_monotonic_increasing
    assert frame["age"].between(18, 80).all()
    assert frame["credit_score"].between(300, 850).all()


def labelled(events) -> pd.DataFrame:
    return pd.concat(
        [e.frame.assign(day=e.data_day) for e in events if e.kind == "labels" and not e.corrupt],
        ignore_index=True,
    )


def test_gradual_shift_lowers_incomes_and_raises_loans(default_events):
    data = labelled(default_events)
    script = DemoScript()
    before = data[data["day"] < script.shift_start]
    after = data[(data["day"] >= script.shift_end) & (data["day"] < script.concept_drift_day + 3)]
    assert after["income"].median() < 0.85 * before["income"].median()
    assert after["loan_amount"].median() > 1.1 * before["loan_amount"].median()


def test_concept_drift_raises_defaults_of_south_business_loans(default_events):
    data = labelled(default_events)
    script = DemoScript()
    segment = (data["region"] == "south") & (data["purpose"] == "business")
    before = data[(data["day"] < script.concept_drift_day) & segment]
    after = data[(data["day"] >= script.concept_drift_day) & segment]
    assert len(before) > 100 and len(after) > 100
    assert after[TARGET].mean() > before[TARGET].mean() + 0.3
    # outside the segment, the credit score matters much less than before (a new relationship)
    rest_before = data[(data["day"] < script.concept_drift_day) & ~segment]
    rest_after = data[(data["day"] >= script.concept_drift_day) & ~segment]

    def score_gap(frame):
        low = frame["credit_score"] < frame["credit_score"].median()
        return frame.loc[low, TARGET].mean() - frame.loc[~low, TARGET].mean()

    assert score_gap(rest_before) > 2 * score_gap(rest_after)
    # and the population moves: the south becomes the majority region
    assert (data.loc[data["day"] >= script.concept_drift_day, "region"] == "south").mean() > 0.45


def test_write_event_round_trip(tmp_path, default_events):
    event = default_events[1]
    path = write_event(event, tmp_path / "landing")
    assert path.name == event.filename
    back = read_batch(path)
    assert list(back.columns) == list(event.frame.columns)
    assert len(back) == len(event.frame)
    assert back[ID].tolist() == event.frame[ID].tolist()


def test_filenames():
    events = list(demo_stream(DemoScript(days=3, rows_per_day=10, label_lag_days=1)))
    names = [e.filename for e in events]
    assert names[:3] == ["day00_features.csv", "day01_features.csv", "day00_labelled.csv"]
    assert len(set(names)) == len(names)


def test_demo_config(tmp_path):
    cfg = demo_config(str(tmp_path / "home"))
    assert isinstance(cfg, Config)
    assert cfg.require_target() == TARGET
    assert cfg.dataset.non_features() == {TARGET, TIMESTAMP, ID}
    script = DemoScript()
    # a first model needs a few labelled days, not the whole stream
    assert (
        script.rows_per_day
        <= cfg.triggers.bootstrap_rows
        < script.rows_per_day * script.shift_start
    )


def test_labelled_stream_is_every_clean_labelled_day_in_application_order():
    from ctloop.data.demo import labelled_stream

    script = DemoScript(rows_per_day=40)
    stream = labelled_stream(script)
    assert len(stream) == (script.days - 1) * script.rows_per_day  # the corrupt day is left out
    assert stream[TIMESTAMP].is_monotonic_increasing
    assert stream[ID].is_unique
    assert set(stream[TARGET].unique()) <= {0, 1}
    assert pd.api.types.is_numeric_dtype(stream["credit_score"])
    days = pd.to_datetime(stream[TIMESTAMP]).dt.normalize().nunique()
    assert days == script.days - 1


@pytest.mark.parametrize(("trials", "enabled"), [(0, False), (4, True)])
def test_demo_config_tunes_only_when_asked(trials, enabled):
    config = demo_config("/tmp/x", 100, tune_trials=trials)
    assert config.tuning.enabled is enabled
    if enabled:
        assert config.tuning.trials == trials
