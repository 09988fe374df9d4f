"""Schema inference, versioned JSON storage and the latest-version lookup."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ctloop.config.settings import DatasetConfig, Task
from ctloop.data.schema import (
    BOOLEAN_KIND,
    CATEGORICAL,
    DATETIME,
    IDENTIFIER,
    NUMERIC,
    ColumnSchema,
    Schema,
    class_shares,
    guess_task,
    infer_schema,
    load_latest_schema,
    save_schema,
)
from ctloop.errors import InputError

DATASET = DatasetConfig(target="y", timestamp="ts", id="key")


def mixed_frame() -> pd.DataFrame:
    start = datetime(2026, 1, 5)
    return pd.DataFrame(
        {
            "key": [101, 102, 103, 104, 105, 106, 107, 108],
            # as delivered by CSV: timestamps are text
            "ts": [(start + timedelta(hours=h)).isoformat() for h in range(8)],
            "amount": [10.5, -3.0, np.nan, 7.25, 100.0, 0.0, 2.0, 3.0],
            "count": [1, 2, 3, 4, 5, 6, 7, 8],
            "colour": ["red", "blue", None, "red", "green", "blue", "red", "red"],
            "flag": [True, False, True, True, False, True, True, False],
            "seen_at": pd.date_range("2025-01-01", periods=8, freq="D"),
            "y": [0, 0, 1, 0, 0, 1, 0, 0],
        }
    )


def test_infer_schema_kinds():
    schema = infer_schema(mixed_frame(), DATASET)
    kinds = {name: col.kind for name, col in schema.columns.items()}
    assert kinds == {
        "key": IDENTIFIER,  # numeric values, but it is the id
        "ts": DATETIME,  # text, but it is the timestamp
        "amount": NUMERIC,
        "count": NUMERIC,
        "colour": CATEGORICAL,
        "flag": BOOLEAN_KIND,  # booleans are neither numbers nor categories
        "seen_at": DATETIME,  # datetime dtype, whatever its name
        "y": NUMERIC,
    }
    assert list(schema.columns) == list(mixed_frame().columns)
    assert schema.target == "y" and schema.task == "binary" and schema.version == 1


def test_infer_schema_ranges_nulls_and_categories():
    frame = mixed_frame()
    schema = infer_schema(frame, DATASET, version=3)
    amount = schema.columns["amount"]
    assert (amount.min, amount.max) == (frame["amount"].min(), frame["amount"].max())
    assert amount.nullable is True
    assert schema.columns["count"].nullable is False
    assert (schema.columns["count"].min, schema.columns["count"].max) == (1.0, 8.0)
    assert schema.columns["colour"].categories == ["blue", "green", "red"]
    assert schema.columns["colour"].nullable is True
    assert schema.columns["flag"].categories == []  # a boolean has no category set
    assert schema.version == 3


def test_infer_schema_all_null_numeric_has_no_range():
    frame = mixed_frame().assign(amount=np.nan)
    col = infer_schema(frame, DATASET).columns["amount"]
    assert col.kind == NUMERIC and col.min is None and col.max is None and col.nullable


def test_float_categories_that_are_whole_numbers_become_integers_text():
    frame = (
        mixed_frame()
        .assign(colour=[1.0, 2.0, np.nan, 1.0, 3.0, 2.0, 1.0, 1.0])
        .astype({"colour": object})
    )
    assert infer_schema(frame, DATASET).columns["colour"].categories == ["1", "2", "3"]


def test_class_shares_from_labels():
    schema = infer_schema(mixed_frame(), DATASET)
    assert schema.class_shares == {"0": 0.75, "1": 0.25}
    # float labels (a column with NaN read from CSV) give the same keys; NaN is not a class
    assert class_shares(pd.Series([0.0, 1.0, 1.0, np.nan])) == {
        "0": pytest.approx(1 / 3, abs=1e-6),
        "1": pytest.approx(2 / 3, abs=1e-6),
    }
    assert class_shares(pd.Series(["b", "a", "a", "c"])) == {"a": 0.5, "b": 0.25, "c": 0.25}


def test_regression_schema_has_no_class_shares():
    dataset = DatasetConfig(target="amount", task=Task.REGRESSION)
    assert infer_schema(mixed_frame(), dataset).class_shares == {}


def test_infer_schema_needs_a_target():
    with pytest.raises(InputError, match="dataset.target"):
        infer_schema(mixed_frame(), DatasetConfig())


def test_signature_is_model_inputs_only():
    schema = infer_schema(mixed_frame(), DATASET)
    assert schema.signature(DATASET.non_features()) == [
        ("amount", NUMERIC),
        ("count", NUMERIC),
        ("colour", CATEGORICAL),
        ("flag", BOOLEAN_KIND),
    ]


def test_save_load_round_trip(tmp_path):
    schema = infer_schema(mixed_frame(), DATASET, version=1)
    path = save_schema(schema, tmp_path / "schema")
    assert path.name == "schema-v1.json"
    loaded = load_latest_schema(tmp_path / "schema")
    assert loaded == schema
    assert isinstance(loaded.columns["colour"], ColumnSchema)
    assert not list((tmp_path / "schema").glob("*.tmp"))


def test_load_latest_schema_picks_the_highest_version(tmp_path):
    folder = tmp_path / "schema"
    base = infer_schema(mixed_frame(), DATASET)
    for version in (2, 10, 1, 9):  # 10 > 9 numerically, though "10" < "9" as text
        save_schema(
            Schema(version, base.target, base.task, base.columns, base.class_shares), folder
        )
    latest = load_latest_schema(folder)
    assert latest is not None and latest.version == 10


def test_load_latest_schema_before_any(tmp_path):
    assert load_latest_schema(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    assert load_latest_schema(tmp_path / "empty") is None


@pytest.mark.parametrize("body", ["{not json", '{"version": 1}', "[]"])
def test_load_latest_schema_rejects_a_broken_file(tmp_path, body):
    (tmp_path / "schema-v1.json").write_text(body)
    with pytest.raises(InputError) as info:
        load_latest_schema(tmp_path)
    assert str(tmp_path / "schema-v1.json") in str(info.value)


@pytest.mark.parametrize(
    ("labels", "task"),
    [
        (["yes", "no", "yes", None], Task.BINARY),
        ([0.0, 1.0, 1.0], Task.BINARY),
        ([1.5, 2.25, 3.0], Task.REGRESSION),  # any fraction: an amount
        (list(range(40)), Task.REGRESSION),  # many whole numbers (weights, counts)
        ([0, 1, 2, 9, 4], Task.MULTICLASS),  # a few codes (digits)
        ([1.0, 2.0, 3.0], Task.MULTICLASS),  # codes read as floats
        (["a", "b", "c"], Task.MULTICLASS),
        (["1", "2", "x"], Task.MULTICLASS),
    ],
)
def test_guess_task(labels, task):
    guessed, why = guess_task(pd.Series(labels))
    assert guessed == task and "distinct" in why
