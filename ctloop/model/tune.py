"""Hyperparameter tuning: an Optuna study over the families, folds as pruning steps.

A study is split into three pure steps so that the fan-out can live outside this module:

- `prepare_study` creates (or joins) the study in its storage, enqueues the warm start, and cuts
  the trial budget into one share per worker (`StudyPlan`);
- `run_share` runs one share in the calling process: it joins the study and optimises with its
  own sampler seed. Any number of shares, in any processes or hosts that reach the storage (a
  journal file in the embedded profile, an RDB such as PostgreSQL in the cluster profile), add
  trials to the one study: Optuna's storage is the coordination point (trial numbers, TPE
  history, pruning decisions);
- `read_result` reads every trial back into a `TuningResult`.

Who runs the shares is the caller's choice: in the cluster profile `flows/fanout.py` submits
each share as a Prefect task to the Dask task runner; on the embedded profile
`run_shares_in_processes` starts one spawned process per share (see `flows/fanout.py` for why not
Prefect's process pool), and `tune` does all three steps without Prefect. Each share limits
BLAS/OpenMP to one thread, so N shares use N cores without oversubscription.
"""

from __future__ import annotations

import math
import multiprocessing
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctloop.config.settings import Config, ModelFamily, Task
from ctloop.errors import ConfigError, NotEnoughData
from ctloop.model.evaluate import evaluate_predictions, higher_is_better
from ctloop.model.train import build_pipeline, feature_columns, prepare_features, validation_folds

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


def run_share(train: pd.DataFrame, config: Config, plan: StudyPlan, worker: int) -> int:
    """Join the study of `plan` and run share `worker` of its trials here; returns trials run.

    Trials stop at the share's count or at the plan's deadline, whichever comes first. Each
    trial records where it ran as the user attribute `worker` (see `worker_label`).
    """
    import optuna
    from threadpoolctl import threadpool_limits

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=plan.study_name,
        storage=open_storage(plan.storage),
        sampler=_sampler(config, worker),
        pruner=_pruner(config),
    )
    folds = validation_folds(train, config, config.tuning.folds)
    objective = Objective(train, config, folds, families_of(config))
    timeout = None if plan.deadline is None else max(0.0, plan.deadline - time.time())
    label = worker_label()
    ran = 0

    def labelled(trial):
        nonlocal ran
        ran += 1
        trial.set_user_attr("worker", label)
        return objective(trial)

    with threadpool_limits(limits=1):
        study.optimize(
            labelled,
            n_trials=plan.shares[worker],
            timeout=timeout,
            catch=(ValueError, NotEnoughData),
        )
    return ran


def worker_label() -> str:
    """The Dask worker's name when a trial runs on one (cluster profile), else the pid."""
    import os

    try:
        from distributed import get_worker

        return f"dask:{get_worker().name}"
    except (ImportError, ValueError):
        return f"pid:{os.getpid()}"


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


@dataclass(frozen=True)
class StudyPlan:
    """A prepared study: where it lives and how its trials are shared out among workers."""

    study_name: str
    storage: str
    metric: str
    direction: str
    shares: tuple[int, ...]
    started: float
    deadline: float | None
    warm_start: dict[str, Any] | None = None

    @property
    def workers(self) -> int:
        return len(self.shares)


def split_trials(trials: int, workers: int) -> tuple[int, ...]:
    """`trials` cut into at most `workers` shares that differ by one at most (none empty)."""
    workers = max(1, min(workers, trials))
    return tuple(trials // workers + (i < trials % workers) for i in range(workers))


def prepare_study(
    train: pd.DataFrame,
    config: Config,
    url: str,
    study_name: str,
    warm_start: dict[str, Any] | None = None,
) -> StudyPlan:
    """Create (or join) the study, enqueue the warm start, and share the budget out.

    Args:
        train: the training part of the window; checked here to be large enough for the folds.
        config: `tuning` (budget, workers, folds, timeout), task and primary metric.
        url: the Optuna storage (see `open_storage`).
        study_name: a new or existing study in that storage; trials add up.
        warm_start: a trial to evaluate first (e.g. from `warm_start_trial`).

    Raises:
        NotEnoughData: the training part is too small for the folds.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tuning = config.tuning
    families_of(config)  # a bad family list fails here, before any worker starts
    validation_folds(train, config, tuning.folds)  # fail early, in the caller, when too small
    metric = config.gates.primary_metric
    direction = "maximize" if higher_is_better(metric) else "minimize"
    study = optuna.create_study(
        study_name=study_name, storage=open_storage(url), direction=direction, load_if_exists=True
    )
    with warnings.catch_warnings():  # experimental in Optuna 4: names the dashboard's axis
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric])
    if warm_start:
        study.enqueue_trial(warm_start, skip_if_exists=True)
    started = time.time()
    return StudyPlan(
        study_name=study_name,
        storage=url,
        metric=metric,
        direction=direction,
        shares=split_trials(tuning.trials, tuning.workers),
        started=started,
        deadline=started + tuning.timeout_seconds if tuning.timeout_seconds else None,
        warm_start=warm_start,
    )


def read_result(plan: StudyPlan, config: Config) -> TuningResult:
    """Every trial of the study, the best one and the parameter importances.

    Raises:
        NotEnoughData: no trial of the study completed.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seconds = time.time() - plan.started
    families = families_of(config)
    study = optuna.load_study(study_name=plan.study_name, storage=open_storage(plan.storage))
    trials = _records(study, families)
    if not any(t.state == "COMPLETE" for t in trials):
        raise NotEnoughData(f"no tuning trial of study {plan.study_name} completed")
    best = study.best_trial
    family = str(best.params.get("family", families[0].value))
    return TuningResult(
        study_name=plan.study_name,
        storage=plan.storage,
        metric=plan.metric,
        direction=plan.direction,
        best_family=family,
        best_params=_unprefix(best.params, family),
        best_value=float(best.value),
        trials=trials,
        importances=_importances(study),
        workers=plan.workers,
        seconds=seconds,
        warm_start=plan.warm_start,
    )


def _run_share_in_process(train: pd.DataFrame, config_json: dict, plan: StudyPlan, worker: int):
    run_share(train, Config.model_validate(config_json), plan, worker)


def run_shares_in_processes(train: pd.DataFrame, config: Config, plan: StudyPlan) -> None:
    """Every share of `plan` in its own spawned process; a single share runs in this one.

    Raises:
        RuntimeError: a worker process failed.
    """
    if plan.workers == 1:
        run_share(train, config, plan, 0)
        return
    config_json = config.model_dump(mode="json")
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_run_share_in_process,
            args=(train, config_json, plan, i),
            name=f"ctloop-tune-{i}",
        )
        for i in range(plan.workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"tuning workers failed with exit codes {failed}")


def tune(
    train: pd.DataFrame,
    config: Config,
    url: str,
    study_name: str,
    warm_start: dict[str, Any] | None = None,
) -> TuningResult:
    """One whole study without Prefect: shares in spawned processes (one share: in this one).

    Raises:
        NotEnoughData: the training part is too small for the folds, or no trial completed.
        RuntimeError: a worker process failed.
    """
    plan = prepare_study(train, config, url, study_name, warm_start)
    run_shares_in_processes(train, config, plan)
    return read_result(plan, config)
