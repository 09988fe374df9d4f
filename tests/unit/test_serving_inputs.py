"""Serving inputs (pure): booleans, declared id/timestamp columns, personal data as ingestion
handles it, and the personal-data detectors on passenger-list-like values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ctloop.config.settings import DatasetConfig, PersonalDataConfig
from ctloop.data import privacy
from ctloop.data.batches import _text as ingest_text
from ctloop.data.schema import ColumnSchema, Schema
from ctloop.serving.inputs import (
    DatasetInputs,
    FeatureSchema,
    RequestError,
    check_records,
    parse_boolean,
    to_frame,
)

SALT = b"pepper"
SIGNATURE = [["age", "numeric"], ["home_town", "categorical"], ["flag", "boolean"]]


def _lake_schema(**kinds) -> Schema:
    columns = {
        "passenger_id": ColumnSchema("passenger_id", "id"),
        "boarded": ColumnSchema("boarded", "datetime"),
        "age": ColumnSchema("age", "numeric"),
        "name": ColumnSchema("name", "categorical", personal="name", handling="hash"),
        "email": ColumnSchema("email", "categorical", personal="email", handling="drop"),
        "home_town": ColumnSchema("home_town", "categorical", personal="place", handling="hash"),
        "flag": ColumnSchema("flag", "boolean"),
        "vip": ColumnSchema("vip", "categorical", categories=["False", "True"]),
        "survived": ColumnSchema("survived", "numeric"),
    }
    for name, kind in kinds.items():
        columns[name] = ColumnSchema(name, kind)
    return Schema(1, "survived", "binary", columns)


def _schema(signature=SIGNATURE, dataset=None) -> FeatureSchema:
    dataset = dataset or DatasetConfig(target="survived")
    inputs = DatasetInputs.of(dataset, _lake_schema(), PersonalDataConfig(), SALT)
    return FeatureSchema.from_signature(signature, (), inputs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("False", False), ("1", True), ("0", False)]
    + [(None, None), (" TRUE ", True), ("no", False), ("Yes", True), (1, True), (0, False)],
)
def test_boolean_spellings_are_accepted(value, expected):
    assert parse_boolean(value, "records[0].flag") is expected


@pytest.mark.parametrize("value", ["maybe", 2, -1, 2.5, [True], {"a": 1}, ""])
def test_other_boolean_values_name_the_field(value):
    with pytest.raises(RequestError) as err:
        parse_boolean(value, "records[2].flag")
    assert err.value.field == "records[2].flag" and err.value.status == 422
    assert err.value.message.startswith("records[2].flag: expected true, false or null")


def test_boolean_features_reach_the_model_as_their_text():
    """A stored boolean column is encoded by `prepare_features` as `True`/`False` text (the
    batch gate's boolean kind), so the server hands the pipeline the same text."""
    schema = _schema()
    assert schema.booleans == ("flag",)
    records = [
        {"age": 3, "home_town": "Paris, France", "flag": False},
        {"age": 4, "home_town": None, "flag": "yes"},
        {"age": None, "home_town": "Oslo, Norway", "flag": None},
    ]
    frame = to_frame(check_records(records, schema).columns, schema)
    assert frame["flag"].tolist()[:2] == ["False", "True"]
    assert pd.isna(frame["flag"].iloc[2]) and frame["flag"].dtype == object


def test_a_categorical_boolean_text_column_takes_json_booleans():
    schema = _schema([["vip", "categorical"]])
    checked = check_records([{"vip": True}, {"vip": "false"}, {"vip": "maybe"}], schema)
    assert checked.columns["vip"] == ["True", "False", "maybe"]
    with pytest.raises(RequestError, match=r"records\[0\]\.vip: expected a string"):
        check_records([{"vip": 3}], schema)


def test_declared_id_and_timestamp_are_tolerated_and_the_id_comes_back():
    schema = _schema()
    assert schema.id_column == "passenger_id"
    assert {"passenger_id", "boarded", "name", "email"} <= set(schema.passthrough)
    row = {"age": 30, "home_town": "St Louis, MO", "flag": True}
    full = {**row, "passenger_id": "P-17", "boarded": "1912-04-10T12:00:00"}
    checked = check_records([full, row], schema)
    assert checked.ids == ["P-17", None]
    assert checked.extras[0] == {"passenger_id": "P-17", "boarded": "1912-04-10T12:00:00"}
    with pytest.raises(RequestError) as err:
        check_records([{**full, "cabin": "C85"}], schema)
    assert err.value.field == "records[0].cabin" and "unknown field" in err.value.message
    # the config's id wins over the schema's
    other = _schema(dataset=DatasetConfig(target="survived", id="ticket_no"))
    assert other.id_column == "ticket_no" and "passenger_id" in other.passthrough


def test_personal_data_is_hashed_or_dropped_before_model_and_log():
    schema = _schema()
    record = {
        "age": 30,
        "home_town": "St Louis, MO",
        "flag": True,
        "name": "Allen, Miss. Elisabeth Walton",
        "email": "elisabeth@example.com",
        "passenger_id": 5,
    }
    checked = check_records([record], schema)
    # the feature is hashed exactly as ingestion hashed it in the lake
    lake = privacy.hash_values(pa.array(["St Louis, MO"]), SALT).to_pylist()
    assert checked.columns["home_town"] == lake
    logged = checked.rows(schema)[0]
    assert logged["name"] == privacy.hash_text("Allen, Miss. Elisabeth Walton", SALT)
    assert "email" not in logged
    assert "Allen" not in repr(logged) and "example.com" not in repr(logged)
    assert checked.ids == [5]  # the answer carries the id as sent


def test_hashed_columns_need_the_salt():
    with pytest.raises(ValueError, match="salt"):
        DatasetInputs.of(DatasetConfig(target="survived"), _lake_schema(), None, None)


def test_value_text_matches_what_ingestion_hashes():
    values = [5551234567, 3.0, 2.5, True, "x y"]
    for value in values:
        arr = pa.array([value])
        assert privacy.value_text(value) == ingest_text(arr).to_pylist()[0]
    assert privacy.hash_value(None, SALT) is None and privacy.hash_value(np.nan, SALT) is None


# -- detectors ---------------------------------------------------------------------------------

TICKETS = ["PC 17599", "113803", "STON/O2. 3101282", "A/5 21171", "373450", "W./C. 6608"]
PLACES = ["St Louis, MO", "Montreal, PQ / Chesterville, ON", "Lyndhurst, England", "Paris, France"]
NAMES = ["Braund, Mr. Owen Harris", "Cumings, Mrs. John Bradley", "Heikkinen, Miss. Laina"]


def _many(values, n=60):
    out = []
    for i in range(n):
        v = values[i % len(values)]
        out.append(f"{v}{i}" if any(c.isdigit() for c in v) else v)
    return out


def test_ticket_like_ids_places_and_titled_names_are_flagged():
    assert privacy.detect_personal("col_a", _many(TICKETS)) == "ticket"
    assert privacy.detect_personal("col_b", PLACES * 10) == "place"
    assert privacy.detect_personal("col_c", NAMES * 10) == "name"
    assert privacy.detect_personal("home.dest", ["x"]) == "place"
    assert privacy.detect_personal("Ticket", ["1"]) == "ticket"


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("income", [str(50_000 + 7 * i) for i in range(60)]),
        ("income", [str(50_000 + 7 * i) for i in range(55)] + ["n/a"] * 5),
        ("cabin", ["C85", "B5", "E46", "G6", "C23 C25 C27"] * 12),
        ("region", ["north", "south", "east", "west"] * 15),
        ("application_id", _many(TICKETS)),  # a record's own id
        ("comment", ["Good, but slow", "fine", "late, again"] * 20),
    ],
)
def test_ordinary_columns_are_not_flagged(name, values):
    assert privacy.detect_personal(name, values) is None


def test_demo_stream_has_no_personal_data():
    from ctloop.serving.sample import demo_frame

    frame = demo_frame(range(2), rows_per_day=100)
    found = {c: privacy.detect_personal(c, frame[c].dropna().astype(str).tolist()) for c in frame}
    assert set(found.values()) == {None}


def test_hashed_identifying_columns_are_not_training_columns():
    schema = _lake_schema()
    assert privacy.identifying_columns(schema) == ["name"]  # a place stays a (hashed) feature
    frame = pd.DataFrame({"name": ["a"], "home_town": ["b"], "age": [1]})
    assert list(privacy.without_identifying(frame, schema)) == ["home_town", "age"]
    assert privacy.without_identifying(frame, None) is frame


@pytest.mark.parametrize(("name", "field"), [("", "records[0].''"), (" age", "records[0].' age'")])
def test_an_odd_unknown_field_name_is_quoted(name, field):
    record = {"age": 1, "home_town": None, "flag": None, name: 2}
    with pytest.raises(RequestError) as err:
        check_records([record], _schema())
    assert err.value.field == field and err.value.message.startswith(f"{field}: unknown field")
