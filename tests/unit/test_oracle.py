"""The hindsight-optimal schedule (dynamic programming) against brute force, and regret."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ctloop.loop.oracle import (
    best_periodic_schedule,
    optimal_schedule,
    regret,
    schedule_value,
    split_half_ratio,
)


def brute_force(scores: np.ndarray, cost: float, higher: bool = True) -> float:
    """The best objective over every schedule (2^(n-1) subsets of retrain points)."""
    n = scores.shape[0]
    best = -np.inf
    for k in range(n):
        for extra in itertools.combinations(range(1, n), k):
            best = max(best, schedule_value(scores, (0, *extra), cost, higher))
    return best


def test_four_batches_by_hand():
    # unit 0: the first model; units 1..3 scored. The first model decays on unit 2 and 3; a
    # model fitted after unit 1 is good on both; one fitted after unit 2 only helps unit 3.
    nan = np.nan
    scores = np.array(
        [
            [nan, 0.90, 0.60, 0.55],
            [nan, nan, 0.88, 0.86],
            [nan, nan, nan, 0.89],
            [nan, nan, nan, nan],
        ]
    )
    # cheap retrains: retrain after unit 1 (+0.28 + 0.31) and after unit 2 (+0.03 > 0.02)
    cheap = optimal_schedule(np.nan_to_num(scores), 0.02)
    assert cheap.points == (0, 1, 2)
    assert cheap.total == pytest.approx(0.90 + 0.88 + 0.89)
    # dearer: the second retrain (+0.03) no longer pays, the first (+0.59) does
    dear = optimal_schedule(np.nan_to_num(scores), 0.1)
    assert dear.points == (0, 1)
    assert dear.total == pytest.approx(0.90 + 0.88 + 0.86)
    assert dear.retrains == 2 and dear.regret == pytest.approx(0.2)
    # prohibitive: never retrain
    assert optimal_schedule(np.nan_to_num(scores), 1.0).points == (0,)


def test_error_metric_minimises():
    # rmse: lower is better; the model after unit 1 halves the error
    scores = np.array([[0, 10.0, 10.0, 10.0], [0, 0, 5.0, 5.0], [0, 0, 0, 5.0], [0, 0, 0, 0]])
    best = optimal_schedule(scores, 1.0, higher_is_better=False)
    assert best.points == (0, 1)
    assert best.total == pytest.approx(20.0)
    # read as higher-is-better the same matrix keeps the first model
    assert optimal_schedule(scores, 1.0).points == (0,)


@pytest.mark.parametrize("seed", range(40))
def test_dp_equals_brute_force_on_random_matrices(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    scores = rng.uniform(0.5, 1.0, (n, n))
    cost = float(rng.choice([0.0, 0.01, 0.05, 0.2, 1.0]))
    higher = bool(seed % 2)
    best = optimal_schedule(scores, cost, higher)
    value = schedule_value(scores, best.points, cost, higher)
    assert value == pytest.approx(brute_force(scores, cost, higher), abs=1e-9)
    assert best.points[0] == 0 and list(best.points) == sorted(set(best.points))
    assert best.retrains == len(best.points)


def test_ties_prefer_fewer_retrains():
    scores = np.full((5, 5), 0.8)
    assert optimal_schedule(scores, 0.0).points == (0,)


def test_regret_arithmetic():
    # cost x retrains + the metric lost: 3 x 0.02 + (2.7 - 2.6)
    assert regret(2.6, 3, 2.7, 0.02) == pytest.approx(0.16)
    # the oracle's own regret is cost x its retrains
    assert regret(2.7, 2, 2.7, 0.02) == pytest.approx(0.04)
    # error metric: a higher summed error is a loss
    assert regret(22.0, 1, 20.0, 0.5, higher_is_better=False) == pytest.approx(2.5)
    assert regret(19.0, 1, 20.0, 0.5, higher_is_better=False) == pytest.approx(-0.5)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="square"):
        optimal_schedule(np.zeros((2, 3)), 0.1)
    with pytest.raises(ValueError, match="cost"):
        optimal_schedule(np.zeros((2, 2)), -1)
    with pytest.raises(ValueError, match="finite"):
        optimal_schedule(np.array([[0, np.nan], [0, 0]]), 0.1)


@pytest.mark.parametrize("seed", range(20))
def test_best_periodic_schedule_is_the_best_period_and_never_beats_the_oracle(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 12))
    scores = rng.uniform(0.5, 1.0, (n, n))
    cost = float(rng.choice([0.0, 0.01, 0.05, 0.2]))
    higher = bool(seed % 2)
    k, periodic = best_periodic_schedule(scores, cost, higher)
    value = schedule_value(scores, periodic.points, cost, higher)
    by_period = {
        j: schedule_value(scores, tuple(range(0, n - 1, j)), cost, higher) for j in range(1, n)
    }
    assert value == pytest.approx(max(by_period.values()), abs=1e-12)
    assert periodic.points == tuple(range(0, n - 1, k)) and periodic.retrains == len(
        periodic.points
    )
    oracle = optimal_schedule(scores, cost, higher)
    assert value <= schedule_value(scores, oracle.points, cost, higher) + 1e-12


def test_best_periodic_schedule_by_hand():
    # a model is good for two units after its fit, then decays: every 2 units pays at 0.02
    n = 7
    scores = np.zeros((n, n))
    for u in range(n):
        for v in range(u + 1, n):
            scores[u, v] = 0.9 if v - u <= 2 else 0.5
    k, periodic = best_periodic_schedule(scores, 0.02)
    assert k == 2 and periodic.points == (0, 2, 4)
    assert periodic.total == pytest.approx(0.9 * 6)
    # at a prohibitive cost, never (one period: the whole stream)
    assert best_periodic_schedule(scores, 10.0)[1].points == (0,)


def _stream(n: int, signal: float, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of one stream: fits made later are better by `signal` per step on a decaying
    stream (true score 0.9 - 0.01 x age + signal x fit), each half with its own noise."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    truth = 0.9 - 0.01 * (v - u) + signal * u
    return tuple(np.triu(truth + rng.normal(0, noise, (n, n)), 1) for _ in range(2))


def test_split_half_ratio_is_one_without_noise():
    a, _ = _stream(12, 0.002, 0.0, 0)
    assert split_half_ratio(a, a.copy(), 0.02) == pytest.approx(1.0)


def test_split_half_ratio_grows_with_the_noise_it_cannot_see():
    quiet = [split_half_ratio(*_stream(16, 0.002, 0.001, s), 0.02) for s in range(8)]
    noisy = [split_half_ratio(*_stream(16, 0.002, 0.03, s), 0.02) for s in range(8)]
    assert max(quiet) < 1.1  # the halves agree: the schedule chosen on one suits the other
    assert np.mean(noisy) > 1.5  # an oracle's edge on noisy units is mostly the noise
    assert min(noisy) >= 1.0 - 1e-9  # no schedule beats the oracle of the half it is graded on


def test_split_half_ratio_against_brute_force_grading():
    a, b = _stream(7, 0.004, 0.02, 3)
    cost = 0.02
    chosen = optimal_schedule(a, cost)
    best = brute_force(b, cost)  # the objective of b's oracle
    graded = schedule_value(b, chosen.points, cost)
    oracle_b = optimal_schedule(b, cost)
    forward = (best - graded + cost * oracle_b.retrains) / (cost * oracle_b.retrains)
    chosen_b = optimal_schedule(b, cost)
    back = brute_force(a, cost) - schedule_value(a, chosen_b.points, cost)
    oracle_a = optimal_schedule(a, cost)
    backward = (back + cost * oracle_a.retrains) / (cost * oracle_a.retrains)
    assert split_half_ratio(a, b, cost) == pytest.approx((forward + backward) / 2)


def test_split_half_ratio_needs_a_cost():
    a, b = _stream(6, 0.002, 0.01, 1)
    assert split_half_ratio(a, b, 0.0) is None


def brute_force_with_extra(scores, extra, cost, higher=True) -> float:
    """The best objective when each retrain point may install the rule's fit or any extra
    model fitted at that point (every subset of points, every choice of model at each)."""
    n = scores.shape[0]
    sign = 1.0 if higher else -1.0
    rows = {u: [scores[u]] for u in range(n)}
    for u, row in extra:
        rows[u].append(np.asarray(row))
    best = -np.inf
    for k in range(n):
        for points in itertools.combinations(range(1, n - 1), k):
            points = (0, *points)
            ends = [*points[1:], n - 1]
            for choice in itertools.product(*(range(len(rows[u])) for u in points)):
                total = sum(
                    rows[u][c][u + 1 : e + 1].sum()
                    for u, c, e in zip(points, choice, ends, strict=True)
                )
                best = max(best, sign * total - cost * len(points))
    return best


@pytest.mark.parametrize("seed", range(30))
def test_extra_models_dp_equals_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 7))
    scores = rng.uniform(0.5, 1.0, (n, n))
    extra = tuple(
        (int(rng.integers(1, n)), rng.uniform(0.5, 1.0, n)) for _ in range(rng.integers(0, 4))
    )
    cost = float(rng.choice([0.0, 0.01, 0.05, 0.2]))
    higher = bool(seed % 2)
    best = optimal_schedule(scores, cost, higher, extra)
    sign = 1.0 if higher else -1.0
    assert sign * best.total - cost * best.retrains == pytest.approx(
        brute_force_with_extra(scores, extra, cost, higher), abs=1e-9
    )
    # more models to choose from can only help, never hurt
    plain = optimal_schedule(scores, cost, higher)
    assert sign * best.total - best.regret >= sign * plain.total - plain.regret - 1e-9


def test_an_extra_model_since_an_onset_is_chosen_where_it_pays():
    # the rule's fits keep the old concept (0.6 after the change at unit 2); a model fitted
    # after unit 2 on the data since the onset scores 0.9 on units 3 and 4
    scores = np.array(
        [
            [0, 0.9, 0.9, 0.6, 0.6],
            [0, 0, 0.9, 0.6, 0.6],
            [0, 0, 0, 0.65, 0.65],
            [0, 0, 0, 0, 0.7],
            [0, 0, 0, 0, 0],
        ]
    )
    since = (2, np.array([0, 0, 0, 0.9, 0.9]))
    best = optimal_schedule(scores, 0.05, extra=(since,))
    assert best.points == (0, 2) and best.models == (-1, 0)
    assert best.total == pytest.approx(0.9 + 0.9 + 0.9 + 0.9)
    assert optimal_schedule(scores, 0.05).models == ()  # without extras: the rule's fits only
