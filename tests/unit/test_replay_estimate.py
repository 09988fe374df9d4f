"""Replay's `ctloop` policy with the label-free estimate (the estimated-drop trigger and the
`drift_needs_estimated_drop` filter, as the live monitor decides them) under a label delay, beside
`ctloop_no_estimate` (drift and decay alone)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctloop.config.settings import Config
from ctloop.errors import InputError
from ctloop.loop.replay.replayer import Replayer, replay
from ctloop.loop.replay.stream import split_batches

DAYS, ROWS, FEATURES, SHIFT, DELAY = 12, 300, 5, 5, 3


def stream(kind: str, flip_from: int | None = None) -> pd.DataFrame:
    """The label is `x0 + noise > 0`; x1..x4 are noise the model ignores. From day SHIFT on:

    - "hurts": x0 shrinks towards the boundary (sd 1.5 -> 0.3), into the model's region of
      doubt: its ROC AUC falls from about 0.97 to about 0.7; one column of five moves, under
      the drift rule's share (0.5 here);
    - "harmless": x0 moves away from the boundary (|x0| > 2.5, the model is surer) and three
      noise columns shift: four of five columns drift, the model gets better.

    `flip_from`: the labels of that day on are inverted (the features are the same), to show
    that nothing decided before those labels arrive depends on them."""
    rng = np.random.default_rng(0)
    parts = []
    for day in range(DAYS):
        x = rng.normal(size=(ROWS, FEATURES))
        x[:, 0] *= 1.5
        if day >= SHIFT and kind == "hurts":
            x[:, 0] = rng.normal(0, 0.3, ROWS)
        elif day >= SHIFT:
            x[:, 0] = rng.choice([-1, 1], ROWS) * (2.5 + np.abs(rng.normal(size=ROWS)))
            x[:, 1:4] += 2.0
        y = (x[:, 0] + rng.normal(0, 0.5, ROWS) > 0).astype(int)
        if flip_from is not None and day >= flip_from:
            y = 1 - y
        minutes = np.linspace(0, 23 * 60, ROWS)
        when = pd.Timestamp("2024-01-01") + pd.Timedelta(days=day) + pd.to_timedelta(minutes, "m")
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(FEATURES)])
        parts.append(frame.assign(y=y, when=when))
    return pd.concat(parts, ignore_index=True)


def config_for(tmp_path, needs_estimate: bool = False) -> Config:
    return Config.model_validate(
        {
            "dataset": {"target": "y", "task": "binary", "timestamp": "when"},
            "training": {
                "window_days": 2.5,
                "min_rows": None,
                "holdout_fraction": 0.3,
                "family": "logistic_regression",
                "choose_window": False,
            },
            "triggers": {
                "bootstrap_rows": ROWS,
                "min_new_rows": None,
                "drift_min_rows": ROWS,
                "drift_needs_estimated_drop": needs_estimate,
            },
            "drift": {"share": 0.5},
            "paths": {"home": str(tmp_path)},
        }
    )


def replayer(frame: pd.DataFrame, config: Config) -> Replayer:
    return Replayer(config, split_batches(frame, "when", "1D"), 3, DELAY)


def retrains_after_first(result) -> list[int]:
    first = next(k for k, p in enumerate(result.points) if p.retrained)
    return [k for k, p in enumerate(result.points) if p.retrained and k > first]


def test_the_estimate_retrains_before_drift_and_decay_can(tmp_path):
    r = replayer(stream("hurts"), config_for(tmp_path))
    ours, labels_only = r.run("ctloop"), r.run("ctloop_no_estimate")
    # the first model waited for a batch of labels: batch 0's, which arrive with batch DELAY
    assert r.bootstrap_index() == DELAY
    # the estimate fires on the features of the first shifted batch, before its labels came
    onset = ours.points[SHIFT]
    assert "estimated_drop pending" in onset.note, onset.note
    assert onset.estimate is not None and onset.estimate < 0.8
    assert all(p.estimate > 0.85 for p in ours.points[DELAY + 1 : SHIFT])
    assert all(p.estimate is None for p in labels_only.points)
    # ... and the retrain waits for drift_min_rows labelled rows since that onset: the onset
    # batch's own labels, DELAY batches later (counted here, not by the replayer)
    retrains = retrains_after_first(ours)
    assert retrains and retrains[0] == SHIFT + DELAY, [p.note for p in ours.points]
    assert ours.points[retrains[0]].note.startswith("estimated_drop: estimated_drop since")
    # drift (one column of five) and decay (labels DELAY late, then rows since ITS onset)
    # retrain later, if at all
    later = retrains_after_first(labels_only)
    assert not later or later[0] > retrains[0], [p.note for p in labels_only.points]
    # no fit used a label before it arrived: batch j's labels come with batch j + DELAY
    assert r.fit_log
    for decided_at, ids in r.fit_log:
        assert max(int(i[1:]) for i in ids) + DELAY <= decided_at, (decided_at, ids)


def test_harmless_drift_does_not_retrain_when_it_needs_the_estimate(tmp_path):
    r = replayer(stream("harmless"), config_for(tmp_path, needs_estimate=True))
    ours, labels_only = r.run("ctloop"), r.run("ctloop_no_estimate")
    assert ours.retrains == 1, [p.note for p in ours.points if p.note]
    assert all(
        "drift does not retrain: the estimate says it does not hurt" in p.note
        for p in ours.points[SHIFT:]
    )
    # the drift is there: without an estimate to ask, it retrains (as live does)
    assert labels_only.retrains > 1
    assert any(p.note.startswith("drift: drift since") for p in labels_only.points)


def test_no_decision_depends_on_a_label_before_it_arrives(tmp_path):
    """The same features, the labels from the shift on inverted: everything ctloop decided and
    estimated before those labels arrived is the same (only the hindsight scores differ)."""
    config = config_for(tmp_path)
    same = replayer(stream("hurts"), config).run("ctloop")
    other = replayer(stream("hurts", flip_from=SHIFT), config).run("ctloop")
    seen = SHIFT + DELAY  # the first batch after which an inverted label is known
    for k in range(seen):
        a, b = same.points[k], other.points[k]
        assert (a.estimate, a.retrained, a.note) == (b.estimate, b.retrained, b.note), k
    # the retrain at `seen` is decided on row counts; what it trains on now differs
    assert same.points[seen].retrained and other.points[seen].retrained
    assert same.points[SHIFT].metric != other.points[SHIFT].metric  # hindsight scores differ


def test_the_policies_by_name(tmp_path):
    with pytest.raises(InputError, match="ctloop_no_estimate"):
        replay(stream("hurts"), config_for(tmp_path), "1D", 3, ("ctloop_guess",))
    result = replay(stream("harmless"), config_for(tmp_path, True), "1D", 3, ("ctloop",))
    answer = result.as_json()
    assert set(answer["policies"]) == {"ctloop"}
    estimates = [p["estimate"] for p in answer["per_batch"]["ctloop"]]
    assert estimates[SHIFT] is not None and estimates[0] is None  # no model yet on batch 0
