"""Replay's label delay (no label is used before it arrives) and its oracle on a tiny stream."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctloop.config.settings import Config
from ctloop.errors import InputError
from ctloop.loop.replay.replayer import Replayer, replay
from ctloop.loop.replay.stream import label_arrivals, parse_label_delay, split_batches

DAYS, ROWS, FLIP = 10, 200, 5


@pytest.fixture(scope="module")
def flipping() -> pd.DataFrame:
    """One feature; the label is `x > 0` until day FLIP, then `x < 0`: a model trained on
    labels from before the flip is wrong after it (AUC near 0), one trained after is right."""
    rng = np.random.default_rng(0)
    frames = []
    for day in range(DAYS):
        x = rng.normal(size=ROWS)
        y = (x > 0) if day < FLIP else (x < 0)
        # the last row of every day at 23:00, so a day's newest row is exactly 24 h after the last
        minutes = np.linspace(0, 23 * 60, ROWS)
        when = pd.Timestamp("2024-01-01") + pd.Timedelta(days=day) + pd.to_timedelta(minutes, "m")
        frames.append(pd.DataFrame({"when": when, "x": x, "noise": rng.normal(size=ROWS), "y": y}))
    return pd.concat(frames, ignore_index=True).astype({"y": int})


@pytest.fixture()
def config(tmp_path) -> Config:
    return Config.model_validate(
        {
            "dataset": {"target": "y", "task": "binary", "timestamp": "when"},
            # the window: the newest day only, so the model follows the newest known labels
            # (a linear model learns the flipped rule at once, and fits in milliseconds)
            "training": {
                "window_days": 0.5,
                "min_rows": None,
                "holdout_fraction": 0.3,
                "family": "logistic_regression",
            },
            "triggers": {"bootstrap_rows": ROWS, "min_new_rows": None, "drift_min_rows": ROWS},
            "paths": {"home": str(tmp_path)},
        }
    )


def test_parse_label_delay():
    assert parse_label_delay(None) == 0
    assert parse_label_delay("3") == 3
    assert parse_label_delay(2) == 2
    assert parse_label_delay("36h") == pd.Timedelta(hours=36)
    for bad in ("soon", "-2D"):
        with pytest.raises(InputError, match="--label-delay"):
            parse_label_delay(bad)


def test_arrivals_in_batches_and_durations(flipping, config):
    batches = split_batches(flipping, "when", "1D")
    manifests = Replayer(config, batches, 3).manifests
    assert label_arrivals(manifests, 0) == list(range(DAYS))
    assert label_arrivals(manifests, 2) == [min(j + 2, DAYS) for j in range(DAYS)]
    # 24 h between newest rows: 2D arrives two batches later, 36h too (one day is too early)
    assert label_arrivals(manifests, pd.Timedelta("2D")) == label_arrivals(manifests, 2)
    assert label_arrivals(manifests, pd.Timedelta("36h")) == label_arrivals(manifests, 2)
    assert label_arrivals(manifests, pd.Timedelta("1D")) == label_arrivals(manifests, 1)


@pytest.mark.parametrize(
    ("delay", "policies"), [(2, ("every_batch", "ctloop")), ("2D", ("every_batch", "schedule"))]
)
def test_no_fit_uses_a_label_before_it_arrives(flipping, config, delay, policies):
    batches = split_batches(flipping, "when", "1D")
    replayer = Replayer(config, batches, 3, parse_label_delay(delay))
    for policy in policies:
        replayer.run(policy)
    replayer.oracle()
    assert replayer.fit_log
    for decided_at, ids in replayer.fit_log:
        # batch j's labels are known from batch j + 2 on (counted here, not by the replayer)
        assert max(int(i[1:]) for i in ids) + 2 <= decided_at, (decided_at, ids)
    # the first model waited for its labels: one day of rows after day 2
    assert replayer.bootstrap_index() == 2


def test_delayed_labels_give_the_model_of_their_time(flipping, config):
    at_once = replay(flipping, config, "1D", 3, ("every_batch",), oracle=False)
    late = replay(flipping, config, "1D", 3, ("every_batch",), label_delay=2, oracle=False)
    now = at_once.policies["every_batch"].points
    then = late.policies["every_batch"].points
    # the day after the flip: trained on the flipped day, or (labels 2 days late) on the old rule
    assert now[FLIP + 1].metric > 0.9
    assert then[FLIP + 1].metric < 0.1
    # two days after that the late labels of the flipped days have arrived
    assert then[FLIP + 3].metric > 0.9
    assert late.label_delay == "2 batches" and at_once.label_delay is None


def test_oracle_is_a_lower_bound_of_the_fixed_policies(flipping, config):
    result = replay(flipping, config, "1D", 3, ("never", "every_batch", "schedule"), oracle=True)
    best = result.oracle
    assert best is not None and best.scored_units == DAYS - 1  # every batch scores alone
    every = result.policies["every_batch"]
    # the matrix's diagonal is every-batch's prequential scores (the same fits, the same rows)
    diagonal = [best.scores[u, u + 1] for u in range(best.scored_units)]
    assert diagonal == pytest.approx([p.metric for p in every.points[1:]])
    for policy in result.policies.values():
        assert policy.regret >= best.schedule.regret - 1e-9, policy.policy
    # the flip makes a retrain after it worth far more than alpha: the oracle retrains
    assert best.schedule.retrains >= 2
    never = result.policies["never"]
    assert never.regret > every.regret
    # at a prohibitive alpha the oracle keeps the first model and never's regret is the oracle's
    dear, regrets = result.at_cost(100.0)
    assert dear.schedule.retrains == 1
    assert regrets["never"] == pytest.approx(dear.schedule.regret)
    answer = result.as_json()
    assert set(answer["oracle"]) >= {"mean_metric", "retrains", "retrain_cost"}
    assert answer["oracle"]["retrain_cost"] == config.triggers.retrain_cost
    assert all("regret" in p for p in answer["policies"].values())


def test_the_oracle_may_install_the_policies_own_fits_so_none_beats_it(flipping, config):
    """With a long window the rule's fits mix the old concept with the new one after the flip;
    ctloop's decay retrain trains on the rows since the onset only. The oracle also considers
    every fit a policy made, so ctloop's schedule is one of its own and cannot beat it."""
    config.training.window_days = 30
    config.training.choose_window = False
    config.triggers.performance_min_rows = ROWS // 2
    result = replay(flipping, config, "1D", 3, ("never", "every_batch", "ctloop"), oracle=True)
    best = result.oracle
    ctloop = result.policies["ctloop"]
    assert any("performance" in p.note and p.retrained for p in ctloop.points), [
        p.note for p in ctloop.points
    ]
    assert best.extra, "ctloop's since-onset fit is a candidate of the oracle"
    rule_only = best.with_extra(())
    # the rule's fits alone: ctloop's since-onset model beats that oracle
    assert rule_only.regret_of(ctloop) < rule_only.schedule.regret
    for policy in result.policies.values():
        assert best.regret_of(policy) >= best.schedule.regret - 1e-9, policy.policy
    assert best.schedule.regret - best.schedule.total <= (
        rule_only.schedule.regret - rule_only.schedule.total + 1e-9
    )
    assert best.summary()["policy_fits_installed"] >= 1


def test_a_frame_with_numbered_columns_replays_as_a_file_would(flipping, config):
    # a frame built in Python (e.g. from river's generators) names its features 0, 1, ...
    numbered = flipping.rename(columns={"x": 0, "noise": 1})
    result = replay(numbered, config, "1D", 3, ("ctloop",))
    assert result.policies["ctloop"].mean_metric is not None


def test_a_refused_decay_retrain_answers_the_loss_it_saw(flipping, config):
    """Every challenger is refused (a margin no model meets): after a refusal the decay rule
    counts only rows served since, as live decay counts rows served after the last retrain
    began, so with `performance_min_rows` of two batches it cannot retrain on two batches in a
    row (without the reset it would retrain after every batch on the same collapsed scores)."""
    config.gates.min_improvement = 2.0  # no ROC AUC gain reaches it
    config.triggers.performance_min_rows = 2 * ROWS
    config.drift.threshold = 1e6  # decay alone (the half-day window drifts on every batch)
    result = replay(flipping, config, "1D", 3, ("ctloop",))
    points = result.policies["ctloop"].points
    retrained = [i for i, p in enumerate(points) if p.retrained and "refused" in p.note]
    assert len(retrained) >= 2, [p.note for p in points]
    assert all(b - a >= 2 for a, b in zip(retrained[:-1], retrained[1:], strict=True)), retrained
