"""Model behavioural tests on data ctloop did not make (datasets inside scikit-learn's wheel).

Three kinds, after Made-With-ML's `tests/model`: minimum functionality (the trained pipeline
beats a trivial baseline on a holdout, for every task and family), invariance (what is not a
feature cannot move a prediction; neither can row or column order, nor an unseen category), and
direction (a known relation of the data moves the prediction the known way).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets

from ctloop.config.settings import Config, ModelFamily, Task
from ctloop.model.evaluate import evaluate_predictions
from ctloop.model.train import prepare_features, train_candidate


def _frame(loader, target: str = "label") -> pd.DataFrame:
    bunch = loader(as_frame=True)
    frame = bunch.frame.rename(columns={bunch.target.name: target})
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def _config(task: Task, family: ModelFamily = ModelFamily.HIST_GRADIENT_BOOSTING, **dataset):
    data = {"target": "label", "task": task.value, **dataset}
    # fewer boosting rounds than the default: a few hundred rows need no more to show behaviour
    params = {"max_iter": 60} if family == ModelFamily.HIST_GRADIENT_BOOSTING else {}
    return Config.model_validate(
        {"dataset": data, "training": {"family": family.value, "params": params}}
    )


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    """Binary: 569 tumours, label 1 = benign."""
    return _frame(datasets.load_breast_cancer)


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    """Multiclass: 178 wines of three cultivars."""
    return _frame(datasets.load_wine)


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    """Regression: disease progression of 442 patients."""
    return _frame(datasets.load_diabetes)


def _fit(frame: pd.DataFrame, config: Config, train_share: float = 0.7):
    cut = int(len(frame) * train_share)
    train, holdout = frame.iloc[:cut], frame.iloc[cut:]
    candidate = train_candidate(train, config)
    X = prepare_features(holdout, candidate.numeric, candidate.categorical)
    return candidate, holdout, evaluate_predictions(candidate.pipeline, X, holdout["label"], config)


# --- minimum functionality ---------------------------------------------------------------


@pytest.mark.parametrize("family", list(ModelFamily))
def test_binary_beats_chance_by_far(cancer, family):
    _, holdout, metrics = _fit(cancer, _config(Task.BINARY, family))
    majority = max(holdout["label"].mean(), 1 - holdout["label"].mean())
    assert metrics["roc_auc"] > 0.95
    assert metrics["accuracy"] > majority + 0.2


@pytest.mark.parametrize("family", list(ModelFamily))
def test_multiclass_beats_the_majority_class(wine, family):
    _, holdout, metrics = _fit(wine, _config(Task.MULTICLASS, family))
    majority = holdout["label"].value_counts(normalize=True).max()
    assert metrics["accuracy"] > majority + 0.3
    assert metrics["f1_macro"] > 0.8


@pytest.mark.parametrize("family", list(ModelFamily))
def test_regression_beats_predicting_the_mean(diabetes, family):
    _, holdout, metrics = _fit(diabetes, _config(Task.REGRESSION, family))
    baseline = float(np.sqrt(((holdout["label"] - holdout["label"].mean()) ** 2).mean()))
    assert metrics["rmse"] < 0.9 * baseline
    assert metrics["r2"] > 0.2


# --- invariance --------------------------------------------------------------------------


def test_non_features_cannot_move_a_prediction(cancer):
    frame = cancer.assign(
        patient=np.arange(len(cancer)),
        seen_at=pd.date_range("2026-01-01", periods=len(cancer), freq="h"),
        note="a",
    )
    config = _config(Task.BINARY, id="patient", timestamp="seen_at", exclude="note")
    candidate, holdout, _ = _fit(frame, config)
    assert not {"patient", "seen_at", "note"} & set(candidate.features)
    scrambled = holdout.assign(patient=-1, seen_at=pd.Timestamp("1999-01-01"), note="zzz")
    before = candidate.pipeline.predict_proba(
        prepare_features(holdout, candidate.numeric, candidate.categorical)
    )
    after = candidate.pipeline.predict_proba(
        prepare_features(scrambled, candidate.numeric, candidate.categorical)
    )
    np.testing.assert_array_equal(before, after)


def test_row_and_column_order_cannot_move_a_prediction(wine):
    candidate, holdout, _ = _fit(wine, _config(Task.MULTICLASS))
    X = prepare_features(holdout, candidate.numeric, candidate.categorical)
    base = candidate.pipeline.predict_proba(X)
    shuffled = holdout.iloc[::-1][list(reversed(holdout.columns))]
    again = candidate.pipeline.predict_proba(
        prepare_features(shuffled, candidate.numeric, candidate.categorical)
    )
    np.testing.assert_allclose(again[::-1], base)
    np.testing.assert_allclose(base.sum(axis=1), 1.0)


def test_an_unseen_category_or_a_missing_value_still_gives_a_probability(cancer):
    rng = np.random.default_rng(3)
    frame = cancer.assign(site=rng.choice(["north", "south", "east"], size=len(cancer)))
    candidate, holdout, _ = _fit(frame, _config(Task.BINARY))
    assert "site" in candidate.categorical
    odd = holdout.head(20).assign(site="never-seen")
    odd.loc[odd.index[:5], "mean radius"] = np.nan
    proba = candidate.pipeline.predict_proba(
        prepare_features(odd, candidate.numeric, candidate.categorical)
    )
    assert np.isfinite(proba).all() and ((proba >= 0) & (proba <= 1)).all()


# --- direction ---------------------------------------------------------------------------


def test_larger_tumours_look_less_benign(cancer):
    # size, concavity and texture all mark malignancy in this data (label 1 = benign)
    config = _config(Task.BINARY, ModelFamily.LOGISTIC_REGRESSION)
    candidate, holdout, _ = _fit(cancer, config)
    worse = holdout.copy()
    for name in ("worst radius", "worst concave points", "worst texture"):
        worse[name] = worse[name] + 2 * cancer[name].std()
    p_before = candidate.pipeline.predict_proba(
        prepare_features(holdout, candidate.numeric, candidate.categorical)
    )[:, 1]
    p_after = candidate.pipeline.predict_proba(
        prepare_features(worse, candidate.numeric, candidate.categorical)
    )[:, 1]
    assert p_after.mean() < p_before.mean() - 0.1
    assert (p_after <= p_before + 1e-9).mean() > 0.95


def test_a_higher_body_mass_index_predicts_faster_progression(diabetes):
    config = _config(Task.REGRESSION, ModelFamily.LOGISTIC_REGRESSION)  # ridge for regression
    candidate, holdout, _ = _fit(diabetes, config)
    heavier = holdout.assign(bmi=holdout["bmi"] + 2 * diabetes["bmi"].std())
    before = candidate.pipeline.predict(
        prepare_features(holdout, candidate.numeric, candidate.categorical)
    )
    after = candidate.pipeline.predict(
        prepare_features(heavier, candidate.numeric, candidate.categorical)
    )
    assert (after > before).all()
    assert (after - before).mean() > 0.2 * diabetes["label"].std()
