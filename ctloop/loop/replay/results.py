"""The result types of a replay: each batch's point, each policy's result, the oracle's schedule
and the whole replay's (the policies are documented in `ctloop.loop.replay.replayer`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ctloop.loop import oracle as dp
from ctloop.model.metrics import higher_is_better, scale


@dataclass
class BatchPoint:
    batch: str
    rows: int
    metric: float | None
    retrained: bool = False
    note: str = ""
    # `ctloop`: the label-free estimate of `ReplayResult.estimate_metric` on the batch's features
    estimate: float | None = None


@dataclass
class PolicyResult:
    policy: str
    metric_name: str
    mean_metric: float | None
    retrains: int
    seconds: float
    points: list[BatchPoint] = field(default_factory=list)
    regret: float | None = None

    @property
    def total_metric(self) -> float:
        return float(sum(p.metric for p in self.points if p.metric is not None))

    def summary(self) -> dict:
        return {
            "metric_name": self.metric_name,
            "mean_metric": self.mean_metric,
            "retrains": self.retrains,
            "seconds": round(self.seconds, 3),
            "regret": None if self.regret is None else round(self.regret, 6),
        }


@dataclass
class OracleResult:
    """The hindsight-optimal schedule: `scores[u, v]` is the fit after unit u on unit v."""

    scores: np.ndarray
    units: list[str]  # the label of each unit's last batch (unit 0: the first model's batch)
    metric_name: str
    retrain_cost: float  # alpha as configured (scale units)
    cost: float  # alpha in metric units (retrain_cost x the metric's scale)
    schedule: dp.Schedule
    seconds: float
    # the score matrix on two disjoint halves of each unit's rows (see `split_half_ratio`)
    halves: tuple[np.ndarray, np.ndarray] | None = None
    # the other models a retrain may install: (point, row of scores), the policies' own fits
    # on other windows (`Replayer.with_policy_fits`); the halves and the periodic yardstick
    # read the rule's matrix only
    extra: tuple[tuple[int, np.ndarray], ...] = ()

    @property
    def scored_units(self) -> int:
        return len(self.units) - 1

    def at_cost(self, retrain_cost: float, reference: float | None) -> OracleResult:
        """The same fits and scores, another alpha (the DP only is run again)."""
        cost = retrain_cost * scale(reference or 1.0, self.metric_name)
        up = higher_is_better(self.metric_name)
        schedule = dp.optimal_schedule(self.scores, cost, up, self.extra)
        return replace(self, retrain_cost=retrain_cost, cost=cost, schedule=schedule)

    def with_extra(self, extra: tuple[tuple[int, np.ndarray], ...]) -> OracleResult:
        """The same oracle, also free to install the `extra` models (its DP run again)."""
        up = higher_is_better(self.metric_name)
        schedule = dp.optimal_schedule(self.scores, self.cost, up, extra)
        return replace(self, schedule=schedule, extra=extra)

    def split_half_ratio(self) -> float | None:
        """The regret ratio of an oracle chosen on one half of each unit's rows and graded on
        the other (`ctloop.loop.oracle.split_half_ratio`): the part of the oracle's edge that
        is hindsight of the grading noise, which no causal policy has."""
        if self.halves is None:
            return None
        return dp.split_half_ratio(*self.halves, self.cost, higher_is_better(self.metric_name))

    def regret_of(self, policy: PolicyResult) -> float:
        return dp.regret(
            policy.total_metric,
            policy.retrains,
            self.schedule.total,
            self.cost,
            higher_is_better(self.metric_name),
        )

    def summary(self) -> dict:
        return {
            "mean_metric": round(self.schedule.mean(self.scored_units), 6),
            "retrains": self.schedule.retrains,
            "retrain_cost": self.retrain_cost,
            "cost_in_metric_units": round(self.cost, 6),
            "regret": round(self.schedule.regret, 6),
            "retrain_after": [self.units[u] for u in self.schedule.points],
            # models a retrain could install besides the rule's fits: the policies' own fits
            "policy_fits": len(self.extra),
            "policy_fits_installed": sum(1 for m in self.schedule.models if m >= 0),
            "split_half_ratio": None if (r := self.split_half_ratio()) is None else round(r, 4),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class ReplayResult:
    policies: dict[str, PolicyResult]
    batches: int
    metric_name: str
    oracle: OracleResult | None = None
    label_delay: str | None = None
    reference: float | None = None  # the first model's holdout metric (the scale of alpha)
    estimate_metric: str | None = None  # the metric `ctloop` estimates without labels

    def at_cost(self, retrain_cost: float) -> tuple[OracleResult, dict[str, float]]:
        """The oracle and every policy's regret at another alpha (needs the oracle)."""
        if self.oracle is None:
            raise ValueError("the replay ran without the oracle")
        best = self.oracle.at_cost(retrain_cost, self.reference)
        return best, {name: best.regret_of(p) for name, p in self.policies.items()}

    def as_json(self) -> dict:
        return {
            "policies": {name: p.summary() for name, p in self.policies.items()},
            "oracle": None if self.oracle is None else self.oracle.summary(),
            "batches": self.batches,
            "metric_name": self.metric_name,
            "label_delay": self.label_delay,
            "estimate_metric": self.estimate_metric,
            "per_batch": {name: [asdict(x) for x in p.points] for name, p in self.policies.items()},
        }
