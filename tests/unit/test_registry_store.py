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


def test_a_version_loads_and_reads_from_its_own_store_whatever_mlflow_points_at(tmp_path, capfd):
    """A process worker that never pointed MLflow anywhere loads the champion from the store it
    names; MLflow's `models:/` resolution alone would read `./mlflow.db` (and not find it)."""
    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=200).fit(X, y)
    registry = Registry(f"sqlite:///{tmp_path / 'store.db'}", "iris", (tmp_path / "art").as_uri())
    run_id, model_uri = registry.log_candidate(
        pipeline=model,
        input_example=X.head(3),
        params={},
        metrics={"accuracy": 1.0},
        tags={},
        artifacts={"card.md": "# iris"},
    )
    capfd.readouterr()
    ref = registry.register(model_uri, run_id, {"semver": "1.0.0"})
    # MLflow's own registration lines (printed past its loggers) stay out of ctloop's output
    err = capfd.readouterr().err
    assert "Successfully registered" not in err and "Created version" not in err, err
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

    assert MLFLOW_LOGGING_STREAM.enabled  # and MLflow's stream is on again afterwards
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    elsewhere = tmp_path / "elsewhere.db"
    try:
        mlflow.set_tracking_uri(f"sqlite:///{elsewhere}")
        mlflow.set_registry_uri(f"sqlite:///{elsewhere}")
        loaded = registry.load(ref)
        card = registry.run_text(run_id, "card.md")
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    assert (loaded.predict(X) == model.predict(X)).all()
    assert card == "# iris"
    assert not elsewhere.exists()


def test_a_home_opens_its_registry_once_per_process_and_again_when_it_is_gone(tmp_path):
    import shutil

    from ctloop.config.settings import Config
    from ctloop.registry.store import open_registry

    config = Config.model_validate({"paths": {"home": str(tmp_path / "home")}})
    first = open_registry(config)
    assert open_registry(config) is first
    assert (tmp_path / "home" / "mlflow" / "artifacts").is_dir()
    other = Config.model_validate({"paths": {"home": str(tmp_path / "other")}})
    assert open_registry(other) is not first
    shutil.rmtree(tmp_path / "home")
    again = open_registry(config)
    assert again is not first
    assert (tmp_path / "home" / "mlflow" / "artifacts").is_dir()
