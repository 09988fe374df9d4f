"""Label-free performance estimation: what the model's metric will be, before the labels come.

Classifiers: confidence-based estimation (CBPE). The model's probabilities are first calibrated
on the holdout at training time (`fit_calibrator`, one smoothed isotonic map per class, kept
with the version as JSON); on a new chunk, if they are calibrated, each row's label is a draw
from its calibrated probabilities. The estimate of a metric is its expectation over such draws
and its interval the spread of the draws: the sampling error of the chunk, not a guess of drift.
The calibration's own error, bias and spread, is measured over calibrators refitted on
smoothed-bootstrap holdouts (`fit_bootstrap_calibrators`, `debias`, `widen`).
Accuracy has a closed form (the mean of the top probability); ROC AUC and F1 are simulated.

Regression: direct loss estimation (DLE). Models of the absolute and the squared error, fitted
on the holdout from the inputs and the prediction (`fit_loss_model`), predict each new row's
error; MAE is the mean of the predicted absolute errors, RMSE the root of the mean of the
predicted squared errors.

What no label-free method can see: concept drift (the same inputs now mean another label). The
estimate assumes the relation between inputs and label has not moved; `benchmarks/estimate.py`
shows it on a stream where it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

CLASSIFIER_METRICS = ("roc_auc", "roc_auc_ovr", "accuracy", "f1", "f1_macro")
REGRESSION_METRICS = ("mae", "rmse")


@dataclass(frozen=True)
class Calibrator:
    """One increasing piecewise-linear map per class (smoothed isotonic regression on the
    holdout), as plain lists so that it is stored as JSON with the model version."""

    classes: list[Any]
    maps: list[tuple[list[float], list[float]]]

    def apply(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities; rows renormalised to sum to one when there are more than
        two classes (a binary model keeps its positive column and its complement)."""
        proba = np.asarray(proba, dtype=float)
        if len(self.classes) == 2:
            x, y = self.maps[1]
            positive = np.interp(proba[:, 1], x, y)
            return np.column_stack([1 - positive, positive])
        out = np.column_stack([np.interp(proba[:, k], x, y) for k, (x, y) in enumerate(self.maps)])
        total = out.sum(axis=1, keepdims=True)
        uniform = np.full_like(out, 1.0 / out.shape[1])
        return np.where(total > 0, out / np.where(total > 0, total, 1), uniform)

    def to_dict(self) -> dict[str, Any]:
        return {"classes": [_plain(c) for c in self.classes], "maps": self.maps}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(list(data["classes"]), [(list(x), list(y)) for x, y in data["maps"]])


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def smoothed_isotonic(x: np.ndarray, t: np.ndarray) -> tuple[list[float], list[float]]:
    """Isotonic regression of `t` on `x`, as the line through the centroids of its blocks
    (smooth isotonic regression, Jiang et al. 2011): still monotone, but no longer flat inside a
    block, so it keeps the model's order there. A step map ties every row of a block, which
    makes CBPE's ROC AUC count those pairs as coin flips the model in fact ranks: a downward
    bias. Beyond the outer centroids the map holds the outer values (`np.interp` clips)."""
    from sklearn.isotonic import IsotonicRegression

    x, t = np.asarray(x, dtype=float), np.asarray(t, dtype=float)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0).fit_transform(xs, t[order])
    starts = np.r_[0, np.flatnonzero(np.diff(fitted) != 0) + 1]
    centroids = np.add.reduceat(xs, starts) / np.diff(np.r_[starts, len(xs)])
    return [float(v) for v in centroids], [float(v) for v in fitted[starts]]


def fit_calibrator(proba: np.ndarray, y: np.ndarray, classes: list[Any]) -> Calibrator:
    """Monotone maps from the holdout's predicted probabilities to observed frequencies, one
    per class (`smoothed_isotonic`)."""
    proba = np.asarray(proba, dtype=float)
    y = np.asarray(y)
    maps = [smoothed_isotonic(proba[:, k], (y == label)) for k, label in enumerate(classes)]
    return Calibrator(list(classes), maps)


def fit_bootstrap_calibrators(
    proba: np.ndarray, y: np.ndarray, classes: list[Any], resamples: int = 50, seed: int = 0
) -> list[Calibrator]:
    """Calibrators refitted on smoothed-bootstrap holdouts: the rows resampled (which scores a
    holdout happens to hold) and their labels drawn anew from the smooth calibration fitted on
    the whole holdout (which labels those rows happen to carry). How far the calibration itself
    may be off, for a holdout of this size (see `widen`). The plain bootstrap (resampled rows
    with their own labels) is known to be inconsistent for isotonic regression (Kosorok 2008;
    Sen, Banerjee and Woodroofe 2010: its repeated rows pool into the same blocks, so it
    understates the fit's variance); drawing the labels from a smooth fit is the consistent
    remedy."""
    rng = np.random.default_rng(seed)
    proba, y = np.asarray(proba, dtype=float), np.asarray(y)
    if len(y) == 0:
        return []
    fitted = fit_calibrator(proba, y, classes).apply(proba)
    cumulative = fitted.cumsum(axis=1)
    cumulative[:, -1] = 1.0
    labels = np.asarray(classes, dtype=object)
    found = []
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        drawn = (rng.random((len(rows), 1)) > cumulative[rows]).sum(axis=1)
        found.append(fit_calibrator(proba[rows], labels[drawn], classes))
    return found


def debias(found: Estimate, bias: float, low: float = 0.0, high: float = 1.0) -> Estimate:
    """The estimate and its interval moved by `-bias`: the calibration's bias, the mean over the
    bootstrap calibrators of their estimate minus the holdout calibrator's (kept in `extra`)."""
    if found.estimate is None or not bias:
        return found
    clip = lambda v: min(high, max(low, v - bias))  # noqa: E731
    return Estimate(
        found.metric,
        clip(found.estimate),
        clip(found.ci_low),
        clip(found.ci_high),
        found.rows,
        {**found.extra, "calibration_bias": float(bias)},
    )


def widen(found: Estimate, spread: float, low: float = 0.0, high: float = 1.0) -> Estimate:
    """The interval widened by the calibrator's own error: `spread` is the standard deviation of
    the estimate over the bootstrap calibrators, added in quadrature to the chunk's sampling
    error (which alone is the whole interval only for a very large holdout)."""
    if found.estimate is None or not spread:
        return found
    below = (found.estimate - found.ci_low) / 1.96
    above = (found.ci_high - found.estimate) / 1.96
    grow = lambda side: 1.96 * float(np.hypot(side, spread))  # noqa: E731
    return Estimate(
        found.metric,
        found.estimate,
        max(low, found.estimate - grow(below)),
        min(high, found.estimate + grow(above)),
        found.rows,
        {**found.extra, "calibration_spread": float(spread)},
    )


@dataclass(frozen=True)
class Estimate:
    """A metric estimated on one chunk, with the 95% interval of its sampling error."""

    metric: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    rows: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "estimate": self.estimate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            **self.extra,
        }


def _auc_from_ranks(ranks: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC from the scores' ranks (Mann-Whitney U): the ranks are computed once per chunk,
    since only the drawn labels change between draws."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.nan
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """The ROC AUC expected when each row is positive with probability `positive[i]` and the
    rows are ranked by `scores` (ties count a half): the ratio of the expected concordant
    pairs to the expected positive-negative pairs, without drawing labels. It differs from the
    mean over draws by O(1/rows); being free of draw noise, it measures how far the estimate
    moves between calibrators exactly (`calibration_spread`)."""
    q = np.asarray(positive, dtype=float)
    _, group = np.unique(np.asarray(scores, dtype=float), return_inverse=True)
    ones = np.bincount(group, weights=q)
    zeros = np.bincount(group, weights=1 - q)
    self_pairs = np.bincount(group, weights=q * (1 - q))
    below = np.cumsum(zeros) - zeros  # expected negatives ranked strictly lower
    concordant = float(np.sum(ones * below) + 0.5 * np.sum(ones * zeros - self_pairs))
    pairs = float(q.sum() * (1 - q).sum() - np.sum(q * (1 - q)))
    return concordant / pairs if pairs > 1e-12 else None


def expected_metric(
    proba: np.ndarray, metric: str, predicted: np.ndarray, scores: np.ndarray
) -> float | None:
    """The metric expected under calibrated probabilities in closed form (accuracy, ROC AUC
    binary or one-vs-rest macro), None for a metric that needs draws (F1)."""
    proba = np.asarray(proba, dtype=float)
    if metric == "accuracy":
        return float(proba[np.arange(len(proba)), predicted].mean())
    if metric not in ("roc_auc", "roc_auc_ovr"):
        return None
    columns = [1] if proba.shape[1] == 2 else range(proba.shape[1])
    values = [expected_auc(proba[:, k], scores[:, k]) for k in columns]
    if any(v is None for v in values):
        return None
    return float(np.mean(values))


def _f1(pred: np.ndarray, labels: np.ndarray, k: int) -> float:
    tp = np.count_nonzero((pred == k) & (labels == k))
    fp = np.count_nonzero((pred == k) & (labels != k))
    fn = np.count_nonzero((pred != k) & (labels == k))
    return 0.0 if tp == 0 else float(2 * tp / (2 * tp + fp + fn))


def _metric_of(metric: str, n_classes: int, scores: np.ndarray, pred: np.ndarray):
    """The metric as a function of drawn labels (class indices), for a fixed chunk; ROC AUC
    ranks the rows by `scores`, what the model serves."""
    from scipy.stats import rankdata

    if metric == "f1":
        return lambda labels: _f1(pred, labels, 1)
    if metric == "f1_macro":
        return lambda labels: float(np.mean([_f1(pred, labels, k) for k in range(n_classes)]))
    if metric in ("roc_auc", "roc_auc_ovr"):  # one-vs-rest, macro, for several classes
        columns = [1] if n_classes == 2 else range(n_classes)
        ranks = {k: rankdata(scores[:, k]) for k in columns}
        return lambda labels: float(
            np.mean([_auc_from_ranks(ranks[k], labels == k) for k in columns])
        )
    raise ValueError(f"no label-free estimate for {metric!r}: one of {CLASSIFIER_METRICS}")


def estimate_classifier(
    proba: np.ndarray,
    metric: str,
    *,
    draws: int = 300,
    seed: int = 0,
    predicted: np.ndarray | None = None,
    scores: np.ndarray | None = None,
) -> Estimate:
    """CBPE on calibrated probabilities (rows x classes).

    Args:
        predicted: the class index the model predicts per row (the argmax of its raw
            probabilities); calibration can move the top class, and accuracy and F1 are of
            what the model predicts. The calibrated argmax when None.
        scores: the model's own probabilities, which ROC AUC ranks rows by (an isotonic
            calibration ties rows the model tells apart). The calibrated ones when None.
    """
    proba = np.asarray(proba, dtype=float)
    rows, n_classes = proba.shape
    if rows == 0:
        return Estimate(metric, None, None, None, 0)
    pred = proba.argmax(axis=1) if predicted is None else np.asarray(predicted, dtype=int)
    if metric == "accuracy":
        top = proba[np.arange(rows), pred]
        mean = float(top.mean())
        half = 1.96 * float(np.sqrt((top * (1 - top)).sum())) / rows
        return Estimate(metric, mean, max(0.0, mean - half), min(1.0, mean + half), rows)
    rng = np.random.default_rng(seed)
    cumulative = proba.cumsum(axis=1)
    cumulative[:, -1] = 1.0
    ranked = proba if scores is None else np.asarray(scores, dtype=float)
    metric_of = _metric_of(metric, n_classes, ranked, pred)
    values = []
    for _ in range(draws):
        labels = (rng.random((rows, 1)) > cumulative).sum(axis=1)
        value = metric_of(labels)
        if not np.isnan(value):  # ROC AUC of a draw that holds one class only
            values.append(value)
    if not values:  # e.g. ROC AUC of a chunk that can hold only one class
        return Estimate(metric, None, None, None, rows)
    low, high = np.percentile(values, [2.5, 97.5])
    return Estimate(metric, float(np.mean(values)), float(low), float(high), rows)


@dataclass
class LossModel:
    """Two models of a regressor's error fitted on the holdout (DLE): of the absolute error and
    of the squared error, each from the numeric inputs and the prediction."""

    absolute: Any
    squared: Any
    columns: list[str]


def fit_loss_model(features: pd.DataFrame, prediction: np.ndarray, y: np.ndarray) -> LossModel:
    from sklearn.ensemble import HistGradientBoostingRegressor

    X = _loss_inputs(features, prediction)
    error = np.asarray(y, dtype=float) - np.asarray(prediction, dtype=float)
    fitted = []
    for target in (np.abs(error), error**2):
        model = HistGradientBoostingRegressor(max_iter=100, min_samples_leaf=20, random_state=0)
        fitted.append(model.fit(X, target))
    return LossModel(fitted[0], fitted[1], list(X.columns))


def _loss_inputs(features: pd.DataFrame, prediction: np.ndarray) -> pd.DataFrame:
    numeric = features.apply(pd.to_numeric, errors="coerce")
    numeric = numeric.loc[:, numeric.notna().any()]
    return numeric.assign(__prediction__=np.asarray(prediction, dtype=float)).reset_index(drop=True)


def estimate_regression(
    loss: LossModel, features: pd.DataFrame, prediction: np.ndarray, metric: str
) -> Estimate:
    """DLE: the chunk's MAE or RMSE from each row's predicted error. The interval is the
    sampling error of the chunk given those predictions: row i's absolute error has mean m_i and
    variance s_i - m_i^2 (s_i the predicted squared error); its squared error a variance of about
    2 s_i^2 (as for a normal error)."""
    rows = len(features)
    if rows == 0:
        return Estimate(metric, None, None, None, 0)
    X = _loss_inputs(features, prediction).reindex(columns=loss.columns)
    m = np.clip(loss.absolute.predict(X), 0.0, None)
    sq = np.maximum(np.clip(loss.squared.predict(X), 0.0, None), m**2)
    if metric == "mae":
        mean = float(m.mean())
        half = 1.96 * float(np.sqrt((sq - m**2).sum())) / rows
        return Estimate(metric, mean, max(0.0, mean - half), mean + half, rows)
    if metric == "rmse":
        mse = float(sq.mean())
        half = 1.96 * float(np.sqrt((2 * sq**2).sum())) / rows
        low, high = np.sqrt(max(0.0, mse - half)), np.sqrt(mse + half)
        return Estimate(metric, float(np.sqrt(mse)), float(low), float(high), rows)
    raise ValueError(f"no label-free estimate for {metric!r}: one of {REGRESSION_METRICS}")


def chunks(frame: pd.DataFrame, chunk_rows: int, timestamp: str | None = None):
    """(start, end, rows frame) per chunk of `chunk_rows` rows, in order; start and end are the
    first and last timestamp when a timestamp column is given, else row numbers."""
    if chunk_rows < 1:
        raise ValueError(f"chunk rows must be at least 1, got {chunk_rows}")
    if timestamp and timestamp in frame.columns:
        frame = frame.sort_values(timestamp, kind="stable")
    for begin in range(0, len(frame), chunk_rows):
        part = frame.iloc[begin : begin + chunk_rows]
        if timestamp and timestamp in part.columns:
            start, end = str(part[timestamp].iloc[0]), str(part[timestamp].iloc[-1])
        else:
            start, end = begin, begin + len(part) - 1
        yield start, end, part
