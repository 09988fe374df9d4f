"""Property-based: bad and odd bodies to `/predict`, `/invocations` and `/feedback` (in process)
never get a 5xx, and every 4xx says what is wrong, naming the field when there is one.

The model serves a passenger list (numeric, categorical, True/False text, a hashed place; the
id, time and personal columns declared by the lake), so every input path is on the way.
Fixed profile: derandomized, bounded examples, no deadline, no example database.
"""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctloop.serving.app import create_app
from ctloop.serving.sample import passenger_home
from ctloop.serving.server import ModelServer

PROFILE = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
TRIED: Counter = Counter()
STATUSES: Counter = Counter()
WHERE = ("dataframe_records", "dataframe_split", "instances", "inputs", "csv")  # /invocations

ODD_TEXT = [
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "1e400",
    "",
    " ",
    "\u202eevil\u202c",
    "\u05e9\u05dc\u05d5\u05dd",
    "\x00",
    "true",
    "False",
    "0",
    "x" * 5000,
    "St Louis, MO",
]
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(ODD_TEXT),
)
VALUE = st.recursive(
    LEAF,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    home = passenger_home(root, rows=300)
    config = home["config"].model_copy(deep=True)
    config.dataset.id = config.dataset.timestamp = None  # the lake's schema declares them
    config.serving.poll_seconds = 3600
    config.serving.prediction_log_url = f"sqlite:///{root / 'log.db'}"
    frame = home["raw"].drop(columns="survived").head(20)
    frame["boarded"] = frame["boarded"].astype(str)
    frame["vip"] = frame["vip"].astype(bool)
    rows = frame.to_dict(orient="records")
    with TestClient(create_app(ModelServer(config))) as test_client:
        first = test_client.post("/predict", json={"records": rows[:3]})
        assert first.status_code == 200, first.text
        yield test_client, rows, first.json()["request_id"]
    print(f"\nfuzz: examples tried {dict(TRIED)}; statuses {dict(sorted(STATUSES.items()))}")


def _mutate(record: dict, data) -> dict:
    record = dict(record)
    for _ in range(data.draw(st.integers(0, 4), label="mutations")):
        kind = data.draw(st.sampled_from(["value", "drop", "extra", "rename", "odd"]))
        names = list(record) or ["age"]
        name = data.draw(st.sampled_from(names))
        if kind == "value":
            record[name] = data.draw(VALUE)
        elif kind == "odd":
            record[name] = data.draw(st.sampled_from(ODD_TEXT))
        elif kind == "drop":
            record.pop(name, None)
        elif kind == "extra":
            record[data.draw(st.text(min_size=1, max_size=8))] = data.draw(VALUE)
        else:
            record[name + data.draw(st.sampled_from(["\u200f", " ", "_x", "\u00e9"]))] = record.pop(
                name, None
            )
    return record


def _records(rows: list[dict], data) -> list[dict]:
    n = data.draw(st.integers(0, 5), label="records")
    return [_mutate(rows[i % len(rows)], data) for i in range(n)]


def _check(route: str, response) -> None:
    status = response.status_code
    STATUSES[(route, status)] += 1
    assert status < 500, (route, status, response.text[:300])
    if status < 400:
        return
    body = response.json()
    message = body["message"] if route == "/invocations" else body["detail"]
    assert isinstance(message, str) and message.strip(), body
    if status == 422:  # a field is wrong: the message starts with where it is
        if route == "/invocations":
            assert message.startswith(WHERE) and ": " in message, message
        else:
            assert body["field"] and message.startswith(f"{body['field']}:"), body


def _post(client, route: str, data, payload) -> None:
    how = data.draw(st.sampled_from(["json", "json", "raw", "type"]), label="encoding")
    if how == "json":
        response = client.post(route, content=json.dumps(payload, allow_nan=True))
    elif how == "raw":
        blob = data.draw(
            st.one_of(
                st.binary(max_size=300),
                st.text(max_size=200).map(str.encode),
                st.sampled_from(
                    [b"", b"   ", b"[" * 50_000, b'{"records": [{"age": NaN}]}', b"\xff\xfe{}"]
                ),
            )
        )
        response = client.post(route, content=blob, headers={"content-type": "application/json"})
    else:
        kind = data.draw(
            st.sampled_from(["text/csv", "text/plain", "", "multipart/form-data", "*/*"])
        )
        response = client.post(
            route, content=json.dumps(payload, default=str), headers={"content-type": kind}
        )
    TRIED[(route, how)] += 1
    _check(route, response)


@PROFILE
@given(data=st.data())
def test_predict_never_5xx(client, data):
    test_client, rows, _ = client
    shape = data.draw(st.sampled_from(["list", "one", "odd", "many"]), label="shape")
    if shape == "list":
        payload = {"records": _records(rows, data)}
    elif shape == "one":
        payload = {"records": _mutate(rows[0], data)}
    elif shape == "many":  # within the body limit, a thousand and more records
        payload = {"records": rows * data.draw(st.integers(50, 120))}
    else:
        payload = data.draw(VALUE)
    if isinstance(payload, dict) and data.draw(st.booleans()):
        payload[data.draw(st.sampled_from(["key", "request_id", "extra"]))] = data.draw(VALUE)
    _post(test_client, "/predict", data, payload)


@PROFILE
@given(data=st.data())
def test_invocations_never_5xx(client, data):
    test_client, rows, _ = client
    records = _records(rows, data)
    form = data.draw(
        st.sampled_from(["dataframe_records", "dataframe_split", "instances", "inputs", "csv"]),
        label="format",
    )
    if form == "csv":
        text = pd.DataFrame(records).to_csv(index=False) if records else ""
        if data.draw(st.booleans()):
            text = data.draw(st.sampled_from([text[: len(text) // 2], text + ",,\n", "a;b\n1;2"]))
        response = test_client.post(
            "/invocations", content=text.encode(), headers={"content-type": "text/csv"}
        )
        TRIED[("/invocations", "csv")] += 1
        _check("/invocations", response)
        return
    if form == "dataframe_split":
        columns = list(rows[0])
        if data.draw(st.booleans()):
            columns = data.draw(st.lists(st.sampled_from([*columns, "cabin", ""]), max_size=12))
        split = {"columns": columns, "data": [list(r.values()) for r in records]}
        payload = {form: split}
    elif form == "inputs":
        names = {k for r in records for k in r}
        payload = {form: {k: [r.get(k) for r in records] for k in names}}
    else:
        payload = {form: records}
    if data.draw(st.booleans()):
        payload = data.draw(st.sampled_from([payload, {**payload, "params": 1}, [payload], {}]))
    _post(test_client, "/invocations", data, payload)


@PROFILE
@given(data=st.data())
def test_feedback_never_5xx(client, data):
    test_client, _, request_id = client
    item = {
        "request_id": data.draw(st.one_of(st.just(request_id), VALUE)),
        "row": data.draw(st.one_of(st.integers(-2, 5), VALUE)),
        "label": data.draw(st.one_of(st.sampled_from([0, 1, "1", True]), VALUE)),
    }
    for name in data.draw(st.lists(st.sampled_from(list(item)), max_size=2)):
        item.pop(name, None)
    if data.draw(st.booleans()):
        item[data.draw(st.text(min_size=1, max_size=6))] = data.draw(VALUE)
    payload = data.draw(st.sampled_from([item, [item], [item, item], [], VALUE.example]))
    if callable(payload):
        payload = data.draw(VALUE)
    _post(test_client, "/feedback", data, payload)


def test_the_generators_reach_both_answers(client):
    """Run last in this file: the fuzzers above produced scored and refused requests."""
    for route in ("/predict", "/invocations", "/feedback"):
        assert STATUSES[(route, 200)] > 0, (route, STATUSES)
        assert sum(v for (r, s), v in STATUSES.items() if r == route and s >= 400) > 0
