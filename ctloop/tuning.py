"""Hyperparameter tuning: an Optuna study over the families, folds as pruning steps.

Parallel trials run in separate *processes* that share one Optuna storage (a journal file in the
embedded profile, an RDB such as PostgreSQL in the cluster profile). The processes are started
with plain `multiprocessing` (spawn) inside the single `tune` Prefect task rather than as one
Prefect task per trial on a process-pool task runner, because:

- a trial is a few hundred milliseconds to a few seconds of CPU; a Prefect task run per trial
  adds API round trips and state writes that cost as much as the trial itself;
- Optuna's storage is already the coordination point (trial numbers, TPE history, pruning
  decisions), so workers need nothing from Prefect but a start signal;
- the study's trials are still visible per trial, as nested MLflow runs of the retrain run, and
  the `tune` task stays one cacheable, retryable unit in the Prefect UI.

Each worker limits BLAS/OpenMP to one thread, so N workers use N cores without
oversubscription, and a study with one worker runs in the calling process.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctloop.config import Config, ModelFamily, Profile, Task
from ctloop.errors import ConfigError, NotEnoughData
from ctloop.evaluation import evaluate_predictions, higher_is_better
from ctloop.training import build_pipeline, feature_columns, prepare_features, validation_folds

SEP = "__"


# --- search spaces ------------------------------------------------------------------------


def suggest_params(trial, family: ModelFamily, task: Task) -> dict[str, Any]:
    """Sample one family's parameters; names are prefixed by the family in the study."""
    f = family.value
    if family == ModelFamily.HIST_GRADIENT_BOOSTING:
        return {
            "learning_rate": trial.suggest_float(f"{f}{SEP}learning_rate", 0.01, 0.3, log=True),
            "max_iter": trial.suggest_int(f"{f}{SEP}max_iter", 50, 300, step=25),
            "max_leaf_nodes": trial.suggest_int(f"{f}{SEP}max_leaf_nodes", 7, 63, log=True),
            "min_samples_leaf": trial.suggest_int(f"{f}{SEP}min_samples_leaf", 5, 80, log=True),
            "l2_regularization": trial.suggest_float(
                f"{f}{SEP}l2_regularization", 1e-6, 10.0, log=True
            ),
        }
    if family == ModelFamily.RANDOM_FOREST:
        return {
            "n_estimators": trial.suggest_int(f"{f}{SEP}n_estimators", 50, 300, step=25),
            "max_depth": trial.suggest_int(f"{f}{SEP}max_depth", 3, 16),
            "min_samples_leaf": trial.suggest_int(f"{f}{SEP}min_samples_leaf", 1, 30, log=True),
            "max_features": trial.suggest_float(f"{f}{SEP}max_features", 0.2, 1.0),
        }
    if task == Task.REGRESSION:
        return {"alpha": trial.suggest_float(f"{f}{SEP}alpha", 1e-3, 100.0, log=True)}
    return {"C": trial.suggest_float(f"{f}{SEP}C", 1e-3, 100.0, log=True)}


def families_of(config: Config) -> list[ModelFamily]:
    """The families a study may choose from (only `training.family` when none are listed)."""
    chosen = list(dict.fromkeys(config.tuning.families)) or [config.training.family]
    if config.training.privacy.enabled and chosen != [ModelFamily.LOGISTIC_REGRESSION]:
        raise ConfigError(
            "tuning.families: differentially private training tunes only logistic_regression"
        )
    return chosen


def warm_start_trial(
    family: str | None, params: dict[str, Any], families: list[ModelFamily], task: Task
) -> dict[str, Any] | None:
    """The champion's parameters as a study trial to enqueue first, or None when not in scope.

    Only parameters of the search space whose value lies inside its range are fixed; the
    sampler draws the rest.
    """
    import optuna

    if not family or family not in {f.value for f in families}:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    probe = optuna.create_study()  # in memory: records the space of one trial
    trial = probe.ask()
    suggest_params(trial, ModelFamily(family), task)
    fixed: dict[str, Any] = {"family": family} if len(families) > 1 else {}
    for name, dist in trial.distributions.items():
        value = params.get(name.removeprefix(f"{family}{SEP}"))
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if dist.low <= value <= dist.high:
            fixed[name] = (
                int(value) if isinstance(dist, optuna.distributions.IntDistribution) else value
            )
    return fixed


# --- the objective ------------------------------------------------------------------------


def _score(metrics: dict[str, float], metric: str) -> float | None:
    value = metrics.get(metric)
    if value is None or not math.isfinite(value):
        return None
    return value


@dataclass
class Objective:
    """Mean of the primary metric over the training part's folds; each fold is a pruning step."""

    train: pd.DataFrame
    config: Config
    folds: list[tuple[np.ndarray, np.ndarray]]
    families: list[ModelFamily]

    def __call__(self, trial) -> float:
        import optuna

        config = self.config
        if len(self.families) > 1:
            family = ModelFamily(
                trial.suggest_categorical("family", [f.value for f in self.families])
            )
        else:
            family = self.families[0]
        params = suggest_params(trial, family, config.dataset.task)
        metric = config.gates.primary_metric
        target = config.require_target()
        numeric, categorical = feature_columns(self.train, config.dataset)
        scores: list[float] = []
        for step, (fit_idx, val_idx) in enumerate(self.folds):
            fit, val = self.train.iloc[fit_idx], self.train.iloc[val_idx]
            if config.dataset.task != Task.REGRESSION and fit[target].nunique() < 2:
                continue
            pipeline = build_pipeline(numeric, categorical, config, family, params)
            pipeline.fit(prepare_features(fit, numeric, categorical), fit[target])
            metrics = evaluate_predictions(
                pipeline, prepare_features(val, numeric, categorical), val[target], config
            )
            score = _score(metrics, metric)
            if score is None:
                continue
            scores.append(score)
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"fold {step}: {np.mean(scores):.4f}")
        if not scores:
            raise NotEnoughData(f"{metric} could not be computed on any tuning fold")
        return float(np.mean(scores))


# --- storage ------------------------------------------------------------------------------


def storage_url(config: Config, home_root: Path) -> str:
    """Where the study lives: the configured storage, else a journal file under the home."""
    spec = config.tuning.storage
    if not spec:
        return f"journal://{(home_root / 'optuna' / 'journal.log').resolve()}"
    return spec


def open_storage(url: str):
    """An Optuna storage from a URL: `journal:///path`, a plain path, or an RDB URL."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if "://" in url and not url.startswith("journal://"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    path = Path(url.removeprefix("journal://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _sampler(config: Config, worker: int):
    import optuna

    return optuna.samplers.TPESampler(
        seed=config.tuning.seed + 7919 * worker,
        n_startup_trials=5,
        constant_liar=config.tuning.workers > 1,
    )


def _pruner(config: Config):
    import optuna

    if not config.tuning.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)


def _optimize(
    train: pd.DataFrame,
    config_json: dict,
    url: str,
    study_name: str,
    worker: int,
    n_trials: int,
    deadline: float | None,
) -> None:
    """One worker: join the study and run its share of trials (in this process)."""
    import optuna
    from threadpoolctl import threadpool_limits

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = Config.model_validate(config_json)
    study = optuna.load_study(
        study_name=study_name,
        storage=open_storage(url),
        sampler=_sampler(config, worker),
        pruner=_pruner(config),
    )
    folds = validation_folds(train, config, config.tuning.folds)
    objective = Objective(train, config, folds, families_of(config))
    timeout = None if deadline is None else max(0.0, deadline - time.time())
    label = _worker_label()

    def labelled(trial):
        trial.set_user_attr("worker", label)
        return objective(trial)

    with threadpool_limits(limits=1):
        study.optimize(
            labelled, n_trials=n_trials, timeout=timeout, catch=(ValueError, NotEnoughData)
        )


def _worker_label() -> str:
    """The Dask worker's name when a trial runs on one (cluster profile), else the pid."""
    import os

    try:
        from distributed import get_worker

        return f"dask:{get_worker().name}"
    except (ImportError, ValueError):
        return f"pid:{os.getpid()}"


def _optimize_on_dask(
    train: pd.DataFrame,
    config: Config,
    url: str,
    study_name: str,
    shares: list[int],
    deadline: float | None,
) -> None:
    """Cluster profile: one `_optimize` per share on the Dask cluster, all in one study."""
    from distributed import Client

    config_json = config.model_dump(mode="json")
    with Client(config.cluster.dask_scheduler(), timeout=30) as client:
        data = client.scatter(train, broadcast=True)
        futures = [
            client.submit(
                _optimize, data, config_json, url, study_name, i, n, deadline, pure=False,
                key=f"ctloop-tune-{study_name}-{i}",
            )
            for i, n in enumerate(shares)
        ]  # fmt: skip
        client.gather(futures)


# --- the study ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial, read back from the storage."""

    number: int
    state: str
    value: float | None
    family: str
    params: dict[str, Any]
    intermediate: dict[int, float]
    started: float | None
    finished: float | None
    worker_pid: int | None = None


@dataclass(frozen=True)
class TuningResult:
    """What a study found, and how it got there."""

    study_name: str
    storage: str
    metric: str
    direction: str
    best_family: str
    best_params: dict[str, Any]
    best_value: float
    trials: tuple[TrialRecord, ...]
    importances: dict[str, float] = field(default_factory=dict)
    workers: int = 1
    seconds: float = 0.0
    warm_start: dict[str, Any] | None = None

    @property
    def completed(self) -> int:
        return sum(t.state == "COMPLETE" for t in self.trials)

    @property
    def pruned(self) -> int:
        return sum(t.state == "PRUNED" for t in self.trials)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("trials")
        data.update(trials=len(self.trials), completed=self.completed, pruned=self.pruned)
        return data


def _unprefix(params: dict[str, Any], family: str) -> dict[str, Any]:
    prefix = f"{family}{SEP}"
    return {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}


def _epoch(moment) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # Optuna stores naive local times
    return moment.astimezone(UTC).timestamp()


def _records(study, families: list[ModelFamily]) -> tuple[TrialRecord, ...]:
    out = []
    for t in study.get_trials(deepcopy=False):
        family = t.params.get("family", families[0].value)
        out.append(
            TrialRecord(
                number=t.number,
                state=t.state.name,
                value=t.value,
                family=str(family),
                params=_unprefix(t.params, str(family)),
                intermediate={int(k): float(v) for k, v in t.intermediate_values.items()},
                started=_epoch(t.datetime_start),
                finished=_epoch(t.datetime_complete),
            )
        )
    return tuple(out)


def _importances(study) -> dict[str, float]:
    import warnings

    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "few trials per regime": expected on tiny studies
            found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}  # too few completed trials, or no shared parameters
    return {k: float(v) for k, v in found.items()}


def tune(
    train: pd.DataFrame,
    config: Config,
    url: str,
    study_name: str,
    warm_start: dict[str, Any] | None = None,
) -> TuningResult:
    """Run one study on the training part (the holdout is never passed in) and read it back.

    Args:
        train: the training part of the window; folds are cut inside it.
        config: `tuning` (budget, workers, folds, pruning, families), task and primary metric.
        url: the Optuna storage (see `open_storage`).
        study_name: a new or existing study in that storage; trials add up.
        warm_start: a trial to evaluate first (e.g. from `warm_start_trial`).

    Raises:
        NotEnoughData: the training part is too small for the folds, or no trial completed.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tuning = config.tuning
    families = families_of(config)
    validation_folds(train, config, tuning.folds)  # fail early, in the caller, when too small
    metric = config.gates.primary_metric
    direction = "maximize" if higher_is_better(metric) else "minimize"
    storage = open_storage(url)
    study = optuna.create_study(
        study_name=study_name, storage=storage, direction=direction, load_if_exists=True
    )
    if warm_start:
        study.enqueue_trial(warm_start, skip_if_exists=True)
    started = time.time()
    deadline = started + tuning.timeout_seconds if tuning.timeout_seconds else None
    config_json = config.model_dump(mode="json")
    workers = min(tuning.workers, tuning.trials)
    shares = [tuning.trials // workers + (i < tuning.trials % workers) for i in range(workers)]
    if config.profile == Profile.CLUSTER and workers > 1:
        _optimize_on_dask(train, config, url, study_name, shares, deadline)
    elif workers == 1:
        _optimize(train, config_json, url, study_name, 0, shares[0], deadline)
    else:
        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(
                target=_optimize,
                args=(train, config_json, url, study_name, i, shares[i], deadline),
                name=f"ctloop-tune-{i}",
            )
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [p.exitcode for p in procs if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"tuning workers failed with exit codes {failed}")
    seconds = time.time() - started
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = _records(study, families)
    if not any(t.state == "COMPLETE" for t in trials):
        raise NotEnoughData(f"no tuning trial of study {study_name} completed")
    best = study.best_trial
    family = str(best.params.get("family", families[0].value))
    return TuningResult(
        study_name=study_name,
        storage=url,
        metric=metric,
        direction=direction,
        best_family=family,
        best_params=_unprefix(best.params, family),
        best_value=float(best.value),
        trials=trials,
        importances=_importances(study),
        workers=workers,
        seconds=seconds,
        warm_start=warm_start,
    )
