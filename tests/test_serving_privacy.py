"""A passenger list with personal data, end to end: ingested (names, tickets, towns hashed),
trained without the identifying columns, served and batch-scored from raw rows.

The serving config names no id or timestamp (as when `ctloop serve` runs without the flags the
ingest was given): the lake's schema declares them.
"""

from __future__ import annotations

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from ctloop.config.settings import Config
from ctloop.data import privacy
from ctloop.ingest.stage import ingest_path
from ctloop.lake import snapshots as lake
from ctloop.model.train import prepare_features
from ctloop.registry.store import CHAMPION, open_registry
from ctloop.serving import batch
from ctloop.serving.app import create_app
from ctloop.serving.sample import passenger_frame, register_version
from ctloop.serving.server import ModelServer
from ctloop.stores.home import home_of
from ctloop.stores.predlog import PredictionLog
from ctloop.stores.storage import open_lake
from tasks.train import load_window


@pytest.fixture(scope="module")
def passengers(tmp_path_factory):
    root = tmp_path_factory.mktemp("passengers")
    config = Config.model_validate(
        {
            "project": "passengers",
            "dataset": {"target": "survived", "id": "passenger_id", "timestamp": "boarded"},
            "paths": {"home": str(root / "home")},
        }
    )
    raw = passenger_frame(400, seed=3)
    path = root / "passengers.csv"
    raw.to_csv(path, index=False)
    home = home_of(config)
    outcome = ingest_path(path, config, home)
    assert outcome.accepted, outcome
    ids = [m.snapshot for m in lake.list_snapshots(home)]
    frame = load_window.fn(ids, config)
    ref = register_version(config, frame, params={"max_iter": 30}, alias=CHAMPION)
    serving = config.model_copy(deep=True)
    serving.dataset.id = serving.dataset.timestamp = None
    serving.serving.poll_seconds = 3600
    serving.serving.prediction_log_url = f"sqlite:///{root / 'log.db'}"
    salt = open_lake(home).root.read_bytes("privacy.salt")
    return {
        "config": serving,
        "raw": raw,
        "path": path,
        "ref": ref,
        "salt": salt,
        "snapshot": lake.load_snapshots(home, ids),
    }


def _rows(raw: pd.DataFrame, n: int) -> list[dict]:
    frame = raw.drop(columns="survived").head(n)
    frame["boarded"] = frame["boarded"].astype(str)
    frame["vip"] = frame["vip"].astype(bool)
    return frame.to_dict(orient="records")


def test_the_lake_hashes_and_training_leaves_out_identifying_columns(passengers):
    schema = lake.current_schema(home_of(passengers["config"]))
    flagged = {c.name: (c.personal, c.handling) for c in schema.columns.values() if c.personal}
    assert flagged == {
        "name": ("name", "hash"),
        "ticket": ("ticket", "hash"),
        "home_town": ("place", "hash"),
    }
    snapshot = passengers["snapshot"]
    assert snapshot["name"].iloc[0] == privacy.hash_text(
        passengers["raw"]["name"].iloc[0], passengers["salt"]
    )
    features = {n for n, _ in passengers["ref"].signature}
    assert features == {"age", "pclass", "sex", "home_town", "vip"}


def test_full_raw_rows_are_served_with_their_ids_and_nothing_raw_is_logged(passengers):
    config, raw = passengers["config"], passengers["raw"]
    records = _rows(raw, 6)
    pipeline = open_registry(config).load(passengers["ref"])
    numeric = [n for n, k in passengers["ref"].signature if k == "numeric"]
    categorical = [n for n, k in passengers["ref"].signature if k == "categorical"]
    expected = pipeline.predict(
        prepare_features(passengers["snapshot"].head(6), numeric, categorical)
    ).tolist()
    with TestClient(create_app(ModelServer(config))) as client:
        answer = client.post("/predict", json={"records": records})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["id_column"] == "passenger_id"
        assert body["ids"] == raw["passenger_id"].head(6).tolist()
        assert body["predictions"] == expected  # the model saw the lake's hashes
        texts = [{**r, "vip": str(r["vip"]).lower()} for r in records]
        mlflow = client.post("/invocations", json={"dataframe_records": texts})
        assert mlflow.json() == {"predictions": expected}, mlflow.text
        unknown = client.post("/predict", json={"records": [{**records[0], "cabin": "C85"}]})
        assert unknown.status_code == 422
        assert unknown.json()["field"] == "records[0].cabin"
    log = PredictionLog(config.serving.prediction_log_url)
    logged = log.read()
    log.close()
    text = logged.to_json()
    for column in ("name", "ticket", "home_town"):
        assert not any(str(v) in text for v in raw[column].head(6)), column
    first = logged.sort_values(["request_id", "row"]).iloc[0]["features"]
    assert first["name"] == privacy.hash_text(raw["name"].iloc[0], passengers["salt"])
    assert first["passenger_id"] == raw["passenger_id"].iloc[0]


def test_score_keeps_the_declared_id_and_scores_raw_files_like_their_snapshot(passengers):
    config = passengers["config"]
    pipeline = open_registry(config).load(passengers["ref"])
    from_file = batch.score_batch_frame(
        pipeline,
        passengers["ref"],
        batch.read_scoring_input(str(passengers["path"]), config),
        config,
    ).frame
    snapshot = lake.list_snapshots(home_of(config))[0].snapshot
    from_lake = batch.score_batch_frame(
        pipeline, passengers["ref"], batch.read_scoring_input(snapshot, config), config
    ).frame
    assert list(from_file.columns[:2]) == ["passenger_id", "boarded"]
    assert from_file["passenger_id"].tolist() == passengers["raw"]["passenger_id"].tolist()
    pd.testing.assert_frame_equal(
        from_file.drop(columns="boarded"), from_lake.drop(columns="boarded")
    )
