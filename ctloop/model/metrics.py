"""What each metric means for a decision: its direction, its scale, its default per task.

Every comparison of two metric values in ctloop (the blessing against the champion and the
floors, the decay trigger, the canary, replay) goes through `improvement` and `better`, so a
lower-is-better metric such as `rmse` is never compared as if higher were better.

Thresholds (`gates.min_improvement`, `gates.slice_min_improvement`, `triggers.performance_drop`,
`triggers.rollout_margin`) are read in units of the metric's scale:

- a metric bounded by 0 and 1 (`roc_auc`, `accuracy`, `f1`, `r2`, `brier`, ...) has scale 1, so
  a threshold is an amount of the metric, as it always was (`0.05` of ROC AUC);
- an error in the target's own units (`rmse`, `mae`) or an unbounded loss (`log_loss`) has the
  reference value as its scale (the champion's value, or the holdout value at blessing), so a
  threshold is a fraction of it (`0.05`: 5% worse than the reference).

Old configurations therefore keep their meaning on 0-1 metrics, and gain one on error metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctloop.config.settings import TASK_FLOORS, TASK_METRICS, TASK_PRIMARY_METRIC

BINARY, MULTICLASS, REGRESSION = "binary", "multiclass", "regression"


@dataclass(frozen=True)
class MetricSpec:
    """A metric's direction, whether its scale is fixed, and its value by chance."""

    name: str
    higher_is_better: bool
    unit_scale: bool  # bounded by 0 and 1: thresholds are amounts; else fractions of a reference
    chance: float | None = None  # what an uninformed model scores (None: depends on the data)


SPECS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec("roc_auc", True, True, 0.5),
        MetricSpec("roc_auc_ovr", True, True, 0.5),
        MetricSpec("pr_auc", True, True),
        MetricSpec("accuracy", True, True),
        MetricSpec("balanced_accuracy", True, True),
        MetricSpec("precision", True, True),
        MetricSpec("recall", True, True),
        MetricSpec("f1", True, True),
        MetricSpec("f1_macro", True, True),
        MetricSpec("r2", True, True, 0.0),
        MetricSpec("brier", False, True),
        MetricSpec("calibration_error", False, True),
        MetricSpec("log_loss", False, False),
        MetricSpec("rmse", False, False),
        MetricSpec("mae", False, False),
    )
}
LOWER_IS_BETTER = frozenset(n for n, s in SPECS.items() if not s.higher_is_better)

# The primary metric per task (the tables live in `config.settings`, which resolves them).
# Binary: ROC AUC (threshold-free, insensitive to the class balance). Multiclass: macro
# one-vs-rest ROC AUC over the classes present, for the same reasons and because its chance
# level stays 0.5 whatever the number of classes (balanced accuracy and macro F1 move with the
# argmax and are noisy on small batches). Regression: RMSE, the loss the boosting regressor
# minimises, in the target's units.
PRIMARY = TASK_PRIMARY_METRIC
# Floors that do not depend on the target's scale: better than chance by a clear amount, and
# for regression better than predicting the holdout's mean (R^2 above 0).
FLOORS = TASK_FLOORS
# the metric whose skill (value above chance) the leakage check compares
SKILL = {BINARY: "roc_auc", MULTICLASS: "roc_auc_ovr", REGRESSION: "r2"}


def spec(metric: str) -> MetricSpec:
    """The spec of a metric; an unknown name is taken as higher-is-better with a unit scale."""
    return SPECS.get(metric, MetricSpec(metric, True, True))


def higher_is_better(metric: str) -> bool:
    return spec(metric).higher_is_better


def primary_metric(task: str) -> str:
    """The default primary metric of a task (`binary`, `multiclass`, `regression`)."""
    return PRIMARY[str(task)]


def default_floors(task: str) -> dict[str, float]:
    return dict(FLOORS[str(task)])


def metrics_of(task: str) -> tuple[str, ...]:
    """The metrics `evaluate_predictions` computes for a task (when the labels allow)."""
    return TASK_METRICS[str(task)]


def check_metric(metric: str, task: str) -> str | None:
    """Why `metric` cannot be used for `task`, or None when it can."""
    known = metrics_of(task)
    if metric in known:
        return None
    return f"{metric!r} is not computed for a {task} task; one of {list(known)}"


def improvement(candidate: float, reference: float, metric: str) -> float:
    """How much better `candidate` is than `reference`, in metric units (negative: worse)."""
    sign = 1.0 if higher_is_better(metric) else -1.0
    return sign * (candidate - reference)


def scale(reference: float, metric: str) -> float:
    """The unit thresholds are read in: 1 for a 0-1 metric, |reference| otherwise."""
    if spec(metric).unit_scale:
        return 1.0
    return abs(reference) or 1.0


def relative_improvement(candidate: float, reference: float, metric: str) -> float:
    """`improvement` in units of the metric's scale (see the module docstring)."""
    return improvement(candidate, reference, metric) / scale(reference, metric)


def better(candidate: float, reference: float, metric: str, margin: float = 0.0) -> bool:
    """Is `candidate` at least `margin` (in scale units) better than `reference`?

    A tolerance of 1e-9 keeps `0.3 - 0.1 >= 0.2` true despite binary floats.
    """
    return relative_improvement(candidate, reference, metric) >= margin - 1e-9


def describe_threshold(threshold: float, reference: float, metric: str) -> str:
    """A threshold as a reader should see it: `0.05` or `5% of 480.3 (24.02)`."""
    if spec(metric).unit_scale:
        return f"{threshold:g}"
    amount = threshold * scale(reference, metric)
    return f"{threshold:.0%} of {reference:.4g} ({amount:.4g})"


def describe_amount(amount: float, metric: str) -> str:
    """An amount in scale units: `0.0300`, or `3.0%` of the reference for an error metric."""
    return f"{amount:.4f}" if spec(metric).unit_scale else f"{amount:.1%}"


def describe_gain(candidate: float, reference: float, metric: str) -> str:
    """A gain with its relative size when the metric has no fixed scale."""
    gain = improvement(candidate, reference, metric)
    if spec(metric).unit_scale:
        return f"{gain:+.4f}"
    return f"{gain:+.4g}, {relative_improvement(candidate, reference, metric):+.1%}"


def skill_share(single: float, full: float, metric: str) -> float | None:
    """How much of the full model's skill above chance one value reaches (1: all of it)."""
    chance = spec(metric).chance
    if chance is None or full - chance <= 1e-12:
        return None
    return (single - chance) / (full - chance)
