"""Model layer, pure core: tuning folds and studies, analysis, safe loading, private training."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from ctloop.config.settings import Config
from ctloop.data.demo import ID, TARGET, TIMESTAMP, DemoScript, generate_day
from ctloop.errors import ConfigError, CtloopError
from ctloop.model.train import split_holdout, train_candidate, validation_folds


def loan_config(**sections) -> Config:
    data: dict = {"dataset": {"target": TARGET, "timestamp": TIMESTAMP, "id": ID}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return Config.model_validate(data)


@pytest.fixture(scope="module")
def loans() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    script = DemoScript(rows_per_day=200)
    frame = pd.concat([generate_day(script, d, rng) for d in range(4)], ignore_index=True)
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)


# --- tuning -------------------------------------------------------------------------------


def test_time_folds_fit_on_the_past_and_stay_inside_the_training_part(loans):
    config = loan_config()
    split = split_holdout(loans, config)
    folds = validation_folds(split.train, config, 3)
    assert len(folds) == 3
    times = split.train[TIMESTAMP].to_numpy()
    for fit, val in folds:
        assert times[fit].max() <= times[val].min()
        assert set(fit).isdisjoint(val)
        assert max(fit.max(), val.max()) < len(split.train)
    # expanding: each fold fits on more of the past
    assert [len(f) for f, _ in folds] == sorted(len(f) for f, _ in folds)
    # the holdout is later than every validation row of tuning
    assert split.holdout[TIMESTAMP].min() >= split.train[TIMESTAMP].max()


def test_folds_are_stratified_without_a_timestamp(loans):
    config = loan_config(dataset={"timestamp": None})
    folds = validation_folds(loans, config, 4)
    share = loans[TARGET].mean()
    for _, val in folds:
        assert abs(loans[TARGET].iloc[val].mean() - share) < 0.02


def test_study_in_two_processes_shares_one_journal_and_warm_starts(loans, tmp_path):
    from ctloop.config.settings import ModelFamily, Task
    from ctloop.model.tune import open_storage, tune, warm_start_trial

    config = loan_config(
        tuning={
            "enabled": True,
            "trials": 4,
            "workers": 2,
            "folds": 2,
            "families": ["logistic_regression", "hist_gradient_boosting"],
        }
    )
    split = split_holdout(loans, config)
    families = [ModelFamily.LOGISTIC_REGRESSION, ModelFamily.HIST_GRADIENT_BOOSTING]
    warm = warm_start_trial("logistic_regression", {"C": 0.37, "tol": 1e-4}, families, Task.BINARY)
    assert warm == {"family": "logistic_regression", "logistic_regression__C": 0.37}
    url = f"journal://{tmp_path / 'journal.log'}"
    result = tune(split.train, config, url, "shared", warm_start=warm)
    assert (tmp_path / "journal.log").stat().st_size > 0
    assert result.workers == 2 and len(result.trials) == 4
    first = min(result.trials, key=lambda t: t.number)
    assert first.family == "logistic_regression" and first.params == {"C": 0.37}
    import optuna

    study = optuna.load_study(study_name="shared", storage=open_storage(url))
    assert len(study.trials) == 4
    assert study.metric_names == [config.gates.primary_metric]  # the dashboard's axis label
    best = max((t for t in result.trials if t.state == "COMPLETE"), key=lambda t: t.value)
    assert result.best_value == best.value and result.best_params == best.params
    for t in result.trials:  # every fold is a reported step (the running mean), in order
        assert list(t.intermediate) == list(range(len(t.intermediate)))
        if t.state == "COMPLETE":
            assert len(t.intermediate) == 2
            assert t.value == pytest.approx(t.intermediate[1])


def test_warm_start_ignores_values_outside_the_space_and_other_families():
    from ctloop.config.settings import ModelFamily, Task
    from ctloop.model.tune import warm_start_trial

    hgb = [ModelFamily.HIST_GRADIENT_BOOSTING]
    fixed = warm_start_trial(
        "hist_gradient_boosting",
        {"learning_rate": 0.08, "l2_regularization": 0.0, "max_iter": 200, "loss": "log_loss"},
        hgb,
        Task.BINARY,
    )
    assert fixed == {
        "hist_gradient_boosting__learning_rate": 0.08,
        "hist_gradient_boosting__max_iter": 200,
    }
    assert warm_start_trial("random_forest", {"n_estimators": 100}, hgb, Task.BINARY) is None


# --- analysis -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(loans):
    config = loan_config(
        training={"family": "logistic_regression"},
        analysis={"sensitive_columns": ["region"], "min_slice_rows": 15},
    )
    split = split_holdout(loans, config)
    return config, split, train_candidate(split.train, config)


def test_slices_and_largest_gap(fitted):
    from ctloop.model.analyse import largest_gaps, slice_metrics

    config, split, c = fitted
    slices = slice_metrics(c.pipeline, split.holdout, c.numeric, c.categorical, ["region"], config)
    counts = split.holdout["region"].value_counts()
    assert {v: m["rows"] for v, m in slices["region"].items()} == {
        k: float(n) for k, n in counts.items()
    }
    gap = largest_gaps(slices, "roc_auc")[0]
    scored = {v: m["roc_auc"] for v, m in slices["region"].items() if "roc_auc" in m}
    assert gap.best_value == max(scored.values()) and gap.worst_value == min(scored.values())
    assert gap.gap == pytest.approx(max(scored.values()) - min(scored.values()))


def test_what_if_moves_in_the_expected_direction(fitted):
    from ctloop.model.analyse import what_if

    config, split, c = fitted
    moves = what_if(c.pipeline, split.holdout, c.numeric, c.categorical, config, ["credit_score"])
    probs = [m.prediction for m in sorted(moves, key=lambda m: m.value)]
    assert len(probs) == 3
    assert probs[0] > probs[1] > probs[2]  # a better credit score, a lower default risk
    assert all(m.delta == pytest.approx(m.prediction - m.baseline) for m in moves)


def test_full_analysis_plots_and_card(fitted):
    from ctloop.model.analyse import analyse_model, model_card

    config, split, c = fitted
    result = analyse_model(c.pipeline, split.holdout, c.numeric, c.categorical, config)
    assert next(iter(result.importances)) == "credit_score"
    assert set(result.importances) == set(c.features)
    matrix = np.asarray(result.confusion["matrix"])
    assert matrix.sum() == len(split.holdout)
    assert set(result.plots) >= {"confusion_matrix.png", "roc.png", "pr.png", "calibration.png"}
    assert all(png.startswith(b"\x89PNG") for png in result.plots.values())
    card = model_card(
        result,
        project="loans",
        family=c.family,
        params=c.params,
        trained_on="2026-01-01..2026-01-04",
        snapshots=["abc"],
        train_rows=c.train_rows,
        holdout_rows=len(split.holdout),
        split=split.strategy,
        config=config,
    )
    for section in ("## Holdout metrics", "## Slices (roc_auc)", "## What-if", "## Limits"):
        assert section in card
    assert f"| roc_auc | {result.metrics['roc_auc']:.4f} |" in card


# --- safe artifacts and private training --------------------------------------------------


def test_pickled_models_are_refused_unless_allowed(fitted, tmp_path):
    import mlflow

    from ctloop.registry.store import load_model_dir, trusted_types_of

    config, split, c = fitted
    X = split.holdout.head(5)
    mlflow.sklearn.save_model(c.pipeline, tmp_path / "pkl", serialization_format="pickle")
    with pytest.raises(CtloopError, match="saved with pickle.*refused"):
        load_model_dir(tmp_path / "pkl")
    loaded = load_model_dir(tmp_path / "pkl", allow_pickle=True)
    from ctloop.model.train import prepare_features

    features = prepare_features(X, c.numeric, c.categorical)
    np.testing.assert_array_equal(
        loaded.predict_proba(features), c.pipeline.predict_proba(features)
    )
    mlflow.sklearn.save_model(
        c.pipeline,
        tmp_path / "skops",
        serialization_format="skops",
        skops_trusted_types=trusted_types_of(c.pipeline),
    )
    safe = load_model_dir(tmp_path / "skops")
    np.testing.assert_array_equal(safe.predict_proba(features), c.pipeline.predict_proba(features))


def test_private_training_fails_clearly_without_diffprivlib(loans, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffprivlib", None)  # as if not installed
    config = loan_config(
        training={"family": "logistic_regression", "privacy": {"enabled": True, "epsilon": 2}}
    )
    with pytest.raises(ConfigError, match="training.privacy.enabled: diffprivlib is not usable"):
        train_candidate(loans, config)


def test_private_training_needs_the_linear_family(loans):
    config = loan_config(training={"privacy": {"enabled": True}})
    with pytest.raises(ConfigError, match="needs training.family logistic_regression"):
        train_candidate(loans, config)


@pytest.mark.parametrize(
    ("section", "value", "field"),
    [
        ("tuning", {"workers": 0}, "tuning.workers"),
        ("tuning", {"trials": 0}, "tuning.trials"),
        ("tuning", {"families": ["xgboost"]}, "tuning.families"),
        ("tuning", {"enable": True}, "tuning.enable"),
        ("training", {"privacy": {"epsilon": 0}}, "training.privacy.epsilon"),
        ("gates", {"max_slice_gap": -1}, "gates.max_slice_gap"),
    ],
)
def test_bad_model_settings_name_the_field(tmp_path, section, value, field):
    import yaml

    from ctloop.config.settings import load_config

    path = tmp_path / "ctloop.yaml"
    path.write_text(yaml.safe_dump({section: value}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert field in str(err.value) and "\n" not in str(err.value)
