"""Canary decisions from online metrics."""

from __future__ import annotations

import pytest

from ctloop.loop.rollout import PROMOTE, ROLLBACK, WAIT, decide_rollout


def row(version, labelled, **metrics):
    return {"version": version, "labelled": labelled, **metrics}


@pytest.mark.parametrize(
    "champion, challenger, action",
    [
        (row(1, 500, roc_auc=0.70), row(2, 300, roc_auc=0.75), PROMOTE),
        (row(1, 500, roc_auc=0.75), row(2, 300, roc_auc=0.70), ROLLBACK),
        (row(1, 500, roc_auc=0.70), row(2, 50, roc_auc=0.90), WAIT),
        (None, row(2, 300, roc_auc=0.9), WAIT),
        (row(1, 500, roc_auc=0.7), None, WAIT),
        (row(1, 500, accuracy=0.7), row(2, 300, accuracy=0.9), WAIT),  # metric not online
    ],
)
def test_canary_actions(champion, challenger, action):
    decision = decide_rollout(champion, challenger, "roc_auc", 200, 0.0)
    assert decision.action == action, decision.reason


def test_margin_and_lower_is_better():
    champion, challenger = row(1, 500, rmse=10.0), row(2, 500, rmse=9.5)
    # rmse has no fixed scale: the margin is a fraction of the champion's value (5% here)
    assert decide_rollout(champion, challenger, "rmse", 100, 0.0).action == PROMOTE
    assert decide_rollout(champion, challenger, "rmse", 100, 0.04).action == PROMOTE
    assert decide_rollout(champion, challenger, "rmse", 100, 0.1).action == ROLLBACK
    text = decide_rollout(champion, challenger, "rmse", 100, 0.1).reason
    assert "gain +0.5, +5.0%" in text and "margin 10% of 10 (1)" in text
