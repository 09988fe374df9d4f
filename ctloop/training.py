"""Training: splits, a scikit-learn Pipeline that holds its own preprocessing, and the fit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ctloop.config import Config, DatasetConfig, ModelFamily, Task
from ctloop.errors import NotEnoughData


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame
    strategy: str


def split_holdout(frame: pd.DataFrame, config: Config) -> Split:
    """Hold out the most recent rows when there is a timestamp, a stratified sample otherwise."""
    dataset, fraction = config.dataset, config.training.holdout_fraction
    target = config.require_target()
    frame = frame.dropna(subset=[target]).reset_index(drop=True)
    if len(frame) < 20:
        raise NotEnoughData(f"{len(frame)} labelled rows; at least 20 are needed to train")
    if dataset.timestamp and dataset.timestamp in frame.columns:
        ordered = frame.sort_values(dataset.timestamp, kind="stable").reset_index(drop=True)
        cut = int(round(len(ordered) * (1 - fraction)))
        return Split(ordered.iloc[:cut], ordered.iloc[cut:], "time")
    stratify = frame[target] if dataset.task != Task.REGRESSION else None
    if stratify is not None and stratify.value_counts().min() < 2:
        stratify = None
    train, holdout = train_test_split(
        frame, test_size=fraction, random_state=config.training.seed, stratify=stratify
    )
    return Split(train, holdout, "stratified" if stratify is not None else "random")


def feature_columns(frame: pd.DataFrame, dataset: DatasetConfig) -> tuple[list[str], list[str]]:
    """Numeric and categorical model inputs: everything but target, id, timestamp and excluded."""
    skip = dataset.non_features()
    numeric, categorical = [], []
    for name in frame.columns:
        if name in skip or pd.api.types.is_datetime64_any_dtype(frame[name]):
            continue
        if pd.api.types.is_numeric_dtype(frame[name]) and not pd.api.types.is_bool_dtype(
            frame[name]
        ):
            numeric.append(name)
        else:
            categorical.append(name)
    return numeric, categorical


def _estimator(config: Config) -> Any:
    family, task = config.training.family, config.dataset.task
    params = dict(config.training.params)
    seed = config.training.seed
    classify = task != Task.REGRESSION
    if family == ModelFamily.HIST_GRADIENT_BOOSTING:
        cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        params.setdefault("max_iter", 200)
        params.setdefault("learning_rate", 0.08)
        params.setdefault("early_stopping", False)
        return cls(random_state=seed, **params)
    if family == ModelFamily.RANDOM_FOREST:
        cls = RandomForestClassifier if classify else RandomForestRegressor
        params.setdefault("n_estimators", 200)
        params.setdefault("min_samples_leaf", 3)
        return cls(random_state=seed, n_jobs=1, **params)
    if classify:
        params.setdefault("max_iter", 1000)
        return LogisticRegression(**params)
    return Ridge(**params)


def build_pipeline(numeric: list[str], categorical: list[str], config: Config) -> Pipeline:
    """Imputation, scaling and one-hot encoding (unseen categories ignored), then the model."""
    pre = ColumnTransformer(
        [
            (
                "numeric",
                Pipeline(
                    [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
                ),
                numeric,
            ),
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                        (
                            "encode",
                            OneHotEncoder(
                                handle_unknown="ignore", min_frequency=5, sparse_output=False
                            ),
                        ),
                    ]
                ),
                categorical,
            ),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    return Pipeline([("preprocess", pre), ("model", _estimator(config))])


@dataclass(frozen=True)
class Candidate:
    """A fitted pipeline with what it was fitted on."""

    pipeline: Pipeline
    numeric: list[str]
    categorical: list[str]
    train_rows: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return self.numeric + self.categorical


def prepare_features(frame: pd.DataFrame, numeric: list[str], categorical: list[str]):
    """The model's input frame: numeric as float, categoricals as object strings."""
    X = frame.reindex(columns=numeric + categorical).copy()
    for name in numeric:
        X[name] = pd.to_numeric(X[name], errors="coerce").astype(float)
    for name in categorical:
        X[name] = X[name].astype(object).where(X[name].notna(), np.nan)
    return X


def train_candidate(train: pd.DataFrame, config: Config) -> Candidate:
    """Fit one pipeline on the training part of the window."""
    target = config.require_target()
    numeric, categorical = feature_columns(train, config.dataset)
    if not numeric and not categorical:
        raise NotEnoughData("no feature columns left after excluding target, id and timestamp")
    y = train[target]
    if config.dataset.task != Task.REGRESSION and y.nunique() < 2:
        raise NotEnoughData(f"target '{target}' has a single class in the training window")
    pipeline = build_pipeline(numeric, categorical, config)
    pipeline.fit(prepare_features(train, numeric, categorical), y)
    params = {
        "family": str(config.training.family),
        **{k: v for k, v in pipeline.named_steps["model"].get_params().items() if _loggable(v)},
    }
    return Candidate(pipeline, numeric, categorical, len(train), params)


def _loggable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
