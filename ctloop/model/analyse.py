"""Model analysis: slices and fairness gaps, confusion matrix, permutation importance, what-if,
plots and a model card. Pure: takes a fitted model and labelled rows, returns values and bytes."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ctloop.config.settings import Config, Task
from ctloop.model import metrics as m
from ctloop.model.evaluate import evaluate_predictions, evaluate_with_spread, higher_is_better
from ctloop.model.train import prepare_features

MISSING = "(missing)"


@dataclass(frozen=True)
class SliceGap:
    """The largest difference of the primary metric between slices of one column."""

    column: str
    metric: str
    best: str
    best_value: float
    worst: str
    worst_value: float

    @property
    def gap(self) -> float:
        return abs(self.best_value - self.worst_value)


@dataclass(frozen=True)
class WhatIf:
    """How the prediction of one example moves when one feature is set to another value."""

    feature: str
    original: Any
    value: Any
    prediction: float
    baseline: float

    @property
    def delta(self) -> float:
        return self.prediction - self.baseline


@dataclass(frozen=True)
class LeakageFinding:
    """A feature that alone nearly predicts the target: a possible leak of the label."""

    feature: str
    rule: str  # "alone" (a one-feature model nearly matches) or "dominates" (importance)
    metric: str
    single: float | None  # the one-feature model's holdout metric
    full: float  # the full model's
    importance: float
    rest: float  # summed importance of every other feature

    @property
    def reason(self) -> str:
        if self.rule == "alone":
            what = (
                f"alone reaches {self.metric} {self.single:.4f} on the holdout (full model "
                f"{self.full:.4f})"
            )
        else:
            what = (
                f"holds the model's importance ({self.importance:.4g} against "
                f"{self.rest:.4g} for all other features together; {self.metric} "
                f"{self.full:.4f})"
            )
        return (
            f"warning: possible target leakage: feature '{self.feature}' {what}; check that "
            f"it is known before the label, else leave it out (--exclude {self.feature})"
        )


@dataclass(frozen=True)
class Analysis:
    """Everything the analyse stage found about one model on the holdout."""

    metrics: dict[str, float]
    slices: dict[str, dict[str, dict[str, float]]]
    gaps: tuple[SliceGap, ...]
    importances: dict[str, float]
    what_if: tuple[WhatIf, ...]
    confusion: dict[str, Any] | None = None
    plots: dict[str, bytes] = field(default_factory=dict, repr=False)
    leakage: tuple[LeakageFinding, ...] = ()

    @property
    def warnings(self) -> tuple[str, ...]:
        """Findings for the blessing's reasons (possible leaks)."""
        return tuple(f.reason for f in self.leakage)

    def gaps_of(self, columns) -> tuple[SliceGap, ...]:
        """The slice gaps of these columns only (e.g. the sensitive ones, for the fairness gate)."""
        wanted = set(columns)
        return tuple(g for g in self.gaps if g.column in wanted)

    def as_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "slices": self.slices,
            "gaps": [{**g.__dict__, "gap": g.gap} for g in self.gaps],
            "importances": self.importances,
            "what_if": [{**w.__dict__, "delta": w.delta} for w in self.what_if],
            "confusion": self.confusion,
            "leakage": [{**f.__dict__, "reason": f.reason} for f in self.leakage],
        }


# --- slices -------------------------------------------------------------------------------


def slice_columns(frame: pd.DataFrame, categorical: list[str], config: Config) -> list[str]:
    """Categorical features (when configured) and the sensitive and gated columns present."""
    wanted = list(categorical) if config.analysis.slice_categoricals else []
    wanted += config.analysis.sensitive_columns + config.gates.slice_columns
    return [c for c in dict.fromkeys(wanted) if c in frame.columns]


def slice_metrics(
    model,
    frame: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    columns: list[str],
    config: Config,
) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics per value of each column (the most frequent values; small slices only counted).

    Returns:
        column -> value -> metrics (always with `rows`; the rest only for slices of at least
        `analysis.min_slice_rows` rows).
    """
    return merge_slices(
        [slice_column_metrics(model, frame, numeric, categorical, c, config) for c in columns]
    )


def slice_column_metrics(
    model,
    frame: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    column: str,
    config: Config,
) -> dict[str, dict[str, dict[str, float]]]:
    """`slice_metrics` of one column (`{column: {value: metrics}}`): the unit of the fan-out."""
    target = config.require_target()
    X = prepare_features(frame, numeric, categorical)
    y = frame[target]
    values = frame[column].astype(object).where(frame[column].notna(), MISSING).astype(str)
    top = values.value_counts().head(config.analysis.max_slice_values).index
    per_value: dict[str, dict[str, float]] = {}
    for value in top:
        mask = (values == value).to_numpy()
        if mask.sum() < config.analysis.min_slice_rows:
            per_value[value] = {"rows": float(mask.sum())}
            continue
        per_value[value] = evaluate_predictions(model, X[mask], y[mask], config)
    return {column: per_value}


def merge_slices(
    parts: list[dict[str, dict[str, dict[str, float]]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """Per-column results in the order given, as one `slice_metrics` answer."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for part in parts:
        out.update(part)
    return out


def largest_gaps(
    slices: dict[str, dict[str, dict[str, float]]], metric: str
) -> tuple[SliceGap, ...]:
    """Per column, the best and the worst slice on `metric` (columns with two scored slices)."""
    gaps = []
    sign = 1 if higher_is_better(metric) else -1
    for column, per_value in slices.items():
        scored = {v: m[metric] for v, m in per_value.items() if metric in m}
        if len(scored) < 2:
            continue
        best = max(scored, key=lambda v: sign * scored[v])
        worst = min(scored, key=lambda v: sign * scored[v])
        gaps.append(SliceGap(column, metric, best, scored[best], worst, scored[worst]))
    return tuple(sorted(gaps, key=lambda g: -g.gap))


# --- importance and what-if ---------------------------------------------------------------


def _sample(frame: pd.DataFrame, config: Config) -> pd.DataFrame:
    if len(frame) <= config.analysis.max_rows:
        return frame
    return frame.sample(config.analysis.max_rows, random_state=config.training.seed)


def permutation_importances(
    model, frame: pd.DataFrame, numeric: list[str], categorical: list[str], config: Config
) -> dict[str, float]:
    """Drop of the primary metric when one raw input column is shuffled (mean over repeats)."""
    from sklearn.inspection import permutation_importance

    metric = config.gates.primary_metric
    sign = 1.0 if higher_is_better(metric) else -1.0
    frame = _sample(frame, config)
    X = prepare_features(frame, numeric, categorical)
    y = frame[config.require_target()]

    def score(estimator, X_, y_) -> float:
        value = evaluate_predictions(estimator, X_, y_, config).get(metric)
        return sign * (value if value is not None else np.nan)

    result = permutation_importance(
        model,
        X,
        y,
        scoring=score,
        n_repeats=config.analysis.permutation_repeats,
        random_state=config.training.seed,
    )
    found = {c: float(v) for c, v in zip(X.columns, result.importances_mean, strict=True)}
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def _predict_one(model, X: pd.DataFrame, config: Config) -> np.ndarray:
    """The number a what-if moves: P(positive) for binary, P(top class) otherwise, or the value."""
    if config.dataset.task == Task.REGRESSION:
        return np.asarray(model.predict(X), dtype=float)
    proba = model.predict_proba(X)
    return proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)


def what_if(
    model,
    frame: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    config: Config,
    features: list[str],
    row: int = 0,
) -> tuple[WhatIf, ...]:
    """Set one feature of one example to other typical values and record the prediction.

    Numeric features take the 10th, 50th and 90th percentile of `frame`; categorical ones its
    three most frequent values.
    """
    X = prepare_features(frame, numeric, categorical)
    example = X.iloc[[row]]
    baseline = float(_predict_one(model, example, config)[0])
    out = []
    for feature in features:
        if feature in numeric:
            values = [float(v) for v in X[feature].quantile([0.1, 0.5, 0.9]).dropna().unique()]
        else:
            values = list(X[feature].dropna().value_counts().head(3).index)
        if not values:
            continue
        variants = pd.concat([example] * len(values), ignore_index=True)
        variants[feature] = pd.Series(values, dtype=variants[feature].dtype)
        predictions = _predict_one(model, variants, config)
        original = example[feature].iloc[0]
        original = None if pd.isna(original) else original
        for value, prediction in zip(values, predictions, strict=True):
            out.append(WhatIf(feature, original, value, float(prediction), baseline))
    return tuple(out)


def confusion(model, X: pd.DataFrame, y: pd.Series) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix

    labels = [v.item() if hasattr(v, "item") else v for v in np.asarray(model.classes_)]
    pred = model.predict(X)
    matrix = confusion_matrix(y, pred, labels=labels)
    return {"labels": labels, "matrix": matrix.tolist()}


# --- leakage ------------------------------------------------------------------------------

# Thresholds of the leakage check, on the task's skill metric (`metrics.SKILL`: ROC AUC, macro
# one-vs-rest ROC AUC, R^2). Measured on scikit-learn's data: breast cancer's best real feature
# alone reaches 95.5% of the full model's skill above chance (ROC AUC 0.975 vs 0.998) and never
# more than a third of the importance; a column made of the label plus noise reaches 100% and
# holds 50 to 100 times the importance of all other columns together.
LEAK_SKILL_SHARE = 0.98  # a one-feature model keeps this share of the full model's skill ...
LEAK_HIGH = {"roc_auc": 0.9, "roc_auc_ovr": 0.9, "r2": 0.8}  # ... and is at least this good
LEAK_DOMINANCE = 5.0  # or one feature has 5x the importance of all others together
LEAK_CANDIDATES = 3  # one-feature models fitted for the most important features only
LEAK_TRAIN_ROWS = 5000


def _single_feature_metric(
    feature: str,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    numeric: list[str],
    config: Config,
    metric: str,
) -> float | None:
    """The holdout metric of a small boosting model fitted on one feature alone."""
    from sklearn.base import clone

    from ctloop.model.train import build_pipeline

    probe = config.model_copy(deep=True)
    probe.training.privacy.enabled = False
    kinds = ([feature], []) if feature in numeric else ([], [feature])
    pipeline = build_pipeline(*kinds, probe, "hist_gradient_boosting", {"max_iter": 50})
    target = config.require_target()
    if len(train) > LEAK_TRAIN_ROWS:
        train = train.sample(LEAK_TRAIN_ROWS, random_state=config.training.seed)
    y = train[target]
    if config.dataset.task != Task.REGRESSION and y.nunique() < 2:
        return None
    fitted = clone(pipeline).fit(prepare_features(train, *kinds), y)
    X = prepare_features(holdout, *kinds)
    return evaluate_predictions(fitted, X, holdout[target], config).get(metric)


def leakage_findings(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    config: Config,
    metrics: dict[str, float],
    importances: dict[str, float],
) -> tuple[LeakageFinding, ...]:
    """Features that alone nearly predict the target (see the thresholds above).

    Two rules, on a full model that is very good (its skill metric at least `LEAK_HIGH`):
    a one-feature model of one of the `LEAK_CANDIDATES` most important features keeps
    `LEAK_SKILL_SHARE` of the full model's skill; or the most important feature's permutation
    importance is `LEAK_DOMINANCE` times that of all other features together.
    """
    if config.gates.leakage == "off" or not importances:
        return ()
    metric = m.SKILL[str(config.dataset.task)]
    full = metrics.get(metric)
    if full is None or full < LEAK_HIGH[metric]:
        return ()
    positive = {k: v for k, v in importances.items() if v > 0}
    ranked = sorted(positive, key=lambda k: -positive[k])
    found: list[LeakageFinding] = []
    for rank, feature in enumerate(ranked[:LEAK_CANDIDATES]):
        rest = sum(v for k, v in positive.items() if k != feature)
        single = _single_feature_metric(feature, train, holdout, numeric, config, metric)
        share = None if single is None else m.skill_share(single, full, metric)
        args = (metric, single, full, positive[feature], rest)
        if share is not None and share >= LEAK_SKILL_SHARE and single >= LEAK_HIGH[metric]:
            found.append(LeakageFinding(feature, "alone", *args))
        elif rank == 0 and positive[feature] >= LEAK_DOMINANCE * rest:
            found.append(LeakageFinding(feature, "dominates", *args))
    return tuple(found)


# --- plots --------------------------------------------------------------------------------


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def render_plots(
    model,
    X: pd.DataFrame,
    y: pd.Series,
    config: Config,
    importances: dict[str, float],
    confusion_table: dict[str, Any] | None,
) -> dict[str, bytes]:
    """PNG plots by file name: confusion, ROC, PR and calibration (binary), residuals
    (regression), permutation importance."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sklearn import metrics as skm
    from sklearn.calibration import calibration_curve

    plots: dict[str, bytes] = {}
    if confusion_table is not None:
        fig, ax = plt.subplots(figsize=(4, 4))
        skm.ConfusionMatrixDisplay(
            np.asarray(confusion_table["matrix"]), display_labels=confusion_table["labels"]
        ).plot(ax=ax, colorbar=False)
        ax.set_title("Confusion matrix (holdout)")
        plots["confusion_matrix.png"] = _png(fig)
    if config.dataset.task == Task.BINARY and len(model.classes_) == 2 and y.nunique() == 2:
        p = model.predict_proba(X)[:, 1]
        y_bin = (y.to_numpy() == model.classes_[1]).astype(int)
        fig, ax = plt.subplots(figsize=(4, 4))
        skm.RocCurveDisplay.from_predictions(y_bin, p, ax=ax)
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set_title("ROC (holdout)")
        plots["roc.png"] = _png(fig)
        fig, ax = plt.subplots(figsize=(4, 4))
        skm.PrecisionRecallDisplay.from_predictions(y_bin, p, ax=ax)
        ax.set_title("Precision-recall (holdout)")
        plots["pr.png"] = _png(fig)
        fig, ax = plt.subplots(figsize=(4, 4))
        frac, mean = calibration_curve(y_bin, p, n_bins=10, strategy="quantile")
        ax.plot(mean, frac, "o-", label="model")
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect")
        ax.set_xlabel("predicted probability")
        ax.set_ylabel("observed share of positives")
        ax.legend()
        ax.set_title("Calibration (holdout)")
        plots["calibration.png"] = _png(fig)
    if config.dataset.task == Task.REGRESSION:
        pred = model.predict(X)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(pred, y.to_numpy() - pred, s=6, alpha=0.5)
        ax.axhline(0, color="k", lw=1)
        ax.set_xlabel("prediction")
        ax.set_ylabel("residual")
        ax.set_title("Residuals (holdout)")
        plots["residuals.png"] = _png(fig)
    if importances:
        names = list(importances)[:15][::-1]
        fig, ax = plt.subplots(figsize=(5, 0.3 * len(names) + 1))
        ax.barh(names, [importances[n] for n in names])
        ax.set_xlabel(f"drop of {config.gates.primary_metric} when shuffled")
        ax.set_title("Permutation importance (holdout)")
        plots["permutation_importance.png"] = _png(fig)
    return plots


# --- the whole analysis -------------------------------------------------------------------


def analyse_model(
    model,
    holdout: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    config: Config,
    slices: dict[str, dict[str, dict[str, float]]] | None = None,
    train: pd.DataFrame | None = None,
) -> Analysis:
    """Holdout metrics, slices with their largest gaps, importance, what-if, plots and the
    leakage check.

    Args:
        slices: the `slice_metrics` of `slice_columns` when computed elsewhere (fanned out);
            computed here when None.
        train: the training rows, for the leakage check's one-feature models (no check when
            None).
    """
    target = config.require_target()
    X = prepare_features(holdout, numeric, categorical)
    y = holdout[target]
    metrics = evaluate_with_spread(model, X, y, config)
    if slices is None:
        columns = slice_columns(holdout, categorical, config)
        slices = slice_metrics(model, holdout, numeric, categorical, columns, config)
    gaps = largest_gaps(slices, config.gates.primary_metric)
    importances = permutation_importances(model, holdout, numeric, categorical, config)
    top = [f for f in importances if importances[f] > 0][:3] or list(importances)[:3]
    whatifs = what_if(model, holdout, numeric, categorical, config, top)
    table = confusion(model, X, y) if config.dataset.task != Task.REGRESSION else None
    plots = render_plots(model, X, y, config, importances, table) if config.analysis.plots else {}
    leaks = ()
    if train is not None:
        leaks = leakage_findings(train, holdout, numeric, categorical, config, metrics, importances)
    return Analysis(metrics, slices, gaps, importances, whatifs, table, plots, leaks)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def model_card(
    analysis: Analysis,
    *,
    project: str,
    family: str,
    params: dict[str, Any],
    trained_on: str,
    snapshots: list[str],
    train_rows: int,
    holdout_rows: int,
    split: str,
    config: Config,
    blessing_reasons: list[str] | None = None,
    blessed: bool | None = None,
    semver: str | None = None,
    dp_epsilon: float | None = None,
) -> str:
    """A markdown model card: data window, metrics, slices and gaps, importance, limits."""
    title = f"# Model card: {project}" + (f" {semver}" if semver else " (challenger)")
    lines = [
        title,
        "",
        f"- **Task**: {config.dataset.task.value}, predicting `{config.dataset.target}`",
        f"- **Family**: {family}",
        f"- **Data window**: {trained_on}; snapshots {', '.join(snapshots)}",
        f"- **Rows**: {train_rows} training, {holdout_rows} holdout ({split} split; the "
        "holdout is the most recent part when there is a timestamp, and tuning never saw it)",
    ]
    if dp_epsilon is not None:
        lines.append(f"- **Differential privacy**: epsilon {dp_epsilon:g} (diffprivlib)")
    if blessed is not None:
        lines.append(f"- **Blessing**: {'blessed' if blessed else 'not blessed'}")
        lines += [f"  - {r}" for r in blessing_reasons or []]
    if analysis.leakage:
        lines += ["", "## Possible target leakage", ""]
        lines += [f"- {f.reason}" for f in analysis.leakage]
    shown = {k: v for k, v in params.items() if v is not None}
    lines += ["", "## Parameters", "", "| parameter | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(shown.items())]
    lines += ["", "## Holdout metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in analysis.metrics.items()]
    metric = config.gates.primary_metric
    lines += ["", f"## Slices ({metric})", ""]
    if analysis.gaps:
        lines += ["| column | largest gap | best slice | worst slice |", "|---|---|---|---|"]
        for g in analysis.gaps:
            lines.append(
                f"| {g.column} | {g.gap:.4f} | {_fmt(g.best)} ({g.best_value:.4f}) | "
                f"{_fmt(g.worst)} ({g.worst_value:.4f}) |"
            )
    else:
        lines.append("No column has two slices large enough to compare.")
    small = [
        f"{c}={v} ({int(m['rows'])} rows)"
        for c, per in analysis.slices.items()
        for v, m in per.items()
        if metric not in m
    ]
    lines += ["", "## Permutation importance", "", "| feature | drop |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in list(analysis.importances.items())[:10]]
    if analysis.what_if:
        lines += ["", "## What-if (first holdout example)", ""]
        lines += ["| feature | from | to | prediction | change |", "|---|---|---|---|---|"]
        for w in analysis.what_if:
            lines.append(
                f"| {w.feature} | {_fmt(w.original)} | {_fmt(w.value)} | "
                f"{w.prediction:.4f} | {w.delta:+.4f} |"
            )
    lines += [
        "",
        "## Limits",
        "",
        "- Valid for data like the training window above; drift away from it is monitored.",
        f"- Slices under {config.analysis.min_slice_rows} holdout rows are not scored"
        + (f": {', '.join(small[:10])}" + (" ..." if len(small) > 10 else "") if small else "."),
        "- Permutation importance measures reliance of this model, not causal effect; "
        "correlated features share their importance.",
    ]
    return "\n".join(lines) + "\n"
