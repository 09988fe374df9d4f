"""The label-free estimator of a registered version, fitted on its own holdout and kept in the home.

Training is not changed: the holdout is rebuilt from the version's lineage (its snapshots and its
split, as `ctloop lineage --rebuild` re-creates them), predicted by the version's pipeline, and
the calibrator (classifiers, CBPE) or the loss model (regression, DLE) of
`ctloop.monitor.estimate` is fitted on it. The calibrator is cached as JSON and the loss model
with skops under `<home>/estimators/`, so a second call does not rebuild anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctloop.config.settings import Config, Task
from ctloop.errors import InputError
from ctloop.monitor.estimate import (
    Calibrator,
    Estimate,
    LossModel,
    chunks,
    debias,
    estimate_classifier,
    estimate_regression,
    expected_metric,
    fit_bootstrap_calibrators,
    fit_calibrator,
    fit_loss_model,
    widen,
)

ESTIMABLE = {
    Task.BINARY: ("roc_auc", "accuracy", "f1"),
    Task.MULTICLASS: ("accuracy", "roc_auc", "f1_macro"),
    Task.REGRESSION: ("rmse", "mae"),
}
CACHE_FORMAT = (
    4  # 2: bootstrap calibrators; 3: 50 of them; 4: smoothed isotonic, smoothed bootstrap
)
LOSS_TYPES = frozenset(
    {
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    }
)


@dataclass(frozen=True)
class VersionEstimator:
    """What estimating a version's metric needs besides its pipeline.

    Attributes:
        reference: the version's holdout metrics (as recorded on its MLflow run).
        calibrator: classifiers: the isotonic maps fitted on the holdout.
        loss: regression: the models of the error fitted on the holdout.
    """

    version: int
    run_id: str
    task: Task
    reference: dict[str, float]
    holdout_rows: int
    split: str
    calibrator: Calibrator | None = None
    loss: LossModel | None = None
    # calibrators of bootstrap resamples of the holdout: the calibration's own error
    bootstrap: tuple[Calibrator, ...] = ()


def choose_metric(task: Task, requested: str | None, primary: str | None) -> str:
    """The metric to estimate: the requested one, else the primary metric when it can be
    estimated without labels, else the task's first estimable metric.

    Raises:
        InputError: the requested metric has no label-free estimate for this task.
    """
    known = ESTIMABLE[Task(task)]
    if requested:
        if requested not in known:
            raise InputError(
                f"--metric {requested}: no label-free estimate for a {Task(task).value} model "
                f"(one of {', '.join(known)})"
            )
        return requested
    return primary if primary in known else known[0]


def signature_inputs(frame: pd.DataFrame, signature: list[list[str]], version: int):
    """The pipeline's input frame from a version's signature, as batch scoring prepares it.

    Raises:
        InputError: naming the feature columns the frame lacks.
    """
    from ctloop.model.train import prepare_features

    missing = [c for c, _ in signature if c not in frame.columns]
    if missing:
        raise InputError(f"lacks feature column(s) {', '.join(missing)} of version {version}")
    numeric = [n for n, kind in signature if kind == "numeric"]
    others = [n for n, kind in signature if kind == "categorical"]
    others += [n for n, kind in signature if kind == "boolean"]
    return prepare_features(frame, numeric, others)


def fit_estimator(
    pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    task: Task,
    *,
    version: int = 0,
    run_id: str = "",
    reference: dict[str, float] | None = None,
    split: str = "",
) -> VersionEstimator:
    """Fit the calibrator (classifiers) or the loss model (regression) on a holdout.

    Args:
        pipeline: the version's fitted pipeline.
        X: the holdout's inputs, prepared as the pipeline reads them.
        y: the holdout's labels.
        reference: the version's holdout metrics; computed from X and y when None.
    """
    from ctloop.config.settings import Config as _Config
    from ctloop.model.evaluate import evaluate_predictions

    task = Task(task)
    if reference is None:
        config = _Config.model_validate({"dataset": {"task": task.value, "target": "y"}})
        reference = evaluate_predictions(pipeline, X, y, config)
    common = dict(
        version=version,
        run_id=run_id,
        task=task,
        reference=dict(reference),
        holdout_rows=len(X),
        split=split,
    )
    if task == Task.REGRESSION:
        loss = fit_loss_model(X, pipeline.predict(X), y.to_numpy())
        return VersionEstimator(**common, loss=loss)
    proba = pipeline.predict_proba(X)
    classes = list(pipeline.classes_)
    calibrator = fit_calibrator(proba, y.to_numpy(), classes)
    bootstrap = tuple(fit_bootstrap_calibrators(proba, y.to_numpy(), classes))
    return VersionEstimator(**common, calibrator=calibrator, bootstrap=bootstrap)


def _realized(metric: str, task: Task, classes: list[Any], y, output: np.ndarray) -> float | None:
    """The metric on labelled rows (when the file carries labels), for comparison."""
    from sklearn import metrics as skm

    keep = pd.notna(y)
    y, output = np.asarray(y)[keep], output[keep]
    if len(y) == 0:
        return None
    if task == Task.REGRESSION:
        error = y.astype(float) - output
        return float(np.abs(error).mean() if metric == "mae" else np.sqrt((error**2).mean()))
    pred = np.asarray(classes, dtype=object)[output.argmax(axis=1)]
    y = y.astype(object)
    if metric == "accuracy":
        return float((pred == y).mean())
    if metric == "f1":
        return float(skm.f1_score(y == classes[1], pred == classes[1], zero_division=0))
    if metric == "f1_macro":
        return float(skm.f1_score(y, pred, average="macro", labels=classes, zero_division=0))
    present = set(y)
    if task == Task.BINARY:
        return (
            float(skm.roc_auc_score(y == classes[1], output[:, 1])) if len(present) == 2 else None
        )
    if len(present) < len(classes):
        return None
    return float(skm.roc_auc_score(y, output, multi_class="ovr", labels=classes))


def estimate_chunk(
    estimator: VersionEstimator, output: np.ndarray, metric: str, *, seed: int = 0
) -> Estimate:
    """A classifier's metric on one chunk, from the probabilities the model served: calibrated,
    corrected by the calibration's bias and with the interval widened by its spread, both
    measured over the smoothed-bootstrap calibrators (see `fit_bootstrap_calibrators`: a
    calibrator refitted on labels drawn from the holdout's own calibration errs about it as the
    holdout's calibrator errs about the truth; isotonic fits overfit, so the plain estimate of
    ROC AUC runs high)."""
    output = np.asarray(output, dtype=float)
    predicted = output.argmax(axis=1)  # what the model serves, whatever calibration moves
    calibrated = estimator.calibrator.apply(output)
    found = estimate_classifier(calibrated, metric, seed=seed, predicted=predicted, scores=output)
    values = [
        expected_metric(c.apply(output), metric, predicted, output) for c in estimator.bootstrap
    ]
    center = expected_metric(calibrated, metric, predicted, output)
    if center is None or any(v is None for v in values):  # F1: draws (common random numbers)
        center, *values = [
            estimate_classifier(
                c.apply(output), metric, draws=40, seed=seed, predicted=predicted, scores=output
            ).estimate
            for c in (estimator.calibrator, *estimator.bootstrap)
        ]
    values = [v for v in values if v is not None]
    if len(values) < 2 or center is None:
        return found
    return widen(debias(found, float(np.mean(values)) - center), float(np.std(values, ddof=1)))


def estimate_frame(
    estimator: VersionEstimator,
    pipeline,
    X: pd.DataFrame,
    metric: str,
    *,
    chunk_rows: int,
    starts: pd.Series | None = None,
    labels: pd.Series | None = None,
) -> dict[str, Any]:
    """The answer of `ctloop estimate`: the metric estimated on all rows and per chunk.

    Args:
        X: the rows' inputs, prepared as the pipeline reads them, in the chunks' order.
        starts: the rows' timestamps (chunk start and end); row numbers when None.
        labels: true labels when the file has them: `realized` is set beside each estimate.
    """
    if estimator.calibrator is not None:
        output = np.asarray(pipeline.predict_proba(X), dtype=float)  # what the model serves
        classes = estimator.calibrator.classes

        def one(rows: np.ndarray):
            return estimate_chunk(estimator, output[rows], metric)
    else:
        output = np.asarray(pipeline.predict(X), dtype=float)
        classes = []

        def one(rows: np.ndarray):
            part = X.iloc[rows]
            return estimate_regression(estimator.loss, part, output[rows], metric)

    index = pd.DataFrame({"__row__": np.arange(len(X))})
    if starts is not None:
        index["__time__"] = starts.to_numpy()
    answer_chunks = []
    for start, end, part in chunks(index, chunk_rows, "__time__" if starts is not None else None):
        rows = part["__row__"].to_numpy()
        entry = {"start": start, "end": end, **one(rows).to_dict()}
        if labels is not None:
            entry["realized"] = _realized(
                metric, estimator.task, classes, labels.iloc[rows], output[rows]
            )
        answer_chunks.append(entry)
    whole = one(np.arange(len(X)))
    answer = {
        "metric": metric,
        "version": estimator.version,
        "reference": estimator.reference.get(metric),
        "estimate": whole.estimate,
        "ci_low": whole.ci_low,
        "ci_high": whole.ci_high,
        "rows": whole.rows,
        "holdout_rows": estimator.holdout_rows,
        "chunks": answer_chunks,
    }
    if labels is not None:
        answer["realized"] = _realized(metric, estimator.task, classes, labels, output)
    return answer


# --- the cache: <home>/estimators/<model>-v<version>.json (+ .skops for a loss model) -------


def _cache_paths(root: Path, name: str, version: int) -> tuple[Path, Path]:
    stem = root / "estimators" / f"{name}-v{version}"
    return stem.with_suffix(".json"), stem.with_suffix(".skops")


def save_estimator(estimator: VersionEstimator, root: Path, name: str) -> Path:
    """Write the estimator under the home (JSON, and skops for a loss model); returns the JSON."""
    import os
    import tempfile

    meta_path, loss_path = _cache_paths(root, name, estimator.version)
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    if estimator.loss is not None:
        import skops.io as sio

        loss = estimator.loss
        sio.dump(
            {"absolute": loss.absolute, "squared": loss.squared, "columns": loss.columns}, loss_path
        )
    data = {
        "format": CACHE_FORMAT,
        "version": estimator.version,
        "run_id": estimator.run_id,
        "task": estimator.task.value,
        "reference": estimator.reference,
        "holdout_rows": estimator.holdout_rows,
        "split": estimator.split,
        "calibrator": estimator.calibrator.to_dict() if estimator.calibrator else None,
        "bootstrap": [c.to_dict() for c in estimator.bootstrap],
        "loss": loss_path.name if estimator.loss is not None else None,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{meta_path.name}.", dir=meta_path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(tmp, meta_path)
    return meta_path


def load_estimator(root: Path, name: str, version: int, run_id: str) -> VersionEstimator | None:
    """The cached estimator of a version; None when there is none, it is unreadable, or it
    belongs to another run (a home made anew reuses version numbers)."""
    meta_path, loss_path = _cache_paths(root, name, version)
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
        if data.get("format") != CACHE_FORMAT or data.get("run_id") != run_id:
            return None
        loss = None
        if data.get("loss"):
            import skops.io as sio

            needed = set(sio.get_untrusted_types(file=loss_path))
            if needed - LOSS_TYPES:
                return None
            parts = sio.load(loss_path, trusted=sorted(needed))
            loss = LossModel(parts["absolute"], parts["squared"], list(parts["columns"]))
        calibrator = Calibrator.from_dict(data["calibrator"]) if data.get("calibrator") else None
        return VersionEstimator(
            version=int(data["version"]),
            run_id=str(data["run_id"]),
            task=Task(data["task"]),
            reference={k: float(v) for k, v in data["reference"].items()},
            holdout_rows=int(data["holdout_rows"]),
            split=str(data["split"]),
            calibrator=calibrator,
            loss=loss,
            bootstrap=tuple(Calibrator.from_dict(c) for c in data.get("bootstrap") or []),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- the edge: the version from MLflow, its holdout from the lake ---------------------------


def resolve_version(registry, text: str | None):
    """The version a person means (`3`, `v3`, `1.2.0`, an alias; see
    `ctloop.registry.lineage.resolve_version`); the champion when None.

    Raises:
        InputError: no such version (or no champion).
    """
    from ctloop.names import CHAMPION
    from ctloop.registry.lineage import resolve_version as version_number

    if text is None:
        ref = registry.by_alias(CHAMPION)
        if ref is None:
            raise InputError("version champion: no champion yet (train one first)")
        return ref
    return registry.version(version_number(registry, text))


def rebuild_holdout(config: Config, ref) -> tuple[pd.DataFrame, Config, str]:
    """The version's holdout rows, its config (dataset and training as recorded) and its split
    strategy, re-created from its lineage record as `rebuild_version` re-creates them.

    Raises:
        InputError: no lineage record, or its snapshots are missing or changed.
    """
    from ctloop.data.privacy import without_identifying
    from ctloop.lake import snapshots as lake
    from ctloop.model.train import split_holdout
    from ctloop.registry.lineage import RECIPE_FILE, Recipe, check_digests
    from ctloop.registry.store import open_registry
    from ctloop.stores.home import home_of

    text = open_registry(config).run_text(ref.run_id, RECIPE_FILE)
    if not text:
        raise InputError(f"version {ref.version}: its run has no {RECIPE_FILE}, no holdout")
    recipe = Recipe.from_json(text)
    home = home_of(config)
    check_digests(recipe, {m.snapshot: m.sha256 for m in lake.list_snapshots(home)})
    frame = without_identifying(
        lake.load_snapshots(home, recipe.snapshots), lake.current_schema(home)
    )
    version_config = recipe.config(config)
    split = split_holdout(frame, version_config)
    return split.holdout, version_config, split.strategy


def estimator_of(config: Config, ref, pipeline) -> VersionEstimator:
    """The version's estimator: from the home's cache, else fitted on its rebuilt holdout."""
    from ctloop.registry.store import open_registry
    from ctloop.stores.home import home_of

    registry = open_registry(config)
    root = home_of(config).root
    cached = load_estimator(root, registry.name, ref.version, ref.run_id)
    if cached is not None:
        return cached
    holdout, version_config, strategy = rebuild_holdout(config, ref)
    target = version_config.require_target()
    recorded = {
        k.removeprefix("holdout_"): float(v)
        for k, v in registry.run_metrics(ref.run_id).items()
        if k.startswith("holdout_")
    }
    X = signature_inputs(holdout, ref.signature, ref.version)
    estimator = fit_estimator(
        pipeline,
        X,
        holdout[target].reset_index(drop=True),
        version_config.dataset.task,
        version=ref.version,
        run_id=ref.run_id,
        reference=recorded or None,
        split=strategy,
    )
    save_estimator(estimator, root, registry.name)
    return estimator


def estimate_version(
    config: Config,
    frame: pd.DataFrame,
    version: str | None = None,
    metric: str | None = None,
    chunk_rows: int = 1000,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """Estimate a version's metric (the champion's by default) on rows without labels.

    Args:
        frame: the rows, typed as ingestion types them (`serving.batch.read_scoring_input`).
        timestamp: the column whose first and last value name each chunk; row numbers if None.

    Raises:
        InputError: no such version, a metric it cannot estimate, missing feature columns.
    """
    from ctloop.registry.store import open_registry

    if chunk_rows < 1:
        raise InputError(f"--chunk-rows {chunk_rows}: must be at least 1")
    if frame.empty:
        raise InputError("no rows to estimate on")
    registry = open_registry(config)
    ref = resolve_version(registry, version)
    pipeline = registry.load(ref)
    estimator = estimator_of(config, ref, pipeline)
    chosen = choose_metric(estimator.task, metric, config.gates.primary_metric)
    if timestamp and timestamp in frame.columns:
        frame = frame.sort_values(timestamp, kind="stable")
    frame = frame.reset_index(drop=True)
    X = signature_inputs(frame, ref.signature, ref.version)
    target = config.dataset.target
    labels = frame[target] if target and target in frame.columns else None
    if labels is not None and labels.isna().all():
        labels = None
    starts = frame[timestamp] if timestamp and timestamp in frame.columns else None
    answer = estimate_frame(
        estimator, pipeline, X, chosen, chunk_rows=chunk_rows, starts=starts, labels=labels
    )
    return {**answer, "semver": ref.semver}


# --- the realized metric beside the estimate, when the labels come ---------------------------


def with_errors(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer with `error` (estimate minus realized) wherever a realized value is known:
    on the whole and on each chunk whose rows carry labels."""

    def one(part: dict[str, Any]) -> dict[str, Any]:
        if part.get("realized") is None or part.get("estimate") is None:
            return part
        return {**part, "error": float(part["estimate"] - part["realized"])}

    return {**one(answer), "chunks": [one(c) for c in answer.get("chunks", [])]}


def _log_path(root: Path, name: str) -> Path:
    return root / "estimators" / f"{name}-estimates.jsonl"


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:  # a line cut by a crash: the others stand
            continue
    return entries


def _write_log(path: Path, entries: list[dict[str, Any]]) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(e, default=str) + "\n" for e in entries)
    os.replace(tmp, path)


def pending_entry(
    found: dict[str, Any], source: str, series_run: str, step: int
) -> dict[str, Any] | None:
    """The log entry of a batch's estimate whose labels are still to come, or None when its
    rows have no timestamps (nothing would tell later which labelled rows are its own)."""
    parts = found.get("chunks") or []
    if not parts or isinstance(parts[0].get("start"), int):
        return None
    return {
        "version": found["version"],
        "metric": found["metric"],
        "source": source,
        "start": parts[0]["start"],
        "end": parts[-1]["end"],
        "rows": found["rows"],
        **{k: found.get(k) for k in ("estimate", "ci_low", "ci_high", "reference")},
        "series_run": series_run,
        "step": step,
        "realized": None,
    }


def record_estimates(
    config: Config, found: dict[str, Any], source: str, series_run: str, step: int
) -> None:
    """Keep the estimate of an unlabelled batch, to set its realized metric beside it when the
    labels of its rows arrive (`settle_estimates`)."""
    from ctloop.registry.store import open_registry
    from ctloop.stores.home import home_of

    entry = pending_entry(found, source, series_run, step)
    if entry is None:
        return
    path = _log_path(home_of(config).root, open_registry(config).name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, default=str) + "\n")


def rows_in_window(frame: pd.DataFrame, column: str, start: str, end: str) -> pd.DataFrame:
    """The rows of `frame` whose `column` lies in [start, end] (as timestamps)."""
    times = pd.to_datetime(frame[column], errors="coerce", format="mixed")
    times = times.dt.tz_localize("UTC") if times.dt.tz is None else times.dt.tz_convert("UTC")
    return frame[(times >= _instant(start)) & (times <= _instant(end))]


def _instant(text: str) -> pd.Timestamp:
    stamp = pd.Timestamp(text)
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


def _overlaps(manifest, start: str, end: str) -> bool:
    """Whether a snapshot's time range meets [start, end] (naive times read as UTC)."""
    if not manifest.time_min or not manifest.time_max:
        return False
    try:
        return _instant(manifest.time_min) <= _instant(end) and _instant(
            manifest.time_max
        ) >= _instant(start)
    except (ValueError, TypeError):
        return False


def settle_estimates(config: Config) -> list[dict[str, Any]]:
    """Earlier estimates whose rows' labels are now in the lake get `realized` and `error`.

    The rows of an estimate are the labelled lake rows in its time window [start, end]; it is
    settled once at least as many have arrived as were estimated (labels that come in parts
    wait for the last). Returns the entries settled by this call.
    """
    from ctloop.lake import snapshots as lake
    from ctloop.registry.store import open_registry
    from ctloop.stores.home import home_of

    column, target = config.dataset.timestamp, config.dataset.target
    registry = open_registry(config)
    path = _log_path(home_of(config).root, registry.name)
    entries = _read_log(path)
    waiting = [e for e in entries if e.get("realized") is None]
    if not waiting or not column or not target:
        return []
    home = home_of(config)
    manifests = lake.list_snapshots(home)
    settled = []
    for entry in waiting:
        ids = [m.snapshot for m in manifests if _overlaps(m, entry["start"], entry["end"])]
        if not ids:
            continue
        frame = lake.load_snapshots(home, ids)
        if column not in frame.columns or target not in frame.columns:
            continue
        rows = rows_in_window(frame, column, entry["start"], entry["end"])
        rows = rows[rows[target].notna()]
        if len(rows) < int(entry["rows"]):
            continue
        ref = registry.version(int(entry["version"]))
        pipeline = registry.load(ref)
        estimator = estimator_of(config, ref, pipeline)
        X = signature_inputs(rows.reset_index(drop=True), ref.signature, ref.version)
        if estimator.calibrator is not None:
            output, classes = np.asarray(pipeline.predict_proba(X)), estimator.calibrator.classes
        else:
            output, classes = np.asarray(pipeline.predict(X), dtype=float), []
        realized = _realized(entry["metric"], estimator.task, classes, rows[target], output)
        if realized is None:
            continue
        entry.update(
            realized=realized,
            error=float(entry["estimate"] - realized),
            covered=bool(entry["ci_low"] <= realized <= entry["ci_high"]),
            labelled_rows=len(rows),
        )
        settled.append(entry)
    if settled:
        _write_log(path, entries)
    return settled
