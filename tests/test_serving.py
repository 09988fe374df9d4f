"""Model server, in process: inputs, routing, shadow, hot swap, admin, feedback, metrics."""

from __future__ import annotations

import json
import math
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from ctloop.data.demo import ID, TARGET, TIMESTAMP, demo_config
from ctloop.model.train import prepare_features
from ctloop.registry.store import CHALLENGER, CHAMPION, open_registry
from ctloop.serving.app import create_app
from ctloop.serving.inputs import (
    FeatureSchema,
    RequestError,
    check_records,
    mlflow_records,
    parse_json,
    to_frame,
)
from ctloop.serving.routing import Router, key_point, parse_target
from ctloop.serving.sample import demo_frame, register_version
from ctloop.serving.server import ModelServer
from ctloop.stores.predlog import SERVED, SHADOW, PredictionLog, online_metrics

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A registry with three versions: v1 champion (boosting), v2 challenger (logistic), and v3
    whose recorded signature lacks a column its pipeline needs (it cannot serve)."""
    root = tmp_path_factory.mktemp("serving")
    config = demo_config(str(root / "home"))
    frame = demo_frame(range(4), rows_per_day=250)
    v1 = register_version(config, frame, params={"max_iter": 30}, alias=CHAMPION)
    v2 = register_version(config, frame, family="logistic_regression", alias=CHALLENGER)
    broken = [s for s in json.loads(v1.tags["ctloop.signature"]) if s[0] != "region"]
    v3 = register_version(config, frame, params={"max_iter": 10}, signature=broken)
    holdout = demo_frame([5], rows_per_day=200, seed=50)
    return {"config": config, "versions": (v1, v2, v3), "holdout": holdout}


def _config(home, **serving):
    config = home["config"].model_copy(deep=True)
    config.serving.admin_token = TOKEN
    config.serving.poll_seconds = 3600  # tests call refresh() themselves
    for key, value in serving.items():
        setattr(config.serving, key, value)
    return config


def _records(home, n=5, start=0):
    frame = home["holdout"].drop(columns=[TARGET, ID, TIMESTAMP]).iloc[start : start + n]
    return frame.to_dict(orient="records")


@pytest.fixture
def reset_aliases(home):
    registry = open_registry(home["config"])
    v1, v2, _ = home["versions"]
    registry.set_alias(CHAMPION, v1.version)
    registry.set_alias(CHALLENGER, v2.version)
    yield registry
    registry.set_alias(CHAMPION, v1.version)
    registry.set_alias(CHALLENGER, v2.version)


# -- inputs (pure) -----------------------------------------------------------------------------

SCHEMA = FeatureSchema(("age", "income"), ("region",), ("application_id",))
GOOD = {"age": 30, "income": 50000.5, "region": "north"}


@pytest.mark.parametrize(
    ("records", "field", "words"),
    [
        ([{"age": 30, "region": "north"}], "records[0].income", "missing"),
        ([{**GOOD, "income": "abc"}], "records[0].income", "expected a number"),
        ([{**GOOD, "age": True}], "records[0].age", "expected a number"),
        ([{**GOOD, "region": 3}], "records[0].region", "expected a string"),
        ([GOOD, {**GOOD, "colour": "red"}], "records[1].colour", "unknown field"),
        ([{**GOOD, "income": math.nan}], "records[0].income", "nan is not allowed"),
        ([{**GOOD, "income": math.inf}], "records[0].income", "inf is not allowed"),
        ([{**GOOD, "income": 10**400}], "records[0].income", "out of range"),
        ([{**GOOD, "income": [1]}], "records[0].income", "expected a number"),
        ([], "records", "empty"),
        ("abc", "records", "expected a list"),
        ([3], "records[0]", "expected an object"),
    ],
)
def test_bad_records_name_the_field(records, field, words):
    with pytest.raises(RequestError) as err:
        check_records(records, SCHEMA)
    assert err.value.field == field
    assert err.value.status == 422
    assert words in err.value.message.lower()
    assert err.value.message.startswith(field)


def test_records_allow_nulls_and_passthrough_and_match_training_frame():
    records = [
        GOOD,
        {"age": None, "income": 1.0, "region": None, "application_id": "A1"},
        {"age": 2**60, "income": 3, "region": "south"},
    ]
    checked = check_records(records, SCHEMA)
    assert checked.n == 3
    assert checked.extras == [{}, {"application_id": "A1"}, {}]
    fast = to_frame(checked.columns, SCHEMA)
    reference = prepare_features(pd.DataFrame(records), ["age", "income"], ["region"])
    pd.testing.assert_frame_equal(fast, reference)
    # a single object is one record
    assert check_records(GOOD, SCHEMA).n == 1


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"", 400, "empty body"),
        (b"   ", 400, "empty body"),
        (b'{"records": [', 400, "malformed json"),
        (b"\xff\xfe", 400, ""),
    ],
)
def test_parse_json_refuses_malformed(body, status, words):
    with pytest.raises(RequestError) as err:
        parse_json(body)
    assert err.value.status == status
    assert words in err.value.message.lower()


def test_parse_json_keeps_nan_for_the_field_check():
    payload = parse_json(b'{"records": [{"income": NaN}]}')
    assert math.isnan(payload["records"][0]["income"])


def test_mlflow_payload_formats_give_the_same_records():
    rows = [GOOD, {**GOOD, "age": 41}]
    split = {"columns": list(GOOD), "data": [list(r.values()) for r in rows]}
    columns = {k: [r[k] for r in rows] for k in GOOD}
    for payload in (
        {"dataframe_records": rows},
        {"dataframe_split": split},
        {"instances": rows},
        {"inputs": rows},
        {"inputs": columns},
        {"instances": columns},
    ):
        records, _ = mlflow_records(payload)
        assert records == rows, payload
    for bad in ({"records": rows}, {"inputs": rows, "instances": rows}, [rows], {}):
        with pytest.raises(RequestError):
            mlflow_records(bad)


# -- routing (pure) ----------------------------------------------------------------------------


def test_router_splits_by_weight_and_keys_are_sticky():
    router = Router.from_weights({"champion": 0.9, "challenger": 0.1})
    seen = Counter(router.choose() for _ in range(10_000))
    assert abs(seen["challenger"] / 10_000 - 0.1) <= 0.02
    keyed = {f"user-{i}": router.choose(f"user-{i}") for i in range(2000)}
    assert all(router.choose(k) == t for k, t in keyed.items())
    assert abs(Counter(keyed.values())["challenger"] / 2000 - 0.1) <= 0.03
    assert key_point("abc") == key_point("abc") and 0 <= key_point("abc") < 1
    assert parse_target("3") == ("v3", 3) and parse_target("v12") == ("v12", 12)
    with pytest.raises(ValueError):
        parse_target("latest")
    with pytest.raises(ValueError):
        Router.from_weights({"champion": 0.0})


# -- the app -----------------------------------------------------------------------------------


def test_predict_and_invocations_answer_like_the_model(home, reset_aliases):
    v1, _, _ = home["versions"]
    model = open_registry(home["config"]).load(v1)
    records = _records(home, 8)
    frame = pd.DataFrame(records)
    numeric = [n for n, k in v1.signature if k == "numeric"]
    categorical = [n for n, k in v1.signature if k == "categorical"]
    X = prepare_features(frame, numeric, categorical)
    expected = model.predict(X).tolist()
    expected_proba = model.predict_proba(X)[:, 1]
    with TestClient(create_app(ModelServer(_config(home)))) as client:
        one = client.post("/predict", json={"records": records})
        assert one.status_code == 200, one.text
        body = one.json()
        assert body["version"] == v1.version and body["target"] == CHAMPION
        assert body["predictions"] == expected
        np.testing.assert_allclose(body["probabilities"], expected_proba, rtol=1e-9)
        assert one.headers["x-model-version"] == str(v1.version)
        single = client.post("/predict", json={"records": records[0]})
        assert single.json()["predictions"] == expected[:1]

        split = {"columns": list(records[0]), "data": [list(r.values()) for r in records]}
        for payload in (
            {"dataframe_records": records},
            {"dataframe_split": split},
            {"instances": records},
            {"inputs": {k: [r[k] for r in records] for k in records[0]}},
        ):
            answer = client.post("/invocations", json=payload)
            assert answer.status_code == 200, (payload, answer.text)
            assert answer.json() == {"predictions": expected}
        csv = client.post(
            "/invocations", content=frame.to_csv(index=False), headers={"content-type": "text/csv"}
        )
        assert csv.json() == {"predictions": expected}
        bad = client.post("/invocations", json={"dataframe_records": [{"age": 1}]})
        assert bad.status_code == 422
        assert bad.json()["error_code"] == "BAD_REQUEST"
        assert "dataframe_records[0]" in bad.json()["message"]


def test_bad_requests_get_4xx_naming_the_problem(home, reset_aliases):
    good = _records(home, 1)[0]
    cases = [
        ({"records": [{k: v for k, v in good.items() if k != "income"}]}, 422, "income"),
        ({"records": [{**good, "credit_score": "high"}]}, 422, "credit_score"),
        ({"records": [{**good, "favourite_colour": "red"}]}, 422, "favourite_colour"),
        ({"records": []}, 422, "empty"),
        ({"rows": [good]}, 422, "rows"),
        ({}, 422, "records"),
        ([good], 422, "records"),
        ({"records": [good], "key": 5}, 422, "key"),
        ({"records": [good], "request_id": "\u0100"}, 422, "request_id"),
        ({"records": [good] * 10_001}, 413, "at most"),
    ]
    with TestClient(create_app(ModelServer(_config(home)))) as client:
        for payload, status, words in cases:
            answer = client.post("/predict", json=payload)
            assert answer.status_code == status, (payload, answer.text)
            assert words in answer.json()["detail"], answer.json()
        raw_cases = [
            (b'{"records": [{"income": NaN', 400, "malformed JSON"),
            (b"", 400, "empty body"),
            (b"{records: 1}", 400, "malformed JSON"),
            (b"x" * 10_000_000, 413, "over the limit"),
        ]
        nan = dict(good)
        nan_body = json.dumps({"records": [{**nan, "income": float("nan")}]}).encode()
        raw_cases.append((nan_body, 422, "records[0].income: nan is not allowed"))
        for body, status, words in raw_cases:
            answer = client.post(
                "/predict", content=body, headers={"content-type": "application/json"}
            )
            assert answer.status_code == status, (body[:50], answer.text)
            assert words in answer.json()["detail"]
        wrong_type = client.post("/predict", content=b"a,b", headers={"content-type": "text/csv"})
        assert wrong_type.status_code == 415
        errors = client.get("/metrics").text
        assert 'ctloop_errors_total{route="/predict",status="422",version="none"}' in errors


def test_sticky_keys_and_shadow_never_returned(home, reset_aliases):
    v1, v2, _ = home["versions"]
    config = _config(home, challenger_traffic=0.5, shadow=False)
    with TestClient(create_app(ModelServer(config))) as client:
        records = _records(home, 1)
        first = {}
        for i in range(60):
            answer = client.post("/predict", json={"records": records, "key": f"customer-{i}"})
            first[f"customer-{i}"] = answer.json()["version"]
        assert set(first.values()) == {v1.version, v2.version}
        for _ in range(3):
            for key, version in first.items():
                again = client.post(
                    "/predict", json={"records": records}, headers={"x-routing-key": key}
                )
                assert again.json()["version"] == version

    shadow_config = _config(home, challenger_traffic=0.0, shadow=True)
    server = ModelServer(shadow_config)
    with TestClient(create_app(server)) as client:
        ids = []
        for start in range(0, 40, 2):
            answer = client.post("/predict", json={"records": _records(home, 2, start)})
            body = answer.json()
            assert body["version"] == v1.version and body["target"] == CHAMPION
            ids.append(body["request_id"])
        described = client.get("/models").json()
        assert described["shadow"]["version"] == v2.version
        assert [m["version"] for m in described["models"]] == [v1.version]
        # the shadow's answers are in the log, under the same request ids (the shadow scores
        # after the answer went out, so give it a bounded moment under a loaded machine)
        deadline = time.monotonic() + 30
        while True:
            server.log.flush()
            logged = server.log.read()
            mine = logged[logged["request_id"].isin(ids)]
            if (mine["role"] == SHADOW).sum() >= 40 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert Counter(mine["role"]) == {SERVED: 40, SHADOW: 40}
        assert set(mine[mine["role"] == SHADOW]["version"]) == {v2.version}
        assert set(mine[mine["role"] == SERVED]["version"]) == {v1.version}


def test_hot_swap_follows_alias_and_refuses_a_version_failing_warmup(home, reset_aliases):
    v1, v2, v3 = home["versions"]
    registry = reset_aliases
    server = ModelServer(_config(home))
    with TestClient(create_app(server)) as client:
        records = _records(home, 3)
        assert client.post("/predict", json={"records": records}).json()["version"] == v1.version
        registry.set_alias(CHAMPION, v2.version)
        changes = server.refresh()
        assert [c["version"] for c in changes] == [v2.version]
        assert client.post("/predict", json={"records": records}).json()["version"] == v2.version

        registry.set_alias(CHAMPION, v3.version)
        assert server.refresh() == []
        answer = client.post("/predict", json={"records": records})
        assert answer.status_code == 200 and answer.json()["version"] == v2.version
        failed = client.get("/models").json()["failed"]
        assert failed[0]["version"] == v3.version
        assert "region" in failed[0]["reason"]
        text = client.get("/metrics").text
        assert 'ctloop_swaps_total{result="warmup_failed"} 1.0' in text
        assert 'ctloop_live_version{target="champion"} ' + f"{float(v2.version)}" in text


def test_admin_routes_need_the_token_and_promote_rollback(home, reset_aliases):
    v1, v2, v3 = home["versions"]
    registry = reset_aliases
    with TestClient(create_app(ModelServer(_config(home)))) as client:
        assert client.post("/admin/promote", json={"version": v2.version}).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert client.post("/admin/rollback", headers=wrong).status_code == 401
        assert registry.by_alias(CHAMPION).version == v1.version

        promoted = client.post("/admin/promote", json={"version": v2.version}, headers=AUTH)
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["previous"] == v1.version
        assert registry.by_alias(CHAMPION).version == v2.version
        assert client.post("/predict", json={"records": _records(home)}).json()["version"] == 2

        refused = client.post("/admin/promote", json={"version": v3.version}, headers=AUTH)
        assert refused.status_code == 409 and "warm-up" in refused.json()["detail"]
        assert registry.by_alias(CHAMPION).version == v2.version
        missing = client.post("/admin/promote", json={"version": 99}, headers=AUTH)
        assert missing.status_code == 404 and "99" in missing.json()["detail"]

        back = client.post("/admin/rollback", headers=AUTH)
        assert back.status_code == 200 and back.json()["champion"] == v1.version
        assert client.post("/predict", json={"records": _records(home)}).json()["version"] == 1

        traffic = client.post(
            "/admin/traffic",
            json={"weights": {"champion": 1, f"v{v2.version}": 1}, "shadow": None},
            headers=AUTH,
        )
        assert traffic.status_code == 200, traffic.text
        shares = {m["target"]: m["traffic"] for m in traffic.json()["models"]}
        assert shares == {CHAMPION: 0.5, f"v{v2.version}": 0.5}
        bad = client.post("/admin/traffic", json={"weights": {"newest": 1}}, headers=AUTH)
        assert bad.status_code == 422 and "newest" in bad.json()["detail"]
        bad = client.post("/admin/traffic", json={"weights": {"v77": 1}}, headers=AUTH)
        assert bad.status_code == 404


def test_a_reused_request_id_is_refused_and_a_second_label_is_an_update(home, reset_aliases):
    """One label per served row: a request id names one request (409 when reused), and a
    second label for a row updates it (the latest wins, the earlier is kept with its time)."""
    server = ModelServer(_config(home))
    labels = home["holdout"][TARGET].tolist()
    with TestClient(create_app(server)) as client:
        first = client.post("/predict", json={"records": _records(home, 2), "request_id": "o-1"})
        assert first.status_code == 200 and first.json()["request_id"] == "o-1"
        again = client.post("/predict", json={"records": _records(home, 1), "request_id": "o-1"})
        assert again.status_code == 409, again.text
        assert "'o-1' was already used" in again.json()["detail"]
        assert again.json()["field"] == "request_id"
        server.log.flush()  # written to the store: still refused (and after a restart)
        again = client.post("/predict", json={"records": _records(home, 1), "request_id": "o-1"})
        assert again.status_code == 409
        # a request refused for its records does not use up its id
        bad = client.post("/predict", json={"records": [{"age": "old"}], "request_id": "o-2"})
        assert bad.status_code == 422
        good = client.post("/predict", json={"records": _records(home, 1), "request_id": "o-2"})
        assert good.status_code == 200

        label, other = labels[0], 1 - int(labels[0])
        once = client.post("/feedback", json={"request_id": "o-1", "row": 0, "label": label})
        assert once.json() == {"stored": 1, "updated": False, "updated_rows": 0}
        twice = client.post(
            "/feedback",
            json=[
                {"request_id": "o-1", "row": 0, "label": other},
                {"request_id": "o-1", "row": 1, "label": label},
            ],
        )
        assert twice.json() == {"stored": 2, "updated": True, "updated_rows": 1}
        joined = server.log.joined()
        mine = joined[joined["request_id"] == "o-1"]
        assert sorted(mine["row"]) == [0, 1]  # each row once, however often labelled
        assert mine.set_index("row").loc[0, "label"] == other  # the latest label wins
        metrics = client.get("/feedback/metrics").json()
        assert metrics["labelled"] == len(joined)
    kept = PredictionLog(server.log.url)
    try:
        import sqlalchemy as sa

        with kept.engine.connect() as conn:
            history = conn.execute(
                sa.select(kept.feedback.c.label, kept.feedback.c.ts)
                .where(kept.feedback.c.request_id == "o-1", kept.feedback.c.row == 0)
                .order_by(kept.feedback.c.id)
            ).all()
        assert [json.loads(h.label) for h in history] == [label, other]
        assert history[0].ts <= history[1].ts
        assert not kept.claim("o-1")  # a restarted server still refuses it
        assert kept.claim("o-3") and not kept.claim("o-3")
    finally:
        kept.close()


def test_two_replicas_racing_on_one_request_id_answer_200_once_and_409_once(
    home, reset_aliases, tmp_path
):
    """Two server instances sharing one prediction log (replicas behind a balancer) get the
    same request id at the same moment: one scores it, the other refuses it."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    url = f"sqlite:///{tmp_path / 'shared-log.db'}"
    servers = [ModelServer(_config(home, prediction_log_url=url)) for _ in range(2)]
    ids = [f"twin-{i}" for i in range(20)]
    with TestClient(create_app(servers[0])) as a, TestClient(create_app(servers[1])) as b:
        both = Barrier(2)

        def send(client: TestClient, request_id: str) -> int:
            both.wait(10)
            body = {"records": _records(home, 1), "request_id": request_id}
            return client.post("/predict", json=body).status_code

        statuses = []
        with ThreadPoolExecutor(2) as pool:
            for request_id in ids:
                pair = [pool.submit(send, client, request_id) for client in (a, b)]
                statuses.append(sorted(f.result(30) for f in pair))
        for server in servers:
            server.log.flush()
    assert statuses == [[200, 409]] * len(ids)
    log = PredictionLog(url)
    try:
        served = log.read(SERVED)
    finally:
        log.close()
    assert sorted(served["request_id"]) == sorted(ids)  # each id served (and logged) once


def test_admin_routes_are_off_without_a_token(home, reset_aliases):
    config = _config(home, admin_token=None)
    with TestClient(create_app(ModelServer(config))) as client:
        answer = client.post("/admin/rollback", headers=AUTH)
        assert answer.status_code == 403 and "admin_token" in answer.json()["detail"]


def test_feedback_joins_labels_into_online_metrics(home, reset_aliases):
    v1, _, _ = home["versions"]
    holdout = home["holdout"]
    server = ModelServer(_config(home))
    with TestClient(create_app(server)) as client:
        sent = []
        for i in range(30):
            body = client.post("/predict", json={"records": _records(home, 1, i)}).json()
            sent.append((body["request_id"], body["predictions"][0], body["probabilities"][0]))
        batch = client.post("/predict", json={"records": _records(home, 4, 30)}).json()
        labels = holdout[TARGET].tolist()
        items = [{"request_id": rid, "label": labels[i]} for i, (rid, _, _) in enumerate(sent)]
        stored = client.post("/feedback", json=items)
        assert stored.status_code == 200
        assert stored.json() == {"stored": 30, "updated": False, "updated_rows": 0}
        one = client.post(
            "/feedback", json={"request_id": batch["request_id"], "row": 3, "label": labels[33]}
        )
        assert one.status_code == 200

        unknown = client.post("/feedback", json={"request_id": "nope", "label": 1})
        assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
        row = client.post(
            "/feedback", json={"request_id": batch["request_id"], "row": 9, "label": 1}
        )
        assert row.status_code == 422 and "row" in row.json()["detail"]
        label = client.post("/feedback", json={"request_id": sent[0][0], "label": "maybe"})
        assert label.status_code == 422 and "not a class" in label.json()["detail"]
        typed = client.post("/feedback", json={"request_id": sent[0][0], "label": [1]})
        assert typed.status_code == 422 and "label" in typed.json()["detail"]

        metrics = client.get("/feedback/metrics").json()
        mine = [
            m for m in metrics["versions"] if m["version"] == v1.version and m["role"] == SERVED
        ]
        joined = server.log.joined()
        joined = joined[joined["request_id"].isin([s[0] for s in sent] + [batch["request_id"]])]
        assert len(joined) == 31
        expected = online_metrics(joined, "binary")[0]
        truth = [labels[i] for i in range(30)] + [labels[33]]
        predicted = [p for _, p, _ in sent] + [batch["predictions"][3]]
        assert expected["accuracy"] == pytest.approx(np.mean(np.equal(truth, predicted)))
        assert mine[0]["labelled"] >= 31


def test_prediction_log_is_durable_after_shutdown(home, reset_aliases, tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    config = _config(home, prediction_log_url=url, log_flush_seconds=30)
    with TestClient(create_app(ModelServer(config))) as client:
        ids = [
            client.post("/predict", json={"records": _records(home, 2, i)}).json()["request_id"]
            for i in range(25)
        ]
    log = PredictionLog(url)
    logged = log.read()
    log.close()
    assert sorted(set(logged["request_id"])) == sorted(ids)
    assert len(logged) == 50
    first = logged.iloc[0]
    assert set(first["features"]) >= {"age", "income", "region"}
    assert first["version"] == home["versions"][0].version


def test_metrics_health_models_and_openapi(home, reset_aliases):
    with TestClient(create_app(ModelServer(_config(home, challenger_traffic=0.1)))) as client:
        for _ in range(5):
            client.post("/predict", json={"records": _records(home, 1)})
        text = client.get("/metrics").text
        assert "ctloop_request_latency_seconds_bucket" in text
        assert 'ctloop_predictions_total{role="served"' in text
        assert client.get("/health").json()["status"] == "ok"
        models = client.get("/models").json()["models"]
        assert {m["target"]: m["traffic"] for m in models} == {CHAMPION: 0.9, CHALLENGER: 0.1}
        spec = client.get("/openapi.json").json()
        record = spec["components"]["schemas"]["Record"]
        assert record["additionalProperties"] is False
        assert set(record["required"]) == {n for n, _ in home["versions"][0].signature}
        assert client.get("/docs").status_code == 200


def test_no_model_yet_is_503_not_a_crash(tmp_path):
    config = demo_config(str(tmp_path / "empty"))
    config.serving.poll_seconds = 3600
    with TestClient(create_app(ModelServer(config))) as client:
        assert client.get("/health").status_code == 503
        answer = client.post("/predict", json={"records": [GOOD]})
        assert answer.status_code == 503 and "champion" in answer.json()["detail"]


def test_cli_promote_and_rollback(home, reset_aliases):
    from typer.testing import CliRunner

    from ctloop.cli.main import app
    from ctloop.config.settings import CONFIG_FILENAME, dump_config

    v1, v2, v3 = home["versions"]
    runner = CliRunner()
    root = str(home["config"].paths.home)
    dump_config(home["config"], home["config"].paths.home / CONFIG_FILENAME)
    promoted = runner.invoke(app, ["promote", str(v2.version), "--home", root, "--json"])
    assert promoted.exit_code == 0, promoted.output
    assert json.loads(promoted.stdout.strip().splitlines()[-1])["champion"] == v2.version
    refused = runner.invoke(app, ["promote", str(v3.version), "--home", root])
    assert refused.exit_code != 0 and "warm-up" in refused.output
    back = runner.invoke(app, ["rollback", "--home", root, "--json"])
    assert back.exit_code == 0, back.output
    assert open_registry(home["config"]).by_alias(CHAMPION).version == v1.version


# -- schemathesis: every operation of the OpenAPI document, generated inputs, never a 5xx ------


def test_openapi_operations_never_answer_5xx(home, reset_aliases):
    """Schemathesis-generated valid and invalid inputs for every operation (admin: no token)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    server = ModelServer(_config(home, challenger_traffic=0.2, shadow=True)).start(watch=False)
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(server, manage=False))
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/predict", "/invocations", "/feedback"}
        statuses: Counter = Counter()
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=20,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def call(case):
                    response = case.call()
                    statuses[(case.path, response.status_code // 100)] += 1
                    assert response.status_code < 500, (
                        case.method,
                        case.path,
                        case.body,
                        response.text[:300],
                    )

                try:
                    call()
                except Unsatisfiable:  # no invalid input exists for a route without inputs
                    assert mode == GenerationMode.NEGATIVE
        # generated valid records are scored, generated invalid ones refused
        assert statuses[("/predict", 2)] > 0 and statuses[("/predict", 4)] > 0
        assert statuses[("/invocations", 2)] > 0 and statuses[("/invocations", 4)] > 0
    finally:
        server.stop()
