"""Evaluation: the metrics users expect, computed the same way for challenger and champion."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from ctloop.config.settings import Config, Task
from ctloop.model.metrics import LOWER_IS_BETTER, higher_is_better

__all__ = [
    "LOWER_IS_BETTER",
    "evaluate_outputs",
    "evaluate_predictions",
    "evaluate_with_spread",
    "bootstrap_std",
    "higher_is_better",
    "macro_ovr_auc",
    "model_outputs",
]


def macro_ovr_auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float | None:
    """Macro one-vs-rest ROC AUC over the classes present in `y` (a batch may miss some);
    None when fewer than two classes are present."""
    present = [k for k, c in enumerate(classes) if (y == c).any()]
    if len(present) < 2:
        return None
    aucs = [skm.roc_auc_score((y == classes[k]).astype(int), proba[:, k]) for k in present]
    return float(np.mean(aucs))


def calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of positive-class probabilities (equal-width bins)."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(proba, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            error += mask.mean() * abs(y_true[mask].mean() - proba[mask].mean())
    return float(error)


def model_outputs(model, X: pd.DataFrame, config: Config) -> np.ndarray:
    """What the metrics are computed from: class probabilities, or predicted values."""
    if config.dataset.task == Task.REGRESSION:
        return np.asarray(model.predict(X), dtype=float)
    return np.asarray(model.predict_proba(X))


def evaluate_predictions(model, X: pd.DataFrame, y: pd.Series, config: Config) -> dict[str, float]:
    """Metrics of a fitted model (anything with predict / predict_proba) on labelled rows."""
    classes = None if config.dataset.task == Task.REGRESSION else np.asarray(model.classes_)
    return evaluate_outputs(y, model_outputs(model, X, config), classes, config)


def evaluate_outputs(
    y: pd.Series | np.ndarray, output: np.ndarray, classes: np.ndarray | None, config: Config
) -> dict[str, float]:
    """The metrics of the task from recorded outputs (`model_outputs`) and the true labels.

    Args:
        classes: the model's `classes_`, the columns of `output` (None for regression).
    """
    task = config.dataset.task
    y = pd.Series(np.asarray(y))
    out: dict[str, float] = {"rows": float(len(y))}
    if task == Task.REGRESSION:
        pred = output
        out["rmse"] = float(np.sqrt(skm.mean_squared_error(y, pred)))
        out["mae"] = float(skm.mean_absolute_error(y, pred))
        if len(y) >= 2:  # R^2 of one row is undefined
            out["r2"] = float(skm.r2_score(y, pred))
        return out
    proba = output
    pred = classes[proba.argmax(axis=1)]
    y_obj = y.to_numpy()
    out["accuracy"] = float(skm.accuracy_score(y_obj, pred))
    out["balanced_accuracy"] = float(_balanced_accuracy(y_obj, pred))
    out["log_loss"] = float(skm.log_loss(y_obj, proba, labels=list(classes)))
    if task == Task.BINARY and len(classes) == 2:
        positive = classes[1]
        y_bin = (y_obj == positive).astype(int)
        p = proba[:, 1]
        pred_bin = (pred == positive).astype(int)
        out["precision"] = float(skm.precision_score(y_bin, pred_bin, zero_division=0))
        out["recall"] = float(skm.recall_score(y_bin, pred_bin, zero_division=0))
        out["f1"] = float(skm.f1_score(y_bin, pred_bin, zero_division=0))
        if len(np.unique(y_bin)) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y_bin, p))
            out["pr_auc"] = float(skm.average_precision_score(y_bin, p))
        out["brier"] = float(skm.brier_score_loss(y_bin, p))
        out["calibration_error"] = calibration_error(y_bin, p)
    else:
        out["f1_macro"] = float(skm.f1_score(y_obj, pred, average="macro", zero_division=0))
        auc = macro_ovr_auc(y_obj, proba, classes)
        if auc is not None:
            out["roc_auc_ovr"] = auc
            out["roc_auc"] = auc  # the name older multiclass configs used
    return out


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in `y` (no warning when a batch misses one)."""
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


def _one_metric(y: np.ndarray, output: np.ndarray, classes, metric: str, config: Config):
    """One metric from outputs, fast for the usual primary metrics (else the full set)."""
    if metric == "rmse":
        return float(np.sqrt(np.mean((y - output) ** 2)))
    if metric == "mae":
        return float(np.mean(np.abs(y - output)))
    if metric == "roc_auc" and config.dataset.task == Task.BINARY and len(classes) == 2:
        y_bin = (y == classes[1]).astype(int)
        if y_bin.min() == y_bin.max():
            return None
        return float(skm.roc_auc_score(y_bin, output[:, 1]))
    if metric in ("roc_auc", "roc_auc_ovr") and config.dataset.task == Task.MULTICLASS:
        return macro_ovr_auc(y, output, classes)
    return evaluate_outputs(y, output, classes, config).get(metric)


def bootstrap_std(
    y: pd.Series | np.ndarray,
    output: np.ndarray,
    classes: np.ndarray | None,
    metric: str,
    config: Config,
    resamples: int = 30,
) -> float | None:
    """The spread of a holdout metric: its standard deviation over bootstrap resamples of the
    rows (how far the value could move on another holdout of the same size)."""
    y = np.asarray(y)
    if len(y) < 10:
        return None
    rng = np.random.default_rng(config.training.seed)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        value = _one_metric(y[idx], output[idx], classes, metric, config)
        if value is not None and np.isfinite(value):
            values.append(value)
    return float(np.std(values, ddof=1)) if len(values) >= 5 else None


def evaluate_with_spread(model, X: pd.DataFrame, y: pd.Series, config: Config) -> dict[str, float]:
    """`evaluate_predictions` plus `<primary>_std`, the primary metric's bootstrap spread."""
    classes = None if config.dataset.task == Task.REGRESSION else np.asarray(model.classes_)
    output = model_outputs(model, X, config)
    out = evaluate_outputs(y, output, classes, config)
    metric = config.gates.primary_metric
    if metric in out:
        std = bootstrap_std(y, output, classes, metric, config)
        if std is not None:
            out[f"{metric}_std"] = std
    return out
