"""A version's estimator on models trained through the pure core (scikit-learn's own datasets):
fitted on the holdout, cached and read back, the metric chosen, versions resolved."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets

from ctloop.config.settings import Config, Task
from ctloop.errors import InputError
from ctloop.model.evaluate import evaluate_predictions
from ctloop.model.train import prepare_features, split_holdout, train_candidate
from ctloop.registry.estimator import (
    choose_metric,
    estimate_frame,
    fit_estimator,
    load_estimator,
    resolve_version,
    save_estimator,
    signature_inputs,
)


def _trained(loader, task: Task):
    bunch = loader(as_frame=True)
    frame = bunch.frame.rename(columns={bunch.target.name: "label"})
    config = Config.model_validate(
        {
            "dataset": {"target": "label", "task": task.value},
            "training": {"family": "hist_gradient_boosting", "params": {"max_iter": 40}},
        }
    )
    split = split_holdout(frame, config)
    candidate = train_candidate(split.train, config)
    X = prepare_features(split.holdout, candidate.numeric, candidate.categorical)
    return config, candidate, X, split.holdout["label"].reset_index(drop=True)


@pytest.fixture(scope="module")
def wine():
    return _trained(datasets.load_wine, Task.MULTICLASS)


@pytest.fixture(scope="module")
def diabetes():
    config, candidate, X, y = _trained(datasets.load_diabetes, Task.REGRESSION)
    estimator = fit_estimator(candidate.pipeline, X, y, Task.REGRESSION, version=1, run_id="r")
    return candidate, X, y, estimator


def test_multiclass_estimator_fits_on_the_holdout_and_survives_the_cache(wine, tmp_path):
    config, candidate, X, y = wine
    estimator = fit_estimator(candidate.pipeline, X, y, Task.MULTICLASS, version=3, run_id="r1")
    assert estimator.calibrator.classes == [0, 1, 2]
    assert estimator.reference == evaluate_predictions(candidate.pipeline, X, y, config)
    assert estimator.holdout_rows == len(X)

    save_estimator(estimator, tmp_path, "wine")
    assert (tmp_path / "estimators" / "wine-v3.json").is_file()
    again = load_estimator(tmp_path, "wine", 3, "r1")
    assert again == estimator
    assert load_estimator(tmp_path, "wine", 3, "another-run") is None  # a home made anew
    assert load_estimator(tmp_path, "wine", 4, "r1") is None

    answer = estimate_frame(estimator, candidate.pipeline, X, "accuracy", chunk_rows=20, labels=y)
    assert [(c["start"], c["end"], c["rows"]) for c in answer["chunks"]] == [
        (0, 19, 20),
        (20, len(X) - 1, len(X) - 20),
    ]
    assert answer["reference"] == estimator.reference["accuracy"]
    assert answer["realized"] == pytest.approx(estimator.reference["accuracy"])
    # on the rows it was calibrated on, the estimate is near the truth
    assert answer["ci_low"] - 0.05 <= answer["realized"] <= answer["ci_high"] + 0.05


def test_chunks_are_named_by_timestamps_in_time_order(wine):
    _config, candidate, X, y = wine
    estimator = fit_estimator(candidate.pipeline, X, y, Task.MULTICLASS)
    times = pd.Series(pd.date_range("2026-01-01", periods=len(X), freq="h")[::-1])
    answer = estimate_frame(
        estimator, candidate.pipeline, X, "f1_macro", chunk_rows=len(X), starts=times
    )
    (chunk,) = answer["chunks"]
    assert chunk["start"] == str(times.min()) and chunk["end"] == str(times.max())
    eps = 1e-12  # a chunk whose draws all agree: percentiles and mean differ in the last bit
    assert 0 <= chunk["ci_low"] - eps <= chunk["estimate"] <= chunk["ci_high"] + eps <= 1 + eps


def test_regression_loss_model_round_trips_through_skops(diabetes, tmp_path):
    candidate, X, y, estimator = diabetes
    save_estimator(estimator, tmp_path, "diabetes")
    again = load_estimator(tmp_path, "diabetes", 1, "r")
    assert again is not None and again.loss.columns == estimator.loss.columns
    first = estimate_frame(estimator, candidate.pipeline, X, "mae", chunk_rows=50, labels=y)
    second = estimate_frame(again, candidate.pipeline, X, "mae", chunk_rows=50, labels=y)
    assert first == second
    assert first["realized"] == pytest.approx(estimator.reference["mae"])
    assert abs(first["estimate"] - first["realized"]) < 0.25 * first["realized"]


def test_a_cache_that_asks_to_trust_unknown_types_is_refitted(diabetes, tmp_path, monkeypatch):
    _candidate, _X, _y, estimator = diabetes
    save_estimator(estimator, tmp_path, "diabetes")
    monkeypatch.setattr("ctloop.registry.estimator.LOSS_TYPES", frozenset())
    assert load_estimator(tmp_path, "diabetes", 1, "r") is None


def test_metric_is_the_requested_one_else_the_primary_else_the_task_default():
    assert choose_metric(Task.BINARY, None, "roc_auc") == "roc_auc"
    assert choose_metric(Task.BINARY, "f1", "roc_auc") == "f1"
    assert choose_metric(Task.BINARY, None, "log_loss") == "roc_auc"
    assert choose_metric(Task.MULTICLASS, None, "log_loss") == "accuracy"
    assert choose_metric(Task.REGRESSION, None, "roc_auc") == "rmse"
    with pytest.raises(InputError, match="--metric mae: no label-free estimate for a binary"):
        choose_metric(Task.BINARY, "mae", "roc_auc")


def test_missing_feature_columns_are_named():
    frame = pd.DataFrame({"a": [1.0], "c": ["x"]})
    signature = [["a", "numeric"], ["b", "numeric"], ["c", "categorical"], ["d", "boolean"]]
    with pytest.raises(InputError, match="lacks feature column\\(s\\) b, d of version 7"):
        signature_inputs(frame, signature, 7)
    X = signature_inputs(frame.assign(b="2", d=True), signature, 7)
    assert list(X.columns) == ["a", "b", "c", "d"] and X["b"].dtype == np.float64


class _Registry:
    def __init__(self):
        self.refs = [
            SimpleNamespace(version=1, semver="1.0.0"),
            SimpleNamespace(version=2, semver="1.1.0"),
        ]

    def version(self, n):
        return next((r for r in self.refs if r.version == n), None)

    def versions(self):
        return self.refs

    def by_alias(self, alias):
        return self.refs[-1] if alias == "champion" and self.refs else None


@pytest.mark.parametrize(
    ("text", "version"), [(None, 2), ("1", 1), ("v1", 1), ("1.1.0", 2), ("champion", 2)]
)
def test_versions_resolve_by_number_semver_or_alias(text, version):
    assert resolve_version(_Registry(), text).version == version


def test_an_unknown_version_or_no_champion_is_one_clear_error():
    with pytest.raises(InputError, match=r"version v9: no such version \(registered: v1, v2\)"):
        resolve_version(_Registry(), "v9")
    empty = _Registry()
    empty.refs = []
    with pytest.raises(InputError, match="version champion: no champion yet"):
        resolve_version(empty, None)
