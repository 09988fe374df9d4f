"""The read-only registry view of `ctloop status`: the same answers as MLflow's, without it."""

from __future__ import annotations

import pytest

from ctloop.config.settings import load_config
from ctloop.names import CHALLENGER, CHAMPION
from ctloop.registry.view import SqliteRegistryView, open_registry_view, sqlite_file
from ctloop.stores.home import home_of


@pytest.fixture
def config(tmp_path):
    return load_config(overrides={"paths.home": str(tmp_path / "home")}, environ={})


def test_a_home_without_a_database_has_no_versions_and_stays_empty(config):
    view = open_registry_view(config)
    assert isinstance(view, SqliteRegistryView)
    assert view.by_alias(CHAMPION) is None and view.versions() == []
    assert not home_of(config).root.exists()  # read only: nothing created


def test_the_view_answers_like_mlflow(config):
    from ctloop.registry.store import open_registry

    registry = open_registry(config)
    client = registry.client
    name = config.registry_name
    client.create_registered_model(name)
    client.create_registered_model("other-project")
    for i in range(1, 5):
        client.create_model_version(
            name,
            f"file:///nowhere/{i}",
            tags={"semver": f"1.{i - 1}.0", "ctloop.trigger": "drift", "ctloop.snapshots": "a,b"},
        )
    client.create_model_version("other-project", "file:///nowhere/x", tags={"semver": "9.0.0"})
    client.create_model_version(name, "file:///nowhere/half-made", tags={"ctloop.trigger": "drift"})
    registry.set_alias(CHAMPION, 3)
    registry.set_alias(CHALLENGER, 4)
    registry.delete_version(2)

    view = open_registry_view(config)
    assert isinstance(view, SqliteRegistryView)
    assert view.tracking_uri == registry.tracking_uri
    assert view.versions() == registry.versions()
    assert [v.version for v in view.versions()] == [1, 3, 4]
    for alias in (CHAMPION, CHALLENGER, "nobody"):
        assert view.by_alias(alias) == registry.by_alias(alias)
    assert view.by_alias(CHAMPION).summary() == registry.by_alias(CHAMPION).summary()
    assert view.version(2) is None and view.version(4) == registry.version(4)


def test_other_stores_go_through_mlflow():
    assert sqlite_file("sqlite:////tmp/x/mlflow.db").as_posix() == "/tmp/x/mlflow.db"
    assert sqlite_file("http://mlflow:5000") is None
    assert sqlite_file("postgresql://db/mlflow") is None
