"""The MLflow edge keeps to its own store: opening one changes nothing process-wide."""

from __future__ import annotations

from ctloop.registry.store import Registry


def test_opening_registries_leaves_mlflows_process_uris_alone(tmp_path):
    import mlflow

    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    first = Registry(f"sqlite:///{tmp_path / 'a.db'}", "first")
    second = Registry(f"sqlite:///{tmp_path / 'b.db'}", "second")
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == before
    # each answers from its own store
    first.experiment_id()
    assert first.client.get_experiment_by_name("first") is not None
    assert second.client.get_experiment_by_name("first") is None
