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
from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ctloop.config.settings import Config, DatasetConfig, ModelFamily, Task
from ctloop.errors import ConfigError, NotEnoughData


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


def make_estimator(
    config: Config, family: ModelFamily | None = None, params: dict[str, Any] | None = None
) -> Any:
    """The model step of a family for the configured task, with its defaults and given params.

    Args:
        config: task, seed and (when `params` is None) `training.params`.
        family: overrides `training.family` (a tuning trial picks its own).
        params: overrides `training.params`.
    """
    family = ModelFamily(family or config.training.family)
    task = config.dataset.task
    params = dict(config.training.params if params is None else params)
    seed = config.training.seed
    classify = task != Task.REGRESSION
    if config.training.privacy.enabled:
        return _private_estimator(config, family, params)
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


def _private_estimator(config: Config, family: ModelFamily, params: dict[str, Any]) -> Any:
    """diffprivlib's linear models: the training itself is epsilon-differentially private."""
    privacy = config.training.privacy
    if family != ModelFamily.LOGISTIC_REGRESSION:
        raise ConfigError(
            "training.privacy.enabled: differentially private training needs "
            f"training.family logistic_regression, got {family.value}"
        )
    try:
        from diffprivlib import models as dp_models
    except Exception as exc:  # not installed, or built for another scikit-learn
        raise ConfigError(
            "training.privacy.enabled: diffprivlib is not usable "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "install it with pip install 'ctloop[dp]' or turn privacy off"
        ) from None
    seed = config.training.seed
    if config.dataset.task == Task.REGRESSION:
        return dp_models.LinearRegression(epsilon=privacy.epsilon, random_state=seed, **params)
    params.pop("max_iter", None)
    return dp_models.LogisticRegression(
        epsilon=privacy.epsilon, data_norm=privacy.data_norm, random_state=seed, **params
    )


def build_pipeline(
    numeric: list[str],
    categorical: list[str],
    config: Config,
    family: ModelFamily | None = None,
    params: dict[str, Any] | None = None,
) -> Pipeline:
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
    return Pipeline([("preprocess", pre), ("model", make_estimator(config, family, params))])


@dataclass(frozen=True)
class Candidate:
    """A fitted pipeline with what it was fitted on, and the recipe to fit it again."""

    pipeline: Pipeline
    numeric: list[str]
    categorical: list[str]
    train_rows: int
    params: dict[str, Any] = field(default_factory=dict)
    family: str = ModelFamily.HIST_GRADIENT_BOOSTING.value
    recipe_params: dict[str, Any] = field(default_factory=dict)
    dp_epsilon: float | None = None

    @property
    def features(self) -> list[str]:
        return self.numeric + self.categorical

    @property
    def signature(self) -> list[list[str]]:
        """The input schema: names and kinds, in the order the pipeline reads them."""
        return [[n, "numeric"] for n in self.numeric] + [
            [n, "categorical"] for n in self.categorical
        ]

    def input_example(self, frame: pd.DataFrame, rows: int = 50) -> pd.DataFrame:
        """The first `rows` of `frame` as the model reads them (the logged input example)."""
        return prepare_features(frame.head(rows), self.numeric, self.categorical)


def prepare_features(frame: pd.DataFrame, numeric: list[str], categorical: list[str]):
    """The model's input frame: numeric as float, categoricals as object strings."""
    X = frame.reindex(columns=numeric + categorical).copy()
    for name in numeric:
        X[name] = pd.to_numeric(X[name], errors="coerce").astype(float)
    for name in categorical:
        X[name] = X[name].astype(object).where(X[name].notna(), np.nan)
        if X[name].map(type).isin([bool, np.bool_]).any():
            # a boolean column (stored as booleans) is encoded as its text, the spelling the
            # server receives, and never sorted together with the imputer's text
            X[name] = X[name].map(lambda v: str(bool(v)) if isinstance(v, bool | np.bool_) else v)
    return X


def train_candidate(
    train: pd.DataFrame,
    config: Config,
    family: ModelFamily | str | None = None,
    params: dict[str, Any] | None = None,
) -> Candidate:
    """Fit one pipeline on the training part of the window.

    Args:
        train: labelled rows (never the holdout).
        config: dataset, task, seed and the default family and params.
        family: overrides `training.family` (e.g. the tuned family).
        params: overrides `training.params` (e.g. the tuned parameters).
    """
    target = config.require_target()
    family = ModelFamily(family or config.training.family)
    recipe = dict(config.training.params if params is None else params)
    numeric, categorical = feature_columns(train, config.dataset)
    if not numeric and not categorical:
        raise NotEnoughData("no feature columns left after excluding target, id and timestamp")
    y = train[target]
    if config.dataset.task != Task.REGRESSION and y.nunique() < 2:
        raise NotEnoughData(f"target '{target}' has a single class in the training window")
    pipeline = build_pipeline(numeric, categorical, config, family, recipe)
    X = prepare_features(train, numeric, categorical)
    privacy = config.training.privacy
    if privacy.enabled and privacy.data_norm is None and config.dataset.task != Task.REGRESSION:
        # the norm bound is measured on the scaled rows (documented as a small privacy leak)
        scaled = pipeline.named_steps["preprocess"].fit_transform(X)
        norm = float(np.linalg.norm(np.asarray(scaled, dtype=float), axis=1).max()) or 1.0
        pipeline.named_steps["model"].set_params(data_norm=norm)
    pipeline.fit(X, y)
    params_out = {
        "family": family.value,
        **{k: v for k, v in pipeline.named_steps["model"].get_params().items() if _loggable(v)},
    }
    return Candidate(
        pipeline,
        numeric,
        categorical,
        len(train),
        params_out,
        family=family.value,
        recipe_params=recipe,
        dp_epsilon=privacy.epsilon if privacy.enabled else None,
    )


def validation_folds(
    train: pd.DataFrame, config: Config, folds: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds inside the training part for tuning; the holdout is never among them.

    With a timestamp the folds are time-ordered and expanding (fit on the past, validate on the
    next block), like the holdout itself; without one they are stratified (plain K-fold for
    regression or when a class is too rare).
    """
    dataset = config.dataset
    if len(train) < 10 * folds:
        raise NotEnoughData(f"{len(train)} training rows are too few for {folds} tuning folds")
    if dataset.timestamp and dataset.timestamp in train.columns:
        order = np.argsort(train[dataset.timestamp].to_numpy(), kind="stable")
        splits = TimeSeriesSplit(n_splits=folds).split(order)
        return [(order[a], order[b]) for a, b in splits]
    y = train[config.require_target()]
    if dataset.task != Task.REGRESSION and y.value_counts().min() >= folds:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=config.training.seed)
        return list(splitter.split(np.zeros(len(y)), y))
    splitter = KFold(folds, shuffle=True, random_state=config.training.seed)
    return list(splitter.split(np.zeros(len(y))))


def _loggable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


class ResourceSampler:
    """Samples this process tree's CPU and memory in a thread while a block runs.

    The samples use MLflow's system-metric names, so they plot beside its own system metrics:
    `with ResourceSampler() as sampler: fit(...)`, then `sampler.samples`.
    """

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.samples: list[tuple[str, float, int, int]] = []
        self._stop = None
        self._thread = None

    def _sample(self, step: int) -> None:
        import time

        import psutil

        now = int(time.time() * 1000)
        procs = [self._proc, *self._proc.children(recursive=True)]
        cpu = rss = 0.0
        for p in procs:
            try:
                cpu += p.cpu_percent(None)
                rss += p.memory_info().rss
            except psutil.Error:
                continue
        self.samples.append(("system/cpu_utilization_percentage", cpu, now, step))
        self.samples.append(("system/process_memory_megabytes", rss / 2**20, now, step))
        self.samples.append(
            ("system/system_memory_usage_percentage", psutil.virtual_memory().percent, now, step)
        )

    def _run(self) -> None:
        step = 0
        while not self._stop.wait(self.interval):
            self._sample(step)
            step += 1

    def __enter__(self) -> ResourceSampler:
        import threading

        import psutil

        self._proc = psutil.Process()
        self._proc.cpu_percent(None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ctloop-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        step = len(self.samples) // 3
        self._sample(step)
