"""Label-free estimation on known cases: on calibrated probabilities the estimate is the
expected metric and the realized metric falls in its 95% interval about 95% of the time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from ctloop.monitor.estimate import (
    Calibrator,
    chunks,
    estimate_classifier,
    estimate_regression,
    fit_calibrator,
    fit_loss_model,
)


def _draw(rng, proba):
    cumulative = proba.cumsum(axis=1)
    cumulative[:, -1] = 1.0
    return (rng.random((len(proba), 1)) > cumulative).sum(axis=1)


def _realized(metric, labels, proba):
    pred = proba.argmax(axis=1)
    if metric == "accuracy":
        return (pred == labels).mean()
    if metric == "f1":
        return skm.f1_score(labels, pred)
    if metric == "roc_auc" and proba.shape[1] == 2:
        return skm.roc_auc_score(labels, proba[:, 1])
    if metric == "roc_auc_ovr":
        return skm.roc_auc_score(labels, proba, multi_class="ovr")
    return skm.f1_score(labels, pred, average="macro")


@pytest.mark.parametrize(
    ("classes", "metric"),
    [
        (2, "roc_auc"),
        (2, "accuracy"),
        (2, "f1"),
        (3, "accuracy"),
        (3, "roc_auc_ovr"),
        (4, "f1_macro"),
    ],
)
def test_on_calibrated_probabilities_the_interval_covers_the_realized_metric(classes, metric):
    rng = np.random.default_rng(classes * 7 + len(metric))
    chunks_tried, covered, errors = 50, 0, []
    for _ in range(chunks_tried):
        proba = rng.dirichlet(np.full(classes, 0.6), size=500)
        labels = _draw(rng, proba)  # calibrated by construction
        found = estimate_classifier(proba, metric, draws=200, seed=1)
        realized = _realized(metric, labels, proba)
        covered += found.ci_low <= realized <= found.ci_high
        errors.append(abs(found.estimate - realized))
    assert covered / chunks_tried >= 0.88, (covered, chunks_tried)
    assert np.mean(errors) < 0.03


def test_overconfident_probabilities_are_calibrated_on_the_holdout_first():
    rng = np.random.default_rng(5)
    true = rng.beta(2, 2, size=4000)
    labels = (rng.random(4000) < true).astype(int)
    # an overconfident model: probabilities pushed towards 0 and 1
    shown = 1 / (1 + np.exp(-3 * np.log(true / (1 - true))))
    proba = np.column_stack([1 - shown, shown])
    raw = estimate_classifier(proba[2000:], "accuracy")
    calibrator = fit_calibrator(proba[:2000], labels[:2000], [0, 1])
    kept = Calibrator.from_dict(calibrator.to_dict())  # what the version stores, as JSON
    fixed = estimate_classifier(kept.apply(proba[2000:]), "accuracy")
    realized = ((shown[2000:] > 0.5).astype(int) == labels[2000:]).mean()
    assert abs(fixed.estimate - realized) < abs(raw.estimate - realized)
    assert fixed.ci_low <= realized <= fixed.ci_high


def test_a_chunk_with_no_rows_has_no_estimate():
    empty = estimate_classifier(np.empty((0, 2)), "roc_auc")
    assert empty.estimate is None and empty.rows == 0


def test_regression_losses_are_estimated_from_the_inputs_where_the_noise_grows():
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    rng = np.random.default_rng(0)
    big = pd.concat([X] * 6, ignore_index=True)
    # noise that grows with bmi: the error depends on the inputs, as DLE assumes
    noise = rng.normal(0, 1, len(big)) * (20 + 400 * (big["bmi"] - big["bmi"].min()))
    target = pd.concat([y] * 6, ignore_index=True).to_numpy() + noise
    model = Ridge().fit(X, y)
    holdout, rest = slice(0, 1300), slice(1300, None)
    prediction = model.predict(big)
    loss = fit_loss_model(big.iloc[holdout], prediction[holdout], target[holdout])
    covered = tried = 0
    for metric in ("mae", "rmse"):
        for _start, _end, part in chunks(big.iloc[rest], 250):
            index = part.index.to_numpy()
            found = estimate_regression(loss, part, prediction[index], metric)
            error = target[index] - prediction[index]
            realized = np.abs(error).mean() if metric == "mae" else np.sqrt((error**2).mean())
            covered += found.ci_low <= realized <= found.ci_high
            tried += 1
            assert abs(found.estimate - realized) / realized < 0.25
    assert covered / tried >= 0.75, (covered, tried)


def test_chunks_follow_the_timestamp_or_the_row_numbers():
    frame = pd.DataFrame({"ts": ["2024-01-03", "2024-01-01", "2024-01-02"], "x": [3, 1, 2]})
    by_time = list(chunks(frame, 2, "ts"))
    assert [(s, e) for s, e, _ in by_time] == [("2024-01-01", "2024-01-02"), ("2024-01-03",) * 2]
    assert [(s, e) for s, e, _ in chunks(frame, 2)] == [(0, 1), (2, 2)]
    with pytest.raises(ValueError, match="at least 1"):
        list(chunks(frame, 0))


def test_the_calibrations_own_error_widens_the_interval_and_never_moves_the_estimate():
    from ctloop.monitor.estimate import Estimate, fit_bootstrap_calibrators, widen

    rng = np.random.default_rng(3)
    p = rng.beta(2, 2, size=600)
    y = (rng.random(600) < p).astype(int)
    boots = fit_bootstrap_calibrators(np.column_stack([1 - p, p]), y, [0, 1], resamples=8)
    assert len(boots) == 8
    spread = np.std([b.apply(np.array([[0.3, 0.7]]))[0, 1] for b in boots])
    assert spread > 0  # a 600-row holdout does not pin the calibration down
    found = Estimate("accuracy", 0.8, 0.78, 0.82, 1000)
    wider = widen(found, 0.01)
    assert wider.estimate == 0.8 and wider.ci_low < 0.78 and wider.ci_high > 0.82
    assert wider.ci_high - wider.ci_low == pytest.approx(2 * 1.96 * np.hypot(0.02 / 1.96, 0.01))
    assert widen(found, 0.0) == found


def test_the_expected_auc_in_closed_form_matches_the_mean_over_drawn_labels():
    from ctloop.monitor.estimate import estimate_classifier, expected_auc, expected_metric

    rng = np.random.default_rng(7)
    p = rng.beta(2, 2, size=3000)
    scores = np.round(p + rng.normal(0, 0.1, size=3000), 2)  # noisy and tied, as served
    proba = np.column_stack([1 - p, p])
    drawn = estimate_classifier(
        proba, "roc_auc", draws=400, scores=np.column_stack([-scores, scores])
    )
    exact = expected_auc(p, scores)
    assert exact == pytest.approx(drawn.estimate, abs=0.002)
    assert drawn.ci_low < exact < drawn.ci_high
    assert expected_auc(np.zeros(5), np.arange(5.0)) is None  # no positives can be drawn
    top = proba.argmax(axis=1)
    assert expected_metric(proba, "accuracy", top, proba) == pytest.approx(proba.max(axis=1).mean())
    assert expected_metric(proba, "f1", top, proba) is None


def test_estimates_with_labels_carry_their_error_and_unlabelled_ones_wait_by_time():
    from ctloop.registry.estimator import pending_entry, rows_in_window, with_errors

    answer = {
        "metric": "roc_auc",
        "version": 2,
        "rows": 3,
        "estimate": 0.8,
        "ci_low": 0.7,
        "ci_high": 0.9,
        "realized": 0.75,
        "chunks": [
            {
                "start": "2026-03-12 00:00:00",
                "end": "2026-03-12 00:02:00",
                "estimate": 0.8,
                "realized": None,
            }
        ],
    }
    found = with_errors(answer)
    assert found["error"] == pytest.approx(0.05) and "error" not in found["chunks"][0]
    entry = pending_entry(found, "day.csv", "run1", 4)
    assert (
        entry["start"] == "2026-03-12 00:00:00" and entry["step"] == 4 and entry["realized"] is None
    )
    assert pending_entry({**found, "chunks": [{"start": 0, "end": 2}]}, "x", "r", 0) is None
    frame = pd.DataFrame(
        {"t": ["2026-03-11T23:59:00", "2026-03-12T00:01:00", "2026-03-12T00:03:00"]}
    )
    assert rows_in_window(frame, "t", entry["start"], entry["end"]).index.tolist() == [1]


def test_the_smoothed_bootstrap_measures_the_calibrations_bias_and_spread():
    """Isotonic calibration on a 2000-row holdout overfits: the expected ROC AUC it gives a
    new chunk runs high. Calibrators refitted on labels drawn from it err about it as it errs
    about the truth, so their mean corrects it and their spread is its error's size."""
    from ctloop.monitor.estimate import (
        Estimate,
        debias,
        expected_auc,
        fit_bootstrap_calibrators,
        smoothed_isotonic,
    )

    raw, corrected, spreads = [], [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        p = rng.beta(2, 5, 2000)
        y = (rng.random(2000) < p).astype(int)
        new = rng.beta(2, 5, 4000)
        truth = expected_auc(new, new)  # a calibrated model: its scores are the probabilities
        holdout, chunk = np.column_stack([1 - p, p]), np.column_stack([1 - new, new])
        found = expected_auc(fit_calibrator(holdout, y, [0, 1]).apply(chunk)[:, 1], new)
        boots = fit_bootstrap_calibrators(holdout, y, [0, 1], 30, seed)
        values = [expected_auc(b.apply(chunk)[:, 1], new) for b in boots]
        fixed = debias(Estimate("roc_auc", found, found, found, 4000), np.mean(values) - found)
        assert fixed.extra["calibration_bias"] == pytest.approx(np.mean(values) - found)
        raw.append(found - truth)
        corrected.append(fixed.estimate - truth)
        spreads.append(np.std(values, ddof=1))
    assert np.mean(raw) > 0.004  # the overfit's bias, larger than its noise over 8 holdouts
    assert abs(np.mean(corrected)) < np.mean(raw) / 2
    assert 0.5 < np.mean(spreads) / np.std(corrected) < 2
    x, fitted = smoothed_isotonic(p, y)
    assert np.all(np.diff(x) > 0) and np.all(np.diff(fitted) > 0)  # monotone, no flat blocks
