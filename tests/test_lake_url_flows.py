"""The ingest and retrain flows with the lake on a `file://` URL outside the home: snapshots land
under the URL, training reads them, and the MLflow input dataset names the URL as its source."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctloop.data.demo import DemoScript, demo_config, generate_day
from ctloop.lake import snapshots as lake
from ctloop.registry.store import CHAMPION, open_registry
from ctloop.stores.home import home_of

pytestmark = pytest.mark.slow

SCRIPT = DemoScript(rows_per_day=250)


def _write_day(folder, day):
    frame = generate_day(SCRIPT, day, np.random.default_rng(day))
    path = folder / f"day{day:02d}.csv"
    frame.to_csv(path, index=False)
    return str(path)


def test_ingest_and_retrain_on_a_file_url_lake(prefect_harness, tmp_path):
    from flows.ingest import ingest
    from flows.retrain import RetrainRequest, retrain

    url = (tmp_path / "shared" / "lake").as_uri()
    config = demo_config(str(tmp_path / "home"), rows_per_day=SCRIPT.rows_per_day)
    config.paths.lake = url
    home = home_of(config)

    files = [_write_day(tmp_path, d) for d in range(5)]
    ingested = ingest([*files, files[0]], config)
    assert [a["new"] for a in ingested["accepted"]] == [True] * 5 + [False]
    assert len(lake.list_snapshots(home)) == 5
    assert len(list((tmp_path / "shared" / "lake" / "manifests").glob("*.json"))) == 5
    assert not (home.root / "lake").exists()

    result = retrain(RetrainRequest(reason="lake on a URL"), config)
    assert result["promoted"], result["reasons"]
    registry = open_registry(config)
    assert registry.by_alias(CHAMPION).version == result["version"]
    inputs = registry.client.get_run(result["run_id"]).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert json.loads(dataset.source)["uri"] == url + "/snapshots"
    assert dataset.digest == lake.describe_window(home, result["snapshots"])["digest"]
