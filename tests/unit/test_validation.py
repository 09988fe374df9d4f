"""Batch validation against a schema inferred from a realistic clean demo batch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctloop.config.settings import Config, Severity
from ctloop.data.demo import TARGET, TIMESTAMP, DemoScript, corrupt, generate_day
from ctloop.data.schema import CATEGORICAL, DATETIME, NUMERIC, ColumnSchema, Schema, infer_schema
from ctloop.errors import ConfigError
from ctloop.validate.checks import coerce_to_schema, validate_batch


@pytest.fixture
def raw_days(script: DemoScript, delivered):
    """Stable demo days 0..3, each as delivered by CSV."""
    rng = np.random.default_rng(11)
    return [delivered(generate_day(script, d, rng)) for d in range(4)]


@pytest.fixture
def schema(raw_days, config):
    return infer_schema(raw_days[0], config.dataset)


@pytest.fixture
def clean(raw_days):
    """Another stable day than the schema's."""
    return raw_days[2].copy()


def checks(report) -> set[str]:
    return {i.check for i in report.issues}


def only(report, check: str):
    found = [i for i in report.issues if i.check == check]
    assert len(found) == 1, report.issues
    return found[0]


def test_schema_of_the_demo_batch(schema):
    assert schema.columns["application_date"].kind == DATETIME
    assert schema.columns["credit_score"].kind == NUMERIC
    assert schema.columns["region"].categories == ["east", "north", "south", "west"]
    assert set(schema.class_shares) == {"0", "1"}


def test_clean_batch_of_another_day_passes(clean, schema, config):
    report = validate_batch(clean, schema, config, "day02.csv")
    assert report.passed
    assert report.blocking == []
    assert report.rows == len(clean)
    assert report.source == "day02.csv"


def test_every_stable_day_passes(raw_days, schema, config):
    for frame in raw_days[1:]:
        assert validate_batch(frame, schema, config).passed


def test_missing_target_blocks(clean, schema, config):
    report = validate_batch(clean.drop(columns=[TARGET]), schema, config)
    issue = only(report, "missing_target")
    assert issue.severity == Severity.BLOCK
    assert issue.column == TARGET
    assert f"'{TARGET}'" in issue.message
    assert not report.passed
    # the target is not reported a second time as a missing column
    assert "missing_column" not in checks(report)


def test_text_in_a_numeric_column_names_column_and_first_bad_row(clean, schema, config, delivered):
    frame = clean.astype({"credit_score": object})
    frame.loc[[17, 40, 41], "credit_score"] = "UNKNOWN"
    raw = delivered(frame)
    assert raw["credit_score"].dtype == object  # as an export would deliver it
    report = validate_batch(raw, schema, config)
    issue = only(report, "type_error")
    assert issue.severity == Severity.BLOCK
    assert issue.column == "credit_score"
    assert issue.value == 3
    assert "credit_score" in issue.message
    assert "first at row 18: 'UNKNOWN'" in issue.message
    assert f"3 of {len(raw)}" in issue.message
    assert not report.passed


def test_text_in_the_timestamp_column(clean, schema, config):
    frame = clean.copy()
    frame.loc[5, TIMESTAMP] = "yesterday-ish"
    issue = only(validate_batch(frame, schema, config), "type_error")
    assert issue.column == TIMESTAMP
    assert "not dates" in issue.message and "row 6" in issue.message


def test_all_null_column_is_named(clean, schema, config, delivered):
    raw = delivered(clean.assign(employment_years=np.nan))
    report = validate_batch(raw, schema, config)
    issue = only(report, "missing_values")
    assert issue.column == "employment_years"
    assert issue.value == 1.0
    assert "100% missing" in issue.message
    assert not report.passed


def test_some_nulls_below_the_limit_pass(clean, schema, config):
    frame = clean.copy()
    share = config.validation.max_missing_share
    n = int(len(frame) * share)  # exactly at the limit is allowed
    frame.loc[: n - 1, "income"] = np.nan
    assert validate_batch(frame, schema, config).passed
    frame.loc[: n + 5, "income"] = np.nan
    assert only(validate_batch(frame, schema, config), "missing_values").column == "income"


def test_flood_of_unseen_categories(clean, schema, config):
    frame = clean.copy()
    rng = np.random.default_rng(0)
    flooded = rng.random(len(frame)) < 0.4
    frame.loc[flooded, "region"] = rng.choice(["mars", "venus"], flooded.sum())
    report = validate_batch(frame, schema, config)
    issue = only(report, "unseen_categories")
    assert issue.severity == Severity.BLOCK
    assert issue.column == "region"
    assert issue.value == pytest.approx(flooded.mean(), abs=1e-6)
    assert "'mars'" in issue.message and "'venus'" in issue.message


def test_a_few_unseen_categories_are_tolerated(clean, schema, config):
    frame = clean.copy()
    frame.loc[:4, "purpose"] = "wedding"  # 5 of 300 rows < 5%
    assert "unseen_categories" not in checks(validate_batch(frame, schema, config))


def balanced(frame: pd.DataFrame, ones: int) -> pd.DataFrame:
    labels = np.zeros(len(frame), dtype=int)
    labels[:ones] = 1
    return frame.assign(**{TARGET: np.random.default_rng(1).permutation(labels)})


@pytest.fixture
def fifty_fifty(raw_days, config):
    """A schema whose reference labels are exactly 50/50."""
    reference = balanced(raw_days[0], len(raw_days[0]) // 2)
    schema = infer_schema(reference, config.dataset)
    assert schema.class_shares == {"0": 0.5, "1": 0.5}
    return schema


def test_label_shift_warns_by_default(clean, fifty_fifty, config):
    shifted = balanced(clean, int(len(clean) * 0.3))  # 70/30
    report = validate_batch(shifted, fifty_fifty, config)
    issue = only(report, "label_shift")
    assert issue.severity == Severity.WARN
    assert issue.value == pytest.approx(0.2, abs=1e-6)
    assert issue.column == TARGET
    assert report.passed
    assert report.warnings == [issue]


def test_label_shift_blocks_when_configured(clean, fifty_fifty, make_config):
    config = make_config(validation={"severity": {"label_shift": "block"}})
    shifted = balanced(clean, int(len(clean) * 0.3))
    report = validate_batch(shifted, fifty_fifty, config)
    assert only(report, "label_shift").severity == Severity.BLOCK
    assert not report.passed


def test_small_label_change_is_no_shift(clean, fifty_fifty, config):
    near = balanced(clean, int(len(clean) * 0.45))
    assert "label_shift" not in checks(validate_batch(near, fifty_fifty, config))


def test_unknown_label_blocks(clean, schema, config):
    frame = clean.copy()
    frame.loc[3, TARGET] = 2
    issue = only(validate_batch(frame, schema, config), "unknown_label")
    assert issue.severity == Severity.BLOCK and "['2']" in issue.message


def test_duplicated_rows_warn(clean, schema, config):
    frame = pd.concat([clean.iloc[:30]] * 10, ignore_index=True)
    report = validate_batch(frame, schema, config)
    issue = only(report, "duplicates")
    assert issue.severity == Severity.WARN
    assert issue.value == pytest.approx(0.9)
    assert report.passed


def test_missing_column_blocks(clean, schema, config):
    report = validate_batch(clean.drop(columns=["purpose"]), schema, config)
    issue = only(report, "missing_column")
    assert issue.column == "purpose" and issue.severity == Severity.BLOCK
    assert checks(report) == {"missing_column"}


def test_extra_column_warns(clean, schema, config):
    report = validate_batch(clean.assign(notes="x"), schema, config)
    issue = only(report, "extra_column")
    assert issue.column == "notes" and issue.severity == Severity.WARN
    assert report.passed


def test_out_of_range_warns(clean, schema, config):
    frame = clean.assign(income=clean["income"] * 10)
    issue = only(validate_batch(frame, schema, config), "out_of_range")
    assert issue.column == "income" and issue.severity == Severity.WARN
    assert issue.value > 0.5


def test_empty_batch(clean, schema, config, delivered):
    header_only = delivered(clean.iloc[:0])
    assert len(header_only) == 0 and TARGET in header_only.columns
    report = validate_batch(header_only, schema, config)
    assert [i.check for i in report.issues] == ["empty"]
    assert not report.passed


def test_min_rows(clean, schema, make_config):
    config = make_config(validation={"min_rows": 500})
    issue = only(validate_batch(clean, schema, config), "empty")
    assert issue.value == len(clean) and "500" in issue.message


@pytest.mark.parametrize(
    ("check", "damage"),
    [
        ("missing_column", lambda f: f.drop(columns=["purpose"])),
        ("missing_values", lambda f: f.assign(employment_years=np.nan)),
        ("duplicates", lambda f: pd.concat([f.iloc[:30]] * 10, ignore_index=True)),
        ("extra_column", lambda f: f.assign(notes="x")),
        ("unseen_categories", lambda f: f.assign(region="mars")),
        ("type_error", lambda f: f.astype({"age": object}).assign(age="old")),
    ],
)
def test_severity_off_silences_a_check(clean, schema, make_config, config, check, damage):
    frame = damage(clean.copy())
    assert check in checks(validate_batch(frame, schema, config))
    silenced = make_config(validation={"severity": {check: "off"}})
    assert check not in checks(validate_batch(frame, schema, silenced))


def test_severity_can_demote_a_blocking_check(clean, schema, make_config):
    config = make_config(validation={"severity": {"missing_column": "warn"}})
    report = validate_batch(clean.drop(columns=["purpose"]), schema, config)
    assert report.passed and only(report, "missing_column").severity == Severity.WARN


def test_corrupt_demo_batch_is_blocked(clean, schema, config, delivered):
    raw = delivered(corrupt(clean, np.random.default_rng(4)))
    report = validate_batch(raw, schema, config, "day11_labelled.csv")
    blocking = {(i.check, i.column) for i in report.blocking}
    assert ("type_error", "credit_score") in blocking
    assert ("missing_values", "income") in blocking
    reasons = report.reasons()
    assert {r["check"] for r in reasons} >= {"type_error", "missing_values"}


def test_first_batch_without_schema(clean, config, delivered):
    assert validate_batch(clean, None, config).passed
    frame = clean.astype({"credit_score": object})
    frame.loc[[2, 9], "credit_score"] = "UNKNOWN"
    issue = only(validate_batch(delivered(frame), None, config), "type_error")
    assert issue.column == "credit_score" and "row 3" in issue.message
    # a text column is not mistaken for a broken numeric one
    assert "type_error" not in checks(validate_batch(clean, None, config))


def test_validation_needs_a_target(clean, schema, make_config):
    config = make_config(dataset={"target": None})
    with pytest.raises(ConfigError):
        validate_batch(clean, schema, config)


def test_regression_target_is_range_checked_not_label_checked(clean, make_config):
    config = make_config(dataset={"target": "income", "task": "regression"})
    schema = infer_schema(clean, config.dataset)
    assert schema.class_shares == {}
    frame = clean.assign(income=clean["income"] * 100)
    report = validate_batch(frame, schema, config)
    assert only(report, "out_of_range").column == "income"
    assert "label_shift" not in checks(report) and "unknown_label" not in checks(report)


# --- coerce_to_schema ---------------------------------------------------------------------


def test_coerce_to_schema_casts_each_kind():
    schema = Schema(
        1,
        "y",
        "binary",
        {
            "n": ColumnSchema("n", NUMERIC),
            "t": ColumnSchema("t", DATETIME),
            "zip": ColumnSchema("zip", CATEGORICAL, categories=["1001", "1002"]),
            "y": ColumnSchema("y", NUMERIC),
        },
    )
    raw = pd.DataFrame(
        {
            "n": ["1.5", "x", None, "4"],
            "t": ["2026-01-05 08:00:00", "2026-01-05T09:30:00", "not a date", None],
            "zip": [1001.0, np.nan, 1002.0, 1001.5],
            "y": [0, 1, 0, 1],
            "other": ["keep", "me", "as", "is"],
        }
    )
    out = coerce_to_schema(raw, schema)
    assert out["n"].dtype == float
    assert out["n"].tolist()[0] == 1.5 and np.isnan(out["n"][1]) and out["n"][3] == 4.0
    assert pd.api.types.is_datetime64_any_dtype(out["t"])
    assert out["t"][1] == pd.Timestamp("2026-01-05 09:30")
    assert out["t"].isna().tolist() == [False, False, True, True]
    assert out["zip"].dtype == object
    assert out["zip"][0] == "1001" and pd.isna(out["zip"][1]) and out["zip"][3] == "1001.5"
    assert out["other"].tolist() == ["keep", "me", "as", "is"]
    # the input is not modified
    assert raw["n"].tolist()[0] == "1.5"


def test_coerce_delivered_demo_batch(clean, schema):
    out = coerce_to_schema(clean, schema)
    assert pd.api.types.is_datetime64_any_dtype(out[TIMESTAMP])
    assert out[TIMESTAMP].is_monotonic_increasing
    assert pd.api.types.is_numeric_dtype(out["credit_score"])
    assert out["region"].map(type).eq(str).all()
    assert out["application_id"].map(type).eq(str).all()
    assert set(out["region"]) <= set(schema.columns["region"].categories)


# --- label parity between train and validation splits --------------------------------------


def test_label_parity_between_splits(config, make_config):
    from ctloop.validate.checks import label_parity

    even = pd.Series([0, 1] * 50)
    skewed = pd.Series([0] * 80 + [1] * 20)
    assert label_parity(even, even.sample(frac=1, random_state=0), config) is None
    issue = label_parity(even, skewed, config)
    assert issue.check == "label_parity" and issue.severity == Severity.WARN
    assert issue.column == TARGET and issue.value == pytest.approx(0.3)
    strict = make_config(validation={"severity": {"label_parity": "block"}})
    assert label_parity(even, skewed, strict).severity == Severity.BLOCK
    regression = make_config(dataset={"task": "regression"})
    assert label_parity(even, skewed, regression) is None


@pytest.mark.parametrize(
    ("columns", "dataset", "named"),
    [
        (["month", "passengers"], {"timestamp": "month"}, "'month' the timestamp"),
        (["chick", "diet", "weight"], {"id": "chick", "exclude": ["diet"]}, "'diet' excluded"),
    ],
)
def test_a_batch_without_a_model_input_is_blocked(columns, dataset, named, tmp_path):
    """river's airline passengers (a month and a count) and chick weights with every feature
    excluded: quarantined at ingest, where training used to fail after a Prefect traceback."""
    frame = pd.DataFrame({c: range(1, 41) for c in columns})
    if "month" in columns:
        frame["month"] = pd.date_range("1949-01", periods=40, freq="MS").strftime("%Y-%m")
    target = columns[-1]
    config = Config.model_validate(
        {"dataset": {"target": target, **dataset}, "paths": {"home": str(tmp_path)}}
    )
    report = validate_batch(frame, None, config)
    issue = next(i for i in report.issues if i.check == "no_features")
    assert issue.severity == "block" and named in issue.message
    assert f"'{target}' the target" in issue.message
    with_input = frame.assign(x=range(40))
    assert not [
        i for i in validate_batch(with_input, None, config).issues if i.check == "no_features"
    ]


def test_day_first_dates_are_read_with_one_format():
    """`04/02/2015` and `13/02/2015` in one column: both day first (one parse per value read
    the first as April 2 and the second as February 13, so a day spanned three months)."""
    from ctloop.data.batches import parse_times

    values = pd.Series(["04/02/2015 10:00", "05/02/2015 11:00", "13/02/2015 09:00", None])
    parsed = parse_times(values)
    assert parsed.dt.month.dropna().tolist() == [2, 2, 2]
    assert parsed.dt.day.dropna().tolist() == [4, 5, 13]
    assert parsed.isna().tolist() == [False, False, False, True]
    # month first where that is the only reading; ISO with offsets in UTC; text is NaT
    assert parse_times(pd.Series(["12/31/2024", "01/15/2025"])).dt.month.tolist() == [12, 1]
    iso = parse_times(pd.Series(["2024-01-01", "2024-01-02T08:00:00+01:00", "x"]))
    assert iso.tolist()[:2] == [pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-02 07:00")]
    assert pd.isna(iso.iloc[2])


def test_a_day_first_batch_is_stored_with_its_dates(tmp_path):
    from ctloop.validate.checks import profile_frame

    frame = pd.DataFrame(
        {"when": ["04/02/2015", "05/02/2015", "13/02/2015"] * 10, "x": range(30), "y": [0, 1] * 15}
    )
    config = Config.model_validate(
        {"dataset": {"target": "y", "timestamp": "when"}, "paths": {"home": str(tmp_path)}}
    )
    _, typed = profile_frame(frame, None, config)
    stamps = pd.Series(typed.column("when").to_pandas())
    assert stamps.min() == pd.Timestamp("2015-02-04") and stamps.max() == pd.Timestamp("2015-02-13")
