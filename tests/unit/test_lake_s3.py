"""The lake on S3: a moto S3 server on 127.0.0.1 (in this process, no network beyond localhost),
reached through s3fs with `paths.lake_options`."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pandas as pd
import pytest
from test_lake_fsspec import SCRIPT, without_arrival, write_day

from ctloop.data.demo import demo_config
from ctloop.ingest.stage import ingest_path
from ctloop.lake import snapshots as lake
from ctloop.stores.home import home_of
from ctloop.stores.storage import open_lake, tmp_name


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_lake(s3_endpoint):
    """A fresh bucket: (lake URL, storage options, the s3fs filesystem)."""
    import s3fs

    options = {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": s3_endpoint,
        "client_kwargs": {"region_name": "eu-west-1"},
    }
    fs = s3fs.S3FileSystem(**options)
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    return f"s3://{bucket}/ctloop", options, fs


def setup(root: Path, url: str | None, options: dict | None = None):
    config = demo_config(str(root), rows_per_day=SCRIPT.rows_per_day)
    config.paths.lake = url
    config.paths.lake_options = options or {}
    return config, home_of(config).ensure()


def objects(fs, url: str) -> dict[str, bytes]:
    fs.invalidate_cache()
    root = url.removeprefix("s3://")
    return {p[len(root) :]: fs.cat_file(p) for p in fs.find(root)}


def test_s3_lake_matches_the_local_lake(s3_lake, tmp_path):
    url, options, fs = s3_lake
    files = [write_day(tmp_path / "in", d) for d in (0, 1)]
    config, home = setup(tmp_path / "home", url, options)
    local_config, local = setup(tmp_path / "local", None)

    outcomes = [ingest_path(p, config, home) for p in (files[0], files[1], files[0])]
    for p in files:
        assert ingest_path(p, local_config, local).accepted

    assert [o.write.new for o in outcomes] == [True, True, False]
    remote, reference = lake.list_snapshots(home), lake.list_snapshots(local)
    assert [without_arrival(m) for m in remote] == [without_arrival(m) for m in reference]
    stored = objects(fs, url)
    assert {n for n in stored if n.startswith("/snapshots/")} == {
        f"/snapshots/{m.snapshot}.parquet" for m in remote
    }
    assert "/schema/schema-v1.json" in stored and not any(".tmp" in n for n in stored)
    ids = [m.snapshot for m in remote]
    pd.testing.assert_frame_equal(lake.load_snapshots(home, ids), lake.load_snapshots(local, ids))
    assert lake.current_schema(home) == lake.current_schema(local)

    dataset, _ = lake.mlflow_dataset(home, ids)
    assert json.loads(dataset.source.to_json())["uri"] == url + "/snapshots"
    assert dataset.digest == lake.describe_window(local, ids)["digest"]


def test_s3_exclusive_create_and_quarantine(s3_lake, tmp_path):
    url, options, fs = s3_lake
    config, home = setup(tmp_path / "home", url, options)
    assert ingest_path(write_day(tmp_path / "in", 0), config, home).accepted
    before = objects(fs, url)

    bad = ingest_path(write_day(tmp_path / "in", 1, broken=True), config, home)
    assert not bad.accepted and objects(fs, url) == before

    manifests = open_lake(home).manifests
    assert manifests.create_exclusive("claim.json", b"first") is True
    assert manifests.create_exclusive("claim.json", b"second") is False  # If-None-Match
    assert manifests.read_bytes("claim.json") == b"first"

    stale = tmp_name("staged.parquet").replace(f".{os.getpid()}.", ".999999999.")
    open_lake(home).snapshots.write_atomic(stale, b"half")
    assert lake.sweep_temporaries(home) == []  # young: another host may still be writing
    assert lake.sweep_temporaries(home, max_age_seconds=0) == [f"{url}/snapshots/{stale}"]
