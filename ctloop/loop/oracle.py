"""The hindsight-optimal retrain schedule for a cost per retrain, and a policy's regret against it.

Pure arithmetic on a score matrix (no model, no data): `ctloop.loop.replay` fills the matrix with
the metric each fitted model reaches on each later scoring unit, and calls `optimal_schedule`.

The objective, in metric units summed over the scored units (batches), is

    value(schedule) = sum over units v of metric(model serving v, v) - cost x retrains

for a higher-is-better metric (for an error metric the sum is negated: lost means higher), where
the first model (unit 0) is always fitted and counts as one retrain, as in every replay policy.
A policy's regret is what it gives up against the best schedule:

    regret = cost x retrains + metric lost against the oracle (summed over the scored units)

so the oracle's own regret is `cost x its retrains` and no schedule on the same fits has less.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ties within this amount go to the schedule with fewer retrains
_TIE = 1e-12


@dataclass(frozen=True)
class Schedule:
    """The best schedule: the units whose end installs a new model (0: the first model)."""

    points: tuple[int, ...]
    total: float  # the summed metric over the scored units 1..n-1 (in the metric's own sign)
    retrains: int
    cost: float
    # per point, the model installed: -1 the window rule's fit (a row of `scores`), else the
    # index of an `extra` candidate (empty: every point installs the rule's fit)
    models: tuple[int, ...] = ()

    @property
    def regret(self) -> float:
        return self.cost * self.retrains

    def mean(self, units: int) -> float:
        return self.total / units if units else float("nan")


def optimal_schedule(
    scores: np.ndarray,
    cost: float,
    higher_is_better: bool = True,
    extra: tuple[tuple[int, np.ndarray], ...] = (),
) -> Schedule:
    """The schedule of retrain points that maximises the served metric minus the retrain cost.

    Exact dynamic programming over a given matrix: `scores[u, v]` is the metric of the model
    fitted at the end of unit `u` on unit `v` (only `v > u` is read; unit 0 is the first
    model's point and is not scored). A model fitted at `u` serves units `u+1..k` until the next
    retrain at `k`. `extra` adds other models a retrain at a point may install, each as
    `(u, row)` with `row[v]` its metric on unit `v > u` (e.g. the fits the policies made on
    other windows, such as one since a drift onset); the schedule then also chooses which model
    each retrain installs. O(m * n) for m candidate models.

    Args:
        scores: an (n, n) matrix of finite values above the diagonal.
        cost: the worth of one retrain, in metric units summed over units (>= 0).
        higher_is_better: False for an error metric (the sum is minimised).
        extra: more candidate models, `(point, row of length n)`, finite after their point.
    """
    scores = np.asarray(scores, dtype=float)
    n = scores.shape[0]
    if scores.shape != (n, n) or n < 1:
        raise ValueError(f"scores must be a square matrix, not {scores.shape}")
    if cost < 0:
        raise ValueError(f"cost must be >= 0, not {cost}")
    if not np.all(np.isfinite(scores[np.triu_indices(n, 1)])):
        raise ValueError("scores above the diagonal must be finite")
    # candidate c: (point, row, model id); the rule's fit first at each point (ties: the rule)
    candidates = [(u, scores[u], -1) for u in range(n)]
    for k, (u, row) in enumerate(extra):
        row = np.asarray(row, dtype=float)
        if not 0 < u < n or row.shape != (n,) or not np.all(np.isfinite(row[u + 1 :])):
            raise ValueError(f"extra model {k}: a point in 1..{n - 1} and a finite row after it")
        candidates.append((int(u), row, k))
    sign = 1.0 if higher_is_better else -1.0
    at: dict[int, list[int]] = {}
    for c, (u, _, _) in enumerate(candidates):
        at.setdefault(u, []).append(c)
    best = np.zeros(len(candidates))  # the most candidate c can earn from its point on
    nxt = np.full(len(candidates), -1)  # the candidate installed next (-1: none)
    for u in range(n - 1, -1, -1):
        for c in at.get(u, []):
            run = np.cumsum(sign * candidates[c][1][u + 1 :])  # run[k-u-1]: serve u+1..k
            value, choice = (run[-1] if len(run) else 0.0), -1  # serve to the end
            for k in range(u + 1, n - 1):
                for c2 in at.get(k, []):
                    option = run[k - u - 1] - cost + best[c2]
                    if option > value + _TIE:
                        value, choice = option, c2
            best[c], nxt[c] = value, choice
    chosen = [0]
    while nxt[chosen[-1]] >= 0:
        chosen.append(int(nxt[chosen[-1]]))
    points = [candidates[c][0] for c in chosen]
    ends = [*points[1:], n - 1]
    total = float(
        sum(
            candidates[c][1][u + 1 : e + 1].sum()
            for c, u, e in zip(chosen, points, ends, strict=True)
        )
    )
    models = tuple(candidates[c][2] for c in chosen) if extra else ()
    return Schedule(tuple(points), total, len(points), float(cost), models)


def _served_total(scores: np.ndarray, points: list[int]) -> float:
    n = scores.shape[0]
    ends = [*points[1:], n - 1]
    return float(sum(scores[u, u + 1 : end + 1].sum() for u, end in zip(points, ends, strict=True)))


def schedule_value(
    scores: np.ndarray, points: tuple[int, ...], cost: float, higher_is_better: bool = True
) -> float:
    """The objective of a given schedule (points must start with 0), e.g. to check the DP."""
    total = _served_total(np.asarray(scores, dtype=float), list(points))
    return (total if higher_is_better else -total) - cost * len(points)


def regret(
    total: float, retrains: int, oracle_total: float, cost: float, higher_is_better: bool = True
) -> float:
    """cost x retrains + the metric lost against the oracle (summed over the same units).

    For an error metric, lost means higher: a policy with a lower summed error than the
    oracle's (possible when its fits differ from the oracle's) gains, and the lost part is
    negative.
    """
    lost = oracle_total - total if higher_is_better else total - oracle_total
    return cost * retrains + lost


def best_periodic_schedule(
    scores: np.ndarray, cost: float, higher_is_better: bool = True
) -> tuple[int, Schedule]:
    """The best fixed schedule *in hindsight*: retrain every `k` units, `k` chosen on the same
    matrix to maximise the objective (ties: the larger k, fewer retrains). Returns (k, schedule).

    A yardstick between the oracle and the policies that see only the past: a fixed schedule
    whose period was tuned with hindsight of the whole stream. A causal policy that misses the
    oracle by as much as this one does misses for want of hindsight, not of a better rule.
    """
    scores = np.asarray(scores, dtype=float)
    n = scores.shape[0]
    best: tuple[float, int, tuple[int, ...]] | None = None
    for k in range(max(n - 1, 1), 0, -1):
        points = tuple(range(0, n - 1, k))  # a retrain at the last unit would serve nothing
        value = schedule_value(scores, points, cost, higher_is_better)
        if best is None or value > best[0] + _TIE:
            best = (value, k, points)
    _, k, points = best
    total = _served_total(scores, list(points))
    return k, Schedule(points, total, len(points), float(cost))


def split_half_ratio(
    half_a: np.ndarray, half_b: np.ndarray, cost: float, higher_is_better: bool = True
) -> float | None:
    """How far an oracle's edge is hindsight of the very noise it is graded on.

    `half_a` and `half_b` are the score matrix computed on two disjoint halves of each unit's
    rows. The schedule that is optimal on one half is graded on the other half, against the
    oracle of that other half: `regret(chosen elsewhere) / regret(oracle)`, averaged over both
    directions. A schedule chosen with full hindsight of the stream, but not of the noise of
    the rows that grade it, lands at this ratio; a causal policy, which sees no future at all,
    cannot be expected to do better. Each half is scored on half the rows, so its noise is
    about 1.4x that of the whole unit's and the ratio is an upper estimate of the full-unit one.
    None when an oracle's regret is 0 (cost 0).
    """
    ratios = []
    for chosen_on, graded_on in ((half_a, half_b), (half_b, half_a)):
        chosen = optimal_schedule(chosen_on, cost, higher_is_better)
        best = optimal_schedule(graded_on, cost, higher_is_better)
        if best.regret <= 0:
            return None
        total = _served_total(np.asarray(graded_on, dtype=float), list(chosen.points))
        lost = regret(total, chosen.retrains, best.total, cost, higher_is_better)
        ratios.append(lost / best.regret)
    return float(np.mean(ratios))
