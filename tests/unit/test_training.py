"""Training and evaluation: holdout splits, the three model families, metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctloop.config.settings import DatasetConfig, ModelFamily
from ctloop.data.demo import ID, TARGET, TIMESTAMP
from ctloop.errors import NotEnoughData
from ctloop.model.evaluate import calibration_error, evaluate_predictions, higher_is_better
from ctloop.model.train import (
    feature_columns,
    prepare_features,
    split_holdout,
    train_candidate,
)

FAMILIES = list(ModelFamily)


@pytest.fixture(scope="module")
def loans() -> pd.DataFrame:
    """Four stable demo days (1200 labelled rows), shuffled so order must come from the split."""
    from ctloop.data.demo import DemoScript, generate_day

    rng = np.random.default_rng(21)
    script = DemoScript(rows_per_day=300)
    frame = pd.concat([generate_day(script, d, rng) for d in range(4)], ignore_index=True)
    return frame.sample(frac=1.0, random_state=3).reset_index(drop=True)


def holdout_metrics(candidate, holdout, config):
    X = prepare_features(holdout, candidate.numeric, candidate.categorical)
    return evaluate_predictions(candidate.pipeline, X, holdout[config.dataset.target], config)


# --- split_holdout ------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.35])
def test_split_is_time_ordered_with_a_timestamp(loans, make_config, fraction):
    config = make_config(training={"holdout_fraction": fraction})
    split = split_holdout(loans, config)
    assert split.strategy == "time"
    assert split.holdout[TIMESTAMP].min() >= split.train[TIMESTAMP].max()
    assert len(split.train) + len(split.holdout) == len(loans)
    assert len(split.holdout) == pytest.approx(fraction * len(loans), abs=1)
    assert set(split.train[ID]).isdisjoint(split.holdout[ID])


def test_split_drops_unlabelled_rows(loans, config):
    frame = loans.copy()
    frame.loc[frame.index[:50], TARGET] = np.nan
    split = split_holdout(frame, config)
    assert len(split.train) + len(split.holdout) == len(loans) - 50
    assert split.train[TARGET].notna().all() and split.holdout[TARGET].notna().all()


@pytest.mark.parametrize("drop_timestamp_column", [True, False])
def test_split_is_stratified_without_a_timestamp(loans, make_config, drop_timestamp_column):
    if drop_timestamp_column:
        # timestamp configured, but the column is absent
        config, frame = make_config(), loans.drop(columns=[TIMESTAMP])
    else:
        config, frame = make_config(dataset={"timestamp": None}), loans
    # an unbalanced target makes stratification visible
    labels = np.zeros(len(frame), dtype=int)
    labels[:97] = 1
    frame = frame.assign(**{TARGET: np.random.default_rng(0).permutation(labels)})
    split = split_holdout(frame, config)
    assert split.strategy == "stratified"
    overall = frame[TARGET].mean()
    assert abs(split.holdout[TARGET].mean() - overall) <= 1 / len(split.holdout)
    assert abs(split.train[TARGET].mean() - overall) <= 1 / len(split.train)
    # deterministic for the seed
    again = split_holdout(frame, config)
    assert split.holdout.index.equals(again.holdout.index)


def test_split_random_when_a_class_is_too_rare(loans, make_config):
    config = make_config(dataset={"timestamp": None})
    frame = loans.assign(**{TARGET: 0})
    frame.loc[frame.index[0], TARGET] = 1
    assert split_holdout(frame, config).strategy == "random"


def test_split_needs_twenty_labelled_rows(loans, config):
    with pytest.raises(NotEnoughData, match="19 labelled rows"):
        split_holdout(loans.iloc[:19], config)
    assert split_holdout(loans.iloc[:20], config).strategy == "time"


# --- features and training ----------------------------------------------------------------


def test_feature_columns_skip_target_id_timestamp_and_excluded(loans):
    dataset = DatasetConfig(target=TARGET, timestamp=TIMESTAMP, id=ID, exclude=["region"])
    numeric, categorical = feature_columns(loans, dataset)
    assert numeric == ["age", "income", "loan_amount", "credit_score", "employment_years"]
    assert categorical == ["home_ownership", "purpose"]
    # a datetime column is never a feature, configured or not
    numeric, categorical = feature_columns(loans.assign(other_day=loans[TIMESTAMP]), dataset)
    assert "other_day" not in numeric + categorical


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_learns_the_demo_data(loans, make_config, family):
    config = make_config(training={"family": family.value})
    split = split_holdout(loans, config)
    candidate = train_candidate(split.train, config)
    assert candidate.train_rows == len(split.train)
    assert candidate.params["family"] == family.value
    assert set(candidate.features) == {
        "age",
        "income",
        "loan_amount",
        "credit_score",
        "employment_years",
        "home_ownership",
        "purpose",
        "region",
    }
    metrics = holdout_metrics(candidate, split.holdout, config)
    assert metrics["rows"] == len(split.holdout)
    assert metrics["roc_auc"] > 0.65
    assert metrics["pr_auc"] > split.holdout[TARGET].mean() + 0.1
    assert 0 <= metrics["brier"] < 0.25
    for name in ("accuracy", "precision", "recall", "f1", "calibration_error"):
        assert 0.0 <= metrics[name] <= 1.0


def test_shuffled_labels_do_not_learn(loans, make_config):
    """The AUC bar above can fail: the same pipeline on permuted labels stays near chance."""
    config = make_config(training={"family": "logistic_regression"})
    noise = loans.assign(**{TARGET: np.random.default_rng(8).permutation(loans[TARGET].to_numpy())})
    split = split_holdout(noise, config)
    metrics = holdout_metrics(train_candidate(split.train, config), split.holdout, config)
    assert metrics["roc_auc"] < 0.62


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_handles_unseen_categories_and_nans(loans, make_config, family):
    config = make_config(training={"family": family.value, "params": {}})
    split = split_holdout(loans, config)
    candidate = train_candidate(split.train, config)
    future = split.holdout.head(40).copy()
    future.loc[future.index[:10], "region"] = "atlantis"
    future.loc[future.index[5:15], "purpose"] = np.nan
    future.loc[future.index[10:20], "income"] = np.nan
    future["credit_score"] = future["credit_score"].astype(object)
    future.loc[future.index[20], "credit_score"] = "UNKNOWN"
    X = prepare_features(future, candidate.numeric, candidate.categorical)
    assert X["credit_score"].dtype == float and np.isnan(X["credit_score"].iloc[20])
    proba = candidate.pipeline.predict_proba(X)
    assert proba.shape == (40, 2)
    assert np.isfinite(proba).all()
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_prepare_features_adds_missing_columns_as_nan(loans):
    X = prepare_features(loans.drop(columns=["age"]).head(5), ["age", "income"], ["region"])
    assert list(X.columns) == ["age", "income", "region"]
    assert X["age"].isna().all() and X["income"].notna().all()


def test_single_class_target_is_not_enough(loans, config):
    with pytest.raises(NotEnoughData, match="single class"):
        train_candidate(loans.assign(**{TARGET: 0}), config)


def test_no_feature_columns_is_not_enough(loans, config):
    with pytest.raises(NotEnoughData, match="no feature columns"):
        train_candidate(loans[[ID, TIMESTAMP, TARGET]], config)


def test_params_reach_the_estimator(loans, make_config):
    config = make_config(training={"family": "random_forest", "params": {"n_estimators": 7}})
    candidate = train_candidate(loans.head(300), config)
    assert len(candidate.pipeline.named_steps["model"].estimators_) == 7
    assert candidate.params["n_estimators"] == 7


def test_seed_makes_training_reproducible(loans, make_config):
    config = make_config(training={"family": "random_forest", "params": {"n_estimators": 20}})
    split = split_holdout(loans, config)
    X = prepare_features(split.holdout, *feature_columns(loans, config.dataset))
    a = train_candidate(split.train, config).pipeline.predict_proba(X)
    b = train_candidate(split.train, config).pipeline.predict_proba(X)
    np.testing.assert_array_equal(a, b)


# --- regression and multiclass ------------------------------------------------------------


def regression_frame(rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    x1, x2 = rng.normal(size=rows), rng.uniform(-1, 1, rows)
    group = rng.choice(["a", "b", "c"], rows)
    y = 3 * x1 - 2 * x2 + np.select([group == "a", group == "b"], [2.0, -1.0], 0.0)
    return pd.DataFrame({"x1": x1, "x2": x2, "group": group, "y": y + rng.normal(0, 0.3, rows)})


@pytest.mark.parametrize("family", FAMILIES)
def test_regression_task(make_config, family):
    config = make_config(
        dataset={"target": "y", "task": "regression", "timestamp": None, "id": None},
        training={"family": family.value},
    )
    split = split_holdout(regression_frame(), config)
    assert split.strategy == "random"
    candidate = train_candidate(split.train, config)
    metrics = holdout_metrics(candidate, split.holdout, config)
    assert set(metrics) == {"rows", "rmse", "mae", "r2"}
    assert metrics["r2"] > 0.8
    assert 0 < metrics["mae"] <= metrics["rmse"]
    # the model beats predicting the training mean by far
    baseline = np.sqrt(((split.holdout["y"] - split.train["y"].mean()) ** 2).mean())
    assert metrics["rmse"] < 0.5 * baseline


def test_multiclass_task(make_config):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 2))
    label = np.select([x[:, 0] > 0.5, x[:, 1] > 0], ["high", "mid"], "low")
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "label": label})
    config = make_config(
        dataset={"target": "label", "task": "multiclass", "timestamp": None, "id": None},
        training={"family": "logistic_regression"},
    )
    split = split_holdout(frame, config)
    metrics = holdout_metrics(train_candidate(split.train, config), split.holdout, config)
    assert "f1_macro" in metrics and "precision" not in metrics
    assert metrics["roc_auc"] > 0.9
    assert metrics["accuracy"] > 0.8


# --- metrics ------------------------------------------------------------------------------


def test_calibration_error_is_zero_when_perfectly_calibrated():
    # in every bin, the share of positives equals the predicted probability
    proba, labels = [], []
    for p in np.arange(0.05, 1.0, 0.1):
        n_pos = int(round(p * 20))
        proba += [p] * 20
        labels += [1] * n_pos + [0] * (20 - n_pos)
    assert calibration_error(np.array(labels), np.array(proba)) == pytest.approx(0.0, abs=1e-12)


def test_calibration_error_is_large_when_inverted():
    proba = np.array([0.05] * 50 + [0.95] * 50)
    inverted = np.array([1] * 50 + [0] * 50)
    assert calibration_error(inverted, proba) == pytest.approx(0.95)
    assert calibration_error(1 - inverted, proba) == pytest.approx(0.05)


def test_calibration_error_handles_the_edges():
    y = np.array([0, 1, 1, 0])
    proba = np.array([0.0, 1.0, 1.0, 0.0])
    assert calibration_error(y, proba) == 0.0
    assert calibration_error(1 - y, proba) == 1.0


def test_well_calibrated_random_labels_have_small_error():
    rng = np.random.default_rng(0)
    proba = rng.uniform(size=20_000)
    y = (rng.uniform(size=proba.size) < proba).astype(int)
    assert calibration_error(y, proba) < 0.02
    assert calibration_error(y, np.clip(proba + 0.3, 0, 1)) > 0.2


@pytest.mark.parametrize(
    ("metric", "higher"),
    [
        ("roc_auc", True),
        ("accuracy", True),
        ("r2", True),
        ("log_loss", False),
        ("rmse", False),
        ("mae", False),
        ("brier", False),
        ("calibration_error", False),
    ],
)
def test_metric_direction(metric, higher):
    assert higher_is_better(metric) is higher
