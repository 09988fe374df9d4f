"""Serving under Prefect: the `score-batch` flow, and feedback rows going back through ingestion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from ctloop.data.demo import ID, TARGET, TIMESTAMP, DemoScript, demo_config, generate_day
from ctloop.lake import snapshots as lake
from ctloop.model.train import prepare_features
from ctloop.registry.store import CHAMPION, open_registry
from ctloop.serving.app import create_app
from ctloop.serving.sample import register_version
from ctloop.serving.server import ModelServer
from ctloop.stores.home import home_of
from ctloop.stores.predlog import labelled_rows

pytestmark = pytest.mark.slow
SCRIPT = DemoScript(rows_per_day=250)


def _day(folder, day, seed=0):
    frame = generate_day(SCRIPT, day, np.random.default_rng(seed + day))
    path = folder / f"day{day:02d}_labelled.csv"
    frame.to_csv(path, index=False)
    return frame, str(path)


@pytest.fixture(scope="module")
def lake_home(tmp_path_factory, prefect_harness):
    from flows.ingest import ingest

    folder = tmp_path_factory.mktemp("serving-flows")
    config = demo_config(str(folder / "home"), rows_per_day=SCRIPT.rows_per_day)
    days = [_day(folder, d) for d in range(4)]
    ingested = ingest([p for _, p in days], config)
    assert len(ingested["accepted"]) == 4
    frame = pd.concat([f for f, _ in days], ignore_index=True)
    ref = register_version(config, frame, params={"max_iter": 30}, alias=CHAMPION)
    return {"config": config, "folder": folder, "ref": ref}


def test_score_batch_flow_scores_a_file_and_a_snapshot(lake_home):
    from flows.score_batch import score_batch

    config, folder, ref = lake_home["config"], lake_home["folder"], lake_home["ref"]
    frame, path = _day(folder, 6, seed=3)
    out = folder / "scored.parquet"
    result = score_batch(path, str(out), config)
    assert result["rows"] == len(frame) and result["version"] == ref.version
    scored = pd.read_parquet(out)
    model = open_registry(config).load(ref)
    numeric = [n for n, k in ref.signature if k == "numeric"]
    categorical = [n for n, k in ref.signature if k == "categorical"]
    X = prepare_features(frame, numeric, categorical)
    assert scored[ID].tolist() == frame[ID].tolist()
    assert scored["prediction"].tolist() == model.predict(X).tolist()
    np.testing.assert_allclose(scored["probability"], model.predict_proba(X)[:, 1])

    snapshot = lake.list_snapshots(home_of(config))[0].snapshot
    csv_out = folder / "snapshot.csv"
    from_lake = score_batch(snapshot, str(csv_out), config)
    assert from_lake["rows"] == 250 and len(pd.read_csv(csv_out)) == 250

    with pytest.raises(Exception, match="neither a file nor a snapshot"):
        score_batch("no-such-thing", str(folder / "x.parquet"), config)


def test_feedback_rows_become_training_data_through_ingestion(lake_home):
    from flows.ingest import ingest

    config, folder = lake_home["config"], lake_home["folder"]
    config = config.model_copy(deep=True)
    config.serving.poll_seconds = 3600
    labelled, _ = _day(folder, 7, seed=11)
    server = ModelServer(config)
    with TestClient(create_app(server)) as client:
        features = labelled.drop(columns=[TARGET])
        features[TIMESTAMP] = features[TIMESTAMP].astype(str)
        answers = []
        for start in range(0, 250, 50):
            chunk = features.iloc[start : start + 50].to_dict(orient="records")
            answers.append(client.post("/predict", json={"records": chunk}).json())
        feedback = [
            {
                "request_id": a["request_id"],
                "row": i,
                "label": int(labelled[TARGET].iloc[k * 50 + i]),
            }
            for k, a in enumerate(answers)
            for i in range(50)
        ]
        assert client.post("/feedback", json=feedback).json()["stored"] == 250
        joined = server.log.joined()
    batch = labelled_rows(joined, TARGET, TIMESTAMP, ID)
    assert len(batch) == 250
    assert sorted(batch[ID]) == sorted(labelled[ID])
    assert set(batch.columns) == set(labelled.columns)
    path = folder / "feedback.csv"
    batch.to_csv(path, index=False)
    before = len(lake.list_snapshots(home_of(config)))
    result = ingest([str(path)], config)
    assert result["quarantined"] == [], result["quarantined"]
    assert result["accepted"][0]["rows"] == 250 and result["accepted"][0]["new"]
    assert len(lake.list_snapshots(home_of(config))) == before + 1
