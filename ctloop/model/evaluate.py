"""Evaluation: the metrics users expect, computed the same way for challenger and champion."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from ctloop.config.settings import Config, Task

LOWER_IS_BETTER = {"log_loss", "rmse", "mae", "brier", "calibration_error"}


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


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


def evaluate_predictions(model, X: pd.DataFrame, y: pd.Series, config: Config) -> dict[str, float]:
    """Metrics of a fitted model (anything with predict / predict_proba) on labelled rows."""
    task = config.dataset.task
    out: dict[str, float] = {"rows": float(len(y))}
    if task == Task.REGRESSION:
        pred = model.predict(X)
        out["rmse"] = float(np.sqrt(skm.mean_squared_error(y, pred)))
        out["mae"] = float(skm.mean_absolute_error(y, pred))
        out["r2"] = float(skm.r2_score(y, pred))
        return out
    proba = model.predict_proba(X)
    classes = np.asarray(model.classes_)
    pred = classes[proba.argmax(axis=1)]
    y_obj = y.to_numpy()
    out["accuracy"] = float(skm.accuracy_score(y_obj, pred))
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
        if len(np.unique(y_obj)) == len(classes) > 2:
            out["roc_auc"] = float(
                skm.roc_auc_score(y_obj, proba, multi_class="ovr", labels=list(classes))
            )
    return out
