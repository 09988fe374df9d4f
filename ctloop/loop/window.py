"""The training window chosen by evidence: candidate windows compared on the newest rows.

The live rule (`loop.policy.window_ids`) is one guess: the newest `training.window_days`. When old
data still helps (a stable concept, a slow stream), it throws away rows that would have made a
better model; after a drift, a window since the onset may beat both. `choose_window` fits each
candidate (the rule's window, all the data, the recent span when the rule starts at a drift onset)
on its rows older than a common holdout (the newest `training.holdout_fraction` of the rule's
window, by time) and keeps the one that scores best there; the rule's own window wins ties and
any gain under `margin` (in the metric's scale units, as `gates.min_improvement`).

The live retrain (`tasks.train.choose_window`) and `ctloop replay` (`Replayer.window_ids`) both
call it, so replay decides as the live loop does; `training.choose_window: false` turns it off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ctloop.config.settings import Config
from ctloop.errors import NotEnoughData
from ctloop.lake import snapshots as lake
from ctloop.lake.snapshots import Manifest
from ctloop.loop import policy as live
from ctloop.model.evaluate import evaluate_predictions
from ctloop.model.metrics import better
from ctloop.model.train import prepare_features, split_holdout, train_candidate

RULE = "rule"


@dataclass(frozen=True)
class WindowChoice:
    """The chosen window, and every candidate's metric on the common holdout."""

    ids: tuple[str, ...]
    name: str
    scores: dict[str, float | None]
    reason: str


def candidate_windows(
    manifests: list[Manifest], config: Config, since: str | None = None
) -> dict[str, list[str]]:
    """The rule's window, all the data (capped at `training.max_rows`), and, for a drift
    retrain, the recent span without the onset bound; duplicates dropped, the rule's first."""
    found = {RULE: live.window_ids(manifests, config, since)}
    found["all"] = lake.select_window(manifests, None, None, config.training.max_rows, None)
    if since:
        found["recent"] = live.window_ids(manifests, config, None)
    unique: dict[str, list[str]] = {}
    for name, ids in found.items():
        if ids and ids not in unique.values():
            unique[name] = ids
    return unique


def choose_window(
    manifests: list[Manifest],
    config: Config,
    frame_of: Callable[[list[str]], pd.DataFrame],
    since: str | None = None,
    margin: float = 0.0,
) -> WindowChoice:
    """The candidate window whose model scores best on the newest rows (see the module).

    Args:
        frame_of: the labelled rows of a list of snapshot ids (the lake's, or replay's batches).
        margin: how much better than the rule's window another must be, in scale units.
    """
    candidates = candidate_windows(manifests, config, since)
    rule_ids = candidates[RULE]
    metric, timestamp = config.gates.primary_metric, config.dataset.timestamp
    target = config.require_target()
    frames = {RULE: frame_of(rule_ids)}  # each window's rows read once
    holdout = split_holdout(frames[RULE], config).holdout
    if len(candidates) == 1 or not timestamp or timestamp not in holdout.columns:
        return WindowChoice(tuple(rule_ids), RULE, {}, "one candidate")
    start = holdout[timestamp].min()
    scores: dict[str, float | None] = {}
    for name, ids in candidates.items():
        frame = frames[name] if name in frames else frame_of(ids)
        train = frame[frame[timestamp] < start]
        try:
            model = train_candidate(train, config)
        except NotEnoughData:
            scores[name] = None
            continue
        X = prepare_features(holdout, model.numeric, model.categorical)
        scores[name] = evaluate_predictions(model.pipeline, X, holdout[target], config).get(metric)
    best = RULE
    for name, value in scores.items():
        reference = scores[best]
        if value is None or name == best:
            continue
        # strictly better by the margin: the rule's window (the first) wins ties
        if reference is None or (value != reference and better(value, reference, metric, margin)):
            best = name
    shown = ", ".join(f"{n} {'n/a' if v is None else f'{v:.4f}'}" for n, v in scores.items())
    reason = f"{best} window: {metric} on the newest {len(holdout)} rows: {shown}"
    return WindowChoice(tuple(candidates[best]), best, scores, reason)
