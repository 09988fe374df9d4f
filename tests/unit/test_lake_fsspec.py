"""The lake on fsspec URLs (memory://, file://): the same snapshots, manifests, windows and
schema versions as the local-folder lake, and a quarantined batch leaves the lake unchanged."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest

from ctloop.config.settings import load_config
from ctloop.data.demo import DemoScript, corrupt, demo_config, generate_day
from ctloop.data.schema import load_latest_schema, save_schema, save_schema_if_absent
from ctloop.errors import ConfigError, LakeNotLocal
from ctloop.ingest.stage import ingest_path
from ctloop.lake import snapshots as lake
from ctloop.stores.home import Home, home_of
from ctloop.stores.storage import open_lake, tmp_name

SCRIPT = DemoScript(rows_per_day=300)


def write_day(folder: Path, d: int, broken: bool = False) -> Path:
    frame = generate_day(SCRIPT, d, np.random.default_rng(d))
    if broken:
        frame = corrupt(frame, np.random.default_rng(5))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"day{d:02d}{'_bad' if broken else ''}.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(params=["memory", "file"])
def lake_url(request, tmp_path):
    """A lake URL: an in-process memory filesystem, or a `file://` URL of a temporary folder."""
    if request.param == "file":
        yield (tmp_path / "url-lake").as_uri()
        return
    name = f"lake-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    memory = fsspec.filesystem("memory")
    if memory.exists(f"/{name}"):
        memory.rm(f"/{name}", recursive=True)


def home_with_lake(root: Path, url: str | None) -> tuple:
    config = demo_config(str(root), rows_per_day=SCRIPT.rows_per_day)
    config.paths.lake = url
    return config, home_of(config).ensure()


def lake_objects(url: str) -> dict[str, bytes]:
    """Every object under the lake URL with its bytes."""
    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return {p[len(root) :]: fs.cat_file(p) for p in fs.find(root)}


def without_arrival(manifest: lake.Manifest) -> dict:
    data = asdict(manifest)
    data.pop("arrived_at")
    return data


def test_url_lake_holds_the_same_snapshots_as_a_local_lake(lake_url, tmp_path):
    files = [write_day(tmp_path / "in", d) for d in (0, 1)]
    config, home = home_with_lake(tmp_path / "home", lake_url)
    local_config, local = home_with_lake(tmp_path / "local-home", None)

    outcomes = [ingest_path(p, config, home) for p in (files[0], files[1], files[0])]
    for p in files:
        assert ingest_path(p, local_config, local).accepted

    assert [o.accepted for o in outcomes] == [True, True, True]
    assert [o.write.new for o in outcomes] == [True, True, False]
    remote = lake.list_snapshots(home)
    reference = lake.list_snapshots(local)
    assert len(remote) == 2
    # same content hashes, same manifests apart from when they arrived
    assert [m.sha256 for m in remote] == [m.sha256 for m in reference]
    assert [without_arrival(m) for m in remote] == [without_arrival(m) for m in reference]
    # the data lives under the URL, not in the home
    names = set(lake_objects(lake_url))
    for m in remote:
        assert f"/snapshots/{m.snapshot}.parquet" in names
        assert f"/manifests/{m.snapshot}.json" in names
    assert not (home.root / "lake").exists()
    assert not any(".tmp" in n for n in names)

    # windows: the same ids, frames, digests
    ids = lake.select_window(remote, window_days=1)
    assert ids == lake.select_window(reference, window_days=1) and len(ids) == 1
    every = [m.snapshot for m in remote]
    frame = lake.load_snapshots(home, every)
    pd.testing.assert_frame_equal(frame, lake.load_snapshots(local, every))
    assert lake.window_digest(remote) == lake.window_digest(reference)
    described = lake.describe_window(home, every)
    expected = lake.describe_window(local, every)
    assert described["digest"] == expected["digest"]
    assert {k: v for k, v in described.items() if k not in ("source", "manifests")} == {
        k: v for k, v in expected.items() if k not in ("source", "manifests")
    }
    assert lake.has_snapshot(home, every[0]) and not lake.has_snapshot(home, "0" * 16)
    with pytest.raises(Exception, match="missing from the lake"):
        lake.load_snapshots(home, ["0" * 16])


def test_the_window_source_is_the_lake_url(lake_url, tmp_path):
    config, home = home_with_lake(tmp_path / "home", lake_url)
    assert ingest_path(write_day(tmp_path / "in", 0), config, home).accepted
    ids = [m.snapshot for m in lake.list_snapshots(home)]

    source = lake.describe_window(home, ids)["source"]
    if lake_url.startswith("file://"):
        assert source == lake_url + "/snapshots"
    else:
        assert source == "memory:///" + lake_url.removeprefix("memory://") + "/snapshots"
    dataset, profile = lake.mlflow_dataset(home, ids)
    assert json.loads(dataset.source.to_json())["uri"] == source
    assert dataset.digest == lake.describe_window(home, ids)["digest"]
    assert profile["snapshots"] == ids


def test_schema_versions_are_stored_and_read_in_the_url_lake(lake_url, tmp_path):
    config, home = home_with_lake(tmp_path / "home", lake_url)
    local_config, local = home_with_lake(tmp_path / "local-home", None)
    path = write_day(tmp_path / "in", 0)
    assert lake.current_schema(home) is None
    assert ingest_path(path, config, home).accepted
    assert ingest_path(path, local_config, local).accepted

    first = lake.current_schema(home)
    assert first == load_latest_schema(local.schema_dir) and first.version == 1
    assert "/schema/schema-v1.json" in lake_objects(lake_url)
    # a salt for hashed personal data is kept in the lake too (shared by every writer)
    if any(c.handling == "hash" for c in first.columns.values()):
        assert "/privacy.salt" in lake_objects(lake_url)

    folder = open_lake(home).schema
    other = type(first)(1, first.target, first.task, {}, {})
    assert save_schema_if_absent(other, folder) == first  # v1 exists: the stored one wins
    second = type(first)(2, first.target, first.task, first.columns, first.class_shares)
    where = save_schema(second, folder)
    assert str(where).endswith("schema-v2.json")
    assert lake.current_schema(home) == second
    assert lake.schema_location(home, 2).endswith("/schema/schema-v2.json")


def test_a_quarantined_batch_leaves_the_url_lake_unchanged(lake_url, tmp_path):
    config, home = home_with_lake(tmp_path / "home", lake_url)
    assert ingest_path(write_day(tmp_path / "in", 0), config, home).accepted
    before = lake_objects(lake_url)

    bad = ingest_path(write_day(tmp_path / "in", 1, broken=True), config, home)

    assert not bad.accepted
    assert lake_objects(lake_url) == before  # no snapshot, manifest or temporary left
    assert len(lake.list_snapshots(home)) == 1
    record = lake.list_quarantined(home)[0]
    assert Path(record.folder).parent == home.quarantine  # quarantine stays local
    assert (Path(record.folder) / "day01_bad.csv").is_file()


def test_sweep_on_a_url_lake_removes_stale_temporaries_only(lake_url, tmp_path):
    _config, home = home_with_lake(tmp_path / "home", lake_url)
    assert lake.sweep_temporaries(home) == []  # an empty lake: nothing, no error
    folder = open_lake(home).snapshots
    dead = tmp_name("staged.parquet").replace(f".{os.getpid()}.", ".999999999.")
    folder.write_atomic(dead, b"half a parquet file")
    folder.write_atomic("keep.parquet", b"data")

    if lake_url.startswith("file://"):  # a local folder: the writer's pid decides
        removed = lake.sweep_temporaries(home)
    else:  # remote: another host's pid cannot be checked, so the age decides
        assert lake.sweep_temporaries(home) == []
        removed = lake.sweep_temporaries(home, max_age_seconds=0)
    assert len(removed) == 1 and removed[0].endswith(dead)
    assert folder.names() == ["keep.parquet"]


def test_a_memory_lake_is_not_a_local_folder(tmp_path):
    _config, home = home_with_lake(tmp_path / "home", "memory://elsewhere")
    with pytest.raises(LakeNotLocal, match="memory://elsewhere"):
        _ = home.snapshots
    url = (tmp_path / "x").as_uri()
    assert home_with_lake(tmp_path / "home", url)[1].snapshots == tmp_path / "x" / "snapshots"
    # the default lake is unchanged: <home>/lake
    assert Home(tmp_path).lake_url == str(tmp_path / "lake")


def test_paths_lake_from_the_environment_and_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={"CTLOOP_LAKE": "memory://from-env"})
    assert config.paths.lake == "memory://from-env"
    assert home_of(config).lake_url == "memory://from-env"
    relative = load_config(overrides={"paths.lake": "data/lake"})
    assert home_of(relative).lake_url == str(tmp_path / "data" / "lake")
    assert home_of(load_config(environ={})).lake_url == str(tmp_path / ".ctloop" / "lake")
    with pytest.raises(ConfigError, match="paths.lake.*nosuchfs"):
        load_config(overrides={"paths.lake": "nosuchfs://bucket/lake"})


def test_sweep_on_a_url_lake_that_cannot_be_listed_is_a_no_op(tmp_path, monkeypatch):
    _config, home = home_with_lake(tmp_path / "home", "memory://no-listing")
    fs = open_lake(home).root.fs

    def denied(*args, **kwargs):
        raise PermissionError("s3:ListBucket denied")

    monkeypatch.setattr(fs, "ls", denied)
    assert lake.sweep_temporaries(home) == []


def test_batch_scoring_reads_a_snapshot_by_id_from_a_url_lake(lake_url, tmp_path):
    from ctloop.errors import InputError
    from ctloop.serving.batch import read_scoring_input

    config, home = home_with_lake(tmp_path / "home", lake_url)
    outcome = ingest_path(write_day(tmp_path / "in", 0), config, home)
    frame = read_scoring_input(outcome.write.manifest.snapshot, config)
    assert len(frame) == SCRIPT.rows_per_day
    with pytest.raises(InputError, match=lake_url.split("://")[0]):
        read_scoring_input("0" * 16, config)
