"""Replay a labelled history as a stream of batches and compare retraining policies.

Scoring is prequential: each batch is first scored by the model serving at that time, then its
labels are learned from (once they have arrived, see the label delay). Every policy trains the
same way (the config's family and window) and starts from the same first model (the bootstrap
rule); they differ only in when they retrain:

- `never`: the first model serves forever;
- `every_batch`: retrain after every batch (the model is replaced unconditionally);
- `schedule`: retrain every `schedule_every` batches (replaced unconditionally);
- `ctloop`: the live system's rules, decided by the live code (`ctloop.loop.policy.decide` on the
  state the live loop would read): drift from Evidently on the batch's features against the
  champion's training window (a drift retrain trains on data since the onset once
  `drift_min_rows` arrived), the label-free estimate of the served model's metric on the batch's
  features (the estimated-drop trigger, `triggers.decide_estimated_drop`, and the
  `drift_needs_estimated_drop` filter, `triggers.judge_drift`), performance decay of the served
  metric, the new-data volume rule, the cooldown, the deployment's schedule (`schedule_cron`,
  fired on the data's clock: a fire between two batches is a scheduled run after the later one,
  which retrains unless nothing arrived since the last retrain, `triggers.decide_scheduled`);
  and the challenger must pass the blessing gate.
  The live monitor estimates on every features batch, so `ctloop` does too: the estimator is
  fitted on the served fit's holdout (once per fit, as a live version keeps its own) and sees
  the batch's features only, never its labels.
- `ctloop_no_estimate` (on request): `ctloop` as if no estimate could be made (live: the monitor
  answers no estimate), i.e. drift and decay alone; what the estimate adds, under the same delay.

Every policy trains on the live loop's window: the rule (`ctloop.loop.policy.window_ids`: whole
batches of the newest `training.window_days`, reaching back to `training.min_rows` rows), or,
with `training.choose_window` (the default), all the data or the recent span when a model on it
scores better on the newest rows (`ctloop.loop.window`), chosen once per set of known labels;
the choice's own fits are not charged to any policy's seconds. A batch that
cannot be scored alone (fewer than `SCORE_MIN_ROWS` rows, or one class) is scored together with
the next batches.

The oracle (`Replayer.oracle`): the hindsight-optimal schedule for `triggers.retrain_cost`
(alpha), by dynamic programming (`ctloop.loop.oracle`) over the retrain points, with the same
window rule: the model fitted after unit `u` (its window: `window_ids` on the labels known then)
is scored on every later unit, each fit made once and cached (the policies reuse the same fits:
a window fitted twice is fitted once, and each policy is charged the fit's seconds). Exact: the
optimum over every schedule of those fits, given the score matrix. Approximate: a unit is a
scoring group (a batch, or small batches pooled as the policies pool them) and the oracle only
retrains at a unit's end; pooled metrics such as ROC AUC are computed per unit and then averaged,
as the policies' `mean_metric` is, which is not the AUC of the whole stream. Once the policies
have run, a retrain may also install any model a policy fitted on another window (ctloop's
windows since a drift onset, its refused challengers; `Replayer.with_policy_fits`), so every
policy's schedule is one the oracle weighs and none comes in below it.

Label delay (`label_delay`): a batch's labels arrive `N` batches later, or, for a duration, with
the first batch whose newest row is at least that long after the batch's newest row (so no row's
label is used before `its time + delay`). Features are seen at once (drift is detected on the
batch that shows it), but every fit, the new-data and drift-row counts and the online metric of
the decay trigger use only labels that have arrived. Prequential scores are hindsight and use
every batch's labels.

Time is accelerated: the clock is the batch's own timestamps, so the cooldown and windows follow
the data, not the wall clock.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from ctloop.config.settings import Config, Task
from ctloop.errors import InputError, NotEnoughData
from ctloop.gates.blessing import bless
from ctloop.lake.snapshots import Manifest
from ctloop.loop import oracle as dp
from ctloop.loop import policy as live
from ctloop.loop import triggers
from ctloop.loop.replay.results import BatchPoint, OracleResult, PolicyResult, ReplayResult
from ctloop.loop.replay.stream import (
    batch_manifest,
    cron_fires,
    label_arrivals,
    parse_label_delay,
    split_batches,
)
from ctloop.loop.window import choose_window
from ctloop.model.evaluate import (
    evaluate_outputs,
    evaluate_predictions,
    evaluate_with_spread,
    model_outputs,
)
from ctloop.model.metrics import check_metric, higher_is_better, scale
from ctloop.model.train import Candidate, prepare_features, split_holdout, train_candidate
from ctloop.monitor.drift import DriftSummary, detect_drift
from ctloop.registry.estimator import (
    VersionEstimator,
    choose_metric,
    estimate_frame,
    fit_estimator,
)

POLICIES = ("never", "every_batch", "schedule", "ctloop")  # the default set (DESIGN's keys)
CTLOOP_POLICIES = ("ctloop", "ctloop_no_estimate")  # the live rules, with and without the estimate
KNOWN_POLICIES = (*POLICIES, "ctloop_no_estimate")
# a batch with fewer labelled rows is scored together with the next ones (an AUC or an rmse of
# a handful of rows says little)
SCORE_MIN_ROWS = 30


@dataclass
class _Fit:
    """One fitted window, shared by every policy and the oracle that train on it."""

    ids: tuple[str, ...]
    candidate: Candidate
    window: pd.DataFrame
    metrics: dict[str, float]
    holdout: pd.DataFrame
    seconds: float


@dataclass
class _Step:
    """One policy's decision after a batch."""

    retrain: bool
    since: str | None = None  # a retrain on data after this onset only
    note: str = ""
    pending: triggers.PendingDrift | None = None
    reused: float = 0.0  # the seconds of a drift check made first for the other ctloop variant
    trigger: str = ""  # the live trigger of a ctloop retrain


class _Served:
    """The model a policy serves, with the snapshots it was trained on and its holdout metric."""

    def __init__(self, fit: _Fit, name: str):
        self.fit = fit
        self.candidate = fit.candidate
        self.window = fit.window
        self.snapshots = fit.ids
        self.metric = fit.metrics.get(name)
        self.metric_std = fit.metrics.get(f"{name}_std")  # the holdout's bootstrap spread
        self.holdout_rows = int(fit.metrics.get("rows", 0)) or None


class _Pool:
    """Served outputs waiting to be scored: a batch too small to be scored alone (one row, one
    class) is scored together with the next ones, each row by the model that served it."""

    def __init__(self) -> None:
        self.y: list[np.ndarray] = []
        self.outputs: list[np.ndarray] = []
        self.classes: list[np.ndarray | None] = []

    def add(self, y: np.ndarray, output: np.ndarray, classes: np.ndarray | None) -> None:
        self.y.append(y)
        self.outputs.append(output)
        self.classes.append(classes)

    @property
    def rows(self) -> int:
        return sum(len(y) for y in self.y)

    def score(self, config: Config) -> dict[str, float]:
        if self.rows < SCORE_MIN_ROWS:
            return {}
        y = np.concatenate(self.y)
        if self.classes[0] is None:
            return evaluate_outputs(y, np.concatenate(self.outputs), None, config)
        if len(pd.unique(y)) < 2:
            return {}
        union = np.array(sorted(set().union(*(c.tolist() for c in self.classes))))
        columns = {c: k for k, c in enumerate(union.tolist())}
        parts = []
        for output, classes in zip(self.outputs, self.classes, strict=True):
            part = np.zeros((len(output), len(union)))
            part[:, [columns[c] for c in classes.tolist()]] = output
            parts.append(part)
        return evaluate_outputs(y, np.concatenate(parts), union, config)


def _half_mask(rows: int, seed: int) -> np.ndarray:
    """A fixed random half of `rows` (True) and its complement (False)."""
    mask = np.zeros(rows, dtype=bool)
    mask[np.random.default_rng(seed).permutation(rows)[: rows // 2]] = True
    return mask


def _fill_unscored(scores: np.ndarray) -> None:
    """A unit no model could be scored on (a metric undefined there) counts the same for all."""
    for v in range(1, scores.shape[0]):
        column = scores[:v, v]
        known = column[~np.isnan(column)]
        column[np.isnan(column)] = known.mean() if len(known) else 0.0


class Replayer:
    """Runs the policies over the same batches with the same training code."""

    def __init__(
        self,
        config: Config,
        batches: list[tuple[str, pd.DataFrame]],
        schedule_every: int,
        label_delay: int | pd.Timedelta = 0,
    ):
        self.config = config
        self.batches = batches
        self.schedule_every = schedule_every
        self.target = config.require_target()
        self.timestamp = config.dataset.timestamp
        self.metric_name = config.gates.primary_metric
        # what the live monitor estimates: the primary metric when it can be, else the task's
        # first estimable metric (multiclass `roc_auc_ovr`: accuracy)
        self.estimate_metric = choose_metric(config.dataset.task, None, self.metric_name)
        self.manifests = [batch_manifest(i, b, self.timestamp) for i, (_, b) in enumerate(batches)]
        self.arrival = label_arrivals(self.manifests, label_delay)
        # known[i]: the newest batch whose labels are known after batch i (-1: none); arrivals
        # are non-decreasing, so the labelled batches are always a prefix
        self.known = [sum(1 for a in self.arrival if a <= i) - 1 for i in range(len(batches))]
        self.classification = config.dataset.task != Task.REGRESSION
        self._fits: dict[tuple[str, ...], _Fit] = {}
        self._windows: dict[tuple[int, str | None], list[str]] = {}
        self._outputs: dict[tuple[tuple[str, ...], int], tuple] = {}
        self._estimators: dict[tuple[str, ...], VersionEstimator | None] = {}
        self._drifts: dict[tuple[tuple[str, ...], int], tuple[DriftSummary, float]] = {}
        self.fit_log: list[tuple[int, tuple[str, ...]]] = []  # (decided after batch, window)
        self._fires: list[str] | None = None  # the schedule's fire times (ISO, naive UTC)

    # -- shared pieces -------------------------------------------------------------------------

    def labelled(self, i: int) -> list[Manifest]:
        """The batches whose labels are known after batch `i` (what the live lake holds)."""
        return self.manifests[: self.known[i] + 1]

    def window_ids(self, upto: int, since: str | None = None) -> list[str]:
        """The live retrain's window on the labels known after batch `upto`: the window rule
        (`loop.policy.window_ids`), or the candidate that scores best on the newest rows
        (`loop.window.choose_window`, as `tasks.train.choose_window`), chosen once per set of
        known labels and onset."""
        rule = live.window_ids(self.labelled(upto), self.config, since)
        if not rule or not self.config.training.choose_window:
            return rule
        key = (self.known[upto], since)
        if key not in self._windows:
            margin = self.config.gates.min_improvement
            choice = choose_window(self.labelled(upto), self.config, self._window, since, margin)
            self._windows[key] = list(choice.ids)
        return self._windows[key]

    def _window(self, ids: list[str] | tuple[str, ...]) -> pd.DataFrame:
        frames = [self.batches[int(i[1:])][1] for i in ids]
        return pd.concat(frames, ignore_index=True)

    def fit(self, ids: list[str] | tuple[str, ...], decided_at: int) -> _Fit:
        """The model of a window, fitted once (the holdout split and seed make it the same
        model for every policy that asks)."""
        key = tuple(ids)
        late = [i for i in key if self.arrival[int(i[1:])] > decided_at]
        if late:  # the label-delay guarantee, checked where every fit passes
            raise RuntimeError(f"replay bug: window {late} fitted before its labels arrived")
        self.fit_log.append((decided_at, key))
        if key not in self._fits:
            t0 = time.perf_counter()
            window = self._window(key)
            split = split_holdout(window, self.config)
            candidate = train_candidate(split.train, self.config)
            metrics = self._score(candidate, split.holdout, spread=True)
            seconds = time.perf_counter() - t0
            self._fits[key] = _Fit(key, candidate, window, metrics, split.holdout, seconds)
        return self._fits[key]

    def _score(
        self, candidate: Candidate, batch: pd.DataFrame, spread: bool = False
    ) -> dict[str, float]:
        X = prepare_features(batch, candidate.numeric, candidate.categorical)
        y = batch[self.target]
        if self.classification and y.nunique() < 2:
            return {}
        evaluate = evaluate_with_spread if spread else evaluate_predictions
        return evaluate(candidate.pipeline, X, y, self.config)

    def _outputs_of(self, fit: _Fit, index: int) -> tuple:
        """(labels, outputs, classes) of a fit on batch `index`, computed once."""
        key = (fit.ids, index)
        if key not in self._outputs:
            batch = self.batches[index][1]
            candidate = fit.candidate
            X = prepare_features(batch, candidate.numeric, candidate.categorical)
            classes = np.asarray(candidate.pipeline.classes_) if self.classification else None
            output = model_outputs(candidate.pipeline, X, self.config)
            self._outputs[key] = (batch[self.target].to_numpy(), output, classes)
        return self._outputs[key]

    def _unit_outputs(self, fit: _Fit, frame: pd.DataFrame) -> tuple:
        candidate = fit.candidate
        X = prepare_features(frame, candidate.numeric, candidate.categorical)
        classes = np.asarray(candidate.pipeline.classes_) if self.classification else None
        output = model_outputs(candidate.pipeline, X, self.config)
        return frame[self.target].to_numpy(), output, classes

    def _serve(self, fit: _Fit, index: int, pool: _Pool) -> float | None:
        """Score a batch with the serving model into the pool; the pool's metric once it can
        be computed (then the pool empties), else None."""
        pool.add(*self._outputs_of(fit, index))
        value = pool.score(self.config).get(self.metric_name)
        if value is not None:
            pool.__init__()
        return value

    def bootstrap_index(self) -> int:
        """The first batch after which enough labels are known for a first model."""
        need = self.config.triggers.bootstrap_rows
        for i in range(len(self.manifests)):
            if sum(m.rows for m in self.labelled(i)) >= need:
                return i
        total = sum(m.rows for m in self.manifests)
        raise NotEnoughData(
            f"{sum(m.rows for m in self.labelled(len(self.manifests) - 1))} labelled rows "
            f"arrived in the whole history ({total} rows) < triggers.bootstrap_rows {need} (the "
            "rows a first model waits for; set it lower in ctloop.yaml or "
            "CTLOOP_TRIGGERS__BOOTSTRAP_ROWS)"
        )

    def units(self) -> list[list[int]]:
        """The scoring units after the first model: batches grouped as the policies' pool
        groups them (until SCORE_MIN_ROWS rows and, for classes, two classes); a trailing
        group that never fills is not scored, by the policies either."""
        groups, current, rows, labels = [], [], 0, set()
        for i in range(self.bootstrap_index() + 1, len(self.batches)):
            batch = self.batches[i][1]
            current.append(i)
            rows += len(batch)
            if self.classification:
                labels.update(pd.unique(batch[self.target]).tolist())
            if rows >= SCORE_MIN_ROWS and (not self.classification or len(labels) >= 2):
                groups.append(current)
                current, rows, labels = [], 0, set()
        return groups

    # -- the oracle ----------------------------------------------------------------------------

    def oracle(self, progress=None) -> tuple[OracleResult, float | None]:
        """The hindsight-optimal schedule at `triggers.retrain_cost` (see the module docstring);
        also the first model's holdout metric, the reference of alpha's scale."""
        t0 = time.perf_counter()
        first = self.bootstrap_index()
        units = self.units()
        ends = [first] + [u[-1] for u in units]
        n = len(ends)
        frames = [
            pd.concat([self.batches[b][1] for b in unit], ignore_index=True) for unit in units
        ]
        # the same matrix on two disjoint halves of each unit's rows (a fixed draw per unit)
        halves = [_half_mask(len(frame), seed) for seed, frame in enumerate(frames, 1)]
        scores, half_a, half_b = (np.full((n, n), np.nan) for _ in range(3))
        fits: list[_Fit] = []
        for u, end in enumerate(ends):
            ids = self.window_ids(end)
            try:
                fit = self.fit(ids, end)
            except NotEnoughData:
                if not fits:
                    raise
                fit = fits[-1]  # nothing to fit here: retraining at this point keeps the model
            fits.append(fit)
            for v in range(u + 1, n):
                y, output, classes = self._unit_outputs_of(fit, units[v - 1], frames[v - 1])
                mask = halves[v - 1]
                scores[u, v] = self._unit_score(y, output, classes)
                half_a[u, v] = self._unit_score(y[mask], output[mask], classes)
                half_b[u, v] = self._unit_score(y[~mask], output[~mask], classes)
            if progress is not None:
                progress("oracle", end, BatchPoint(self.batches[end][0], 0, None, True, "fit"))
        for matrix in (scores, half_a, half_b):
            _fill_unscored(matrix)
        self._oracle_units = (units, frames, ends)
        reference = fits[0].metrics.get(self.metric_name)
        alpha = self.config.triggers.retrain_cost
        cost = alpha * scale(reference or 1.0, self.metric_name)
        schedule = dp.optimal_schedule(scores, cost, higher_is_better(self.metric_name))
        labels = [self.batches[e][0] for e in ends]
        seconds = time.perf_counter() - t0  # its fits (made here first) and its scoring
        result = OracleResult(
            scores, labels, self.metric_name, alpha, cost, schedule, seconds, (half_a, half_b)
        )
        return result, reference

    def _unit_outputs_of(self, fit: _Fit, unit: list[int], frame: pd.DataFrame) -> tuple:
        """(labels, outputs, classes) of a fit on one scoring unit."""
        if len(unit) == 1:  # a batch the policies may ask for too: shared
            return self._outputs_of(fit, unit[0])
        return self._unit_outputs(fit, frame)  # small batches: one prediction on their rows

    def with_policy_fits(self, best: OracleResult) -> OracleResult:
        """The oracle that may also install any model a policy fitted (`fit_log`): a window
        since a drift onset, a window the rule would not give at that point. A fit decided
        after batch `i` is a candidate at the unit holding `i` (it serves from the next unit;
        exact when units are batches). Every policy's own schedule is then one the oracle
        considers, so no policy's regret is below the oracle's (up to that rounding)."""
        units, frames, ends = self._oracle_units
        n = len(ends)
        seen: set[tuple[int, tuple[str, ...]]] = set()
        extra: list[tuple[int, np.ndarray]] = []
        for decided_at, ids in self.fit_log:
            u = next((k for k, end in enumerate(ends) if end >= decided_at), n)
            if u == 0 or u >= n - 1 or (u, ids) in seen:
                continue  # the first model, or a model that would serve nothing scored
            seen.add((u, ids))
            if tuple(self.window_ids(ends[u])) == ids:
                continue  # the rule's own fit at that point: a row of the matrix already
            fit = self._fits[ids]
            row = np.full(n, np.nan)
            for v in range(u + 1, n):
                y, output, classes = self._unit_outputs_of(fit, units[v - 1], frames[v - 1])
                row[v] = self._unit_score(y, output, classes)
            missing = np.isnan(row[u + 1 :])  # undefined on a unit: as the rule's fits score it
            row[u + 1 :][missing] = best.scores[u, u + 1 :][missing]
            extra.append((u, row))
        return best.with_extra(tuple(extra))

    def _unit_score(self, y: np.ndarray, output: np.ndarray, classes) -> float:
        """The metric of one unit's outputs (NaN where it is undefined there)."""
        pool = _Pool()
        pool.add(y, output, classes)
        value = pool.score(self.config).get(self.metric_name)
        return np.nan if value is None else value

    # -- one policy ----------------------------------------------------------------------------

    def run(self, policy_name: str, progress=None) -> PolicyResult:
        first = self.bootstrap_index()
        ids = self.window_ids(first)
        served = _Served(self.fit(ids, first), self.metric_name)
        compute = served.fit.seconds
        retrains = 1
        points = [
            BatchPoint(label, len(b), None, i == first, "first model" if i == first else "no model")
            for i, (label, b) in enumerate(self.batches[: first + 1])
        ]
        # every policy starts from it; the live gate may have refused it (its floors)
        blessing = bless(served.fit.metrics, None, self.config.gates)
        if not blessing.blessed:
            points[first].note = f"first model (live: refused, {blessing.reasons[0]})"
        pending: triggers.PendingDrift | None = None
        last_retrain: str | None = self.manifests[first].time_max
        trained_end: str | None = None  # the data end of ctloop's last finished retrain
        # the served model's scores: (batch whose labels complete the score, value, rows)
        served_hits: list[tuple[int, float, int]] = []
        pool = _Pool()
        for i in range(first + 1, len(self.batches)):
            label, batch = self.batches[i]
            waiting = pool.rows
            scored = self._serve(served.fit, i, pool)
            point = BatchPoint(label, len(batch), scored)
            points.append(point)
            try:
                if scored is not None:
                    served_hits.append((i, scored, len(batch) + waiting))
                t0 = time.perf_counter()
                step = self._decide(
                    policy_name,
                    i,
                    first,
                    served,
                    pending,
                    last_retrain,
                    served_hits,
                    trained_end,
                    point,
                )
                retrain, note, pending = step.retrain, step.note, step.pending
                compute += step.reused  # a drift check made first for the other variant
                if scored is None:
                    wait = f"scored with the next batches ({pool.rows} rows so far)"
                    note = f"{note}; {wait}" if note else wait
                compute += time.perf_counter() - t0
                if not retrain:
                    point.note = note
                    continue
                ids = self.window_ids(i, step.since)
                if tuple(ids) == served.snapshots:
                    point.note = f"{note}; not trained: no new labels have arrived"
                    continue
                try:
                    challenger = self.fit(ids, i)
                except NotEnoughData as exc:
                    point.note = f"{note}; not trained: {exc}"
                    continue
                compute += challenger.seconds
                replace = True
                if policy_name in CTLOOP_POLICIES:
                    t0 = time.perf_counter()
                    champion_metrics = self._score(served.candidate, challenger.holdout)
                    blessing = bless(challenger.metrics, champion_metrics, self.config.gates)
                    replace = blessing.blessed
                    verdict = "blessed" if replace else "refused: " + blessing.reasons[0]
                    note = f"{note}; {verdict}"
                    if step.trigger in triggers.ONSET_TRIGGERS:  # as `triggers.answered`
                        pending = None
                    last_retrain = self.manifests[i].time_max
                    trained_end = triggers.data_end(self.manifests, ids)
                    served_hits = []  # the decay counts rows served since the last retrain
                    compute += time.perf_counter() - t0
                retrains += 1
                point.retrained = True
                point.note = note
                if replace:
                    served = _Served(challenger, self.metric_name)
                    served_hits = []
            finally:
                if progress is not None:
                    progress(policy_name, i, point)

        scored = [p.metric for p in points if p.metric is not None]
        mean = float(np.mean(scored)) if scored else None
        return PolicyResult(policy_name, self.metric_name, mean, retrains, compute, points)

    def _decide(
        self,
        policy_name: str,
        i: int,
        first: int,
        served: _Served,
        pending: triggers.PendingDrift | None,
        last_retrain: str | None,
        served_hits: list[tuple[int, float, int]],
        trained_end: str | None,
        point: BatchPoint,
    ) -> _Step:
        """One policy's decision after batch `i` (`run`). `never`: no."""
        if policy_name == "every_batch":
            return _Step(True, note="every batch", pending=pending)
        if policy_name == "schedule":
            retrain = (i - first) % self.schedule_every == 0
            note = f"every {self.schedule_every} batches" if retrain else ""
            return _Step(retrain, note=note, pending=pending)
        if policy_name in CTLOOP_POLICIES:
            known = [(v, r) for j, v, r in served_hits if self.arrival[j] <= i]
            return self._ctloop_step(
                i,
                self.batches[i][1],
                served,
                pending,
                last_retrain,
                known,
                trained_end,
                point,
                estimate=policy_name == "ctloop",
            )
        return _Step(False, pending=pending)

    def schedule_fired(self, i: int) -> bool:
        """Did `triggers.schedule_cron` fire between batch `i - 1`'s newest row and batch
        `i`'s (the data's clock, UTC, as the deployment's Cron)? The scheduled run is then
        decided after batch `i`, the replay's next decision point."""
        if self._fires is None:
            span = (self.manifests[0].time_min, self.manifests[-1].time_max)
            self._fires = cron_fires(self.config.triggers.schedule_cron, *span)
        if not self._fires or i < 1:
            return False
        lo, hi = self.manifests[i - 1].time_max, self.manifests[i].time_max
        after = bisect.bisect_right(self._fires, lo)  # the first fire after `lo` (sorted)
        return after < len(self._fires) and self._fires[after] <= hi

    def state_at(
        self,
        i: int,
        served: _Served,
        pending: triggers.PendingDrift | None,
        last_retrain: str | None,
        trained_end: str | None = None,
    ) -> live.LoopState:
        """What the live loop would read from its stores after batch `i` was accepted: the
        lake holds the batches whose labels have arrived."""
        return live.LoopState(
            manifests=tuple(self.labelled(i)),
            champion_snapshots=served.snapshots,
            pending=pending,
            last_retrain_at=last_retrain,
            last_retrain_by=None,
            last_trained_end=trained_end,
        )

    def _estimator(self, fit: _Fit) -> VersionEstimator | None:
        """The label-free estimator of a fit, fitted once on its own holdout (as a live version
        keeps the one fitted on its holdout); None when it cannot be fitted."""
        if fit.ids not in self._estimators:
            candidate = fit.candidate
            X = prepare_features(fit.holdout, candidate.numeric, candidate.categorical)
            try:
                self._estimators[fit.ids] = fit_estimator(
                    candidate.pipeline,
                    X,
                    fit.holdout[self.target].reset_index(drop=True),
                    self.config.dataset.task,
                    reference=fit.metrics,
                )
            except (ValueError, IndexError):  # e.g. a holdout too small to calibrate on
                self._estimators[fit.ids] = None
        return self._estimators[fit.ids]

    def _drift(
        self, served: _Served, index: int, batch: pd.DataFrame
    ) -> tuple[DriftSummary, float]:
        """Drift of batch `index` against the served fit's window, checked once (`ctloop` and
        `ctloop_no_estimate` serve the same fits until their decisions part); and the seconds
        of the check when it was made before (charged to each policy that reads it)."""
        key = (served.fit.ids, index)
        if key in self._drifts:
            return self._drifts[key]
        t0 = time.perf_counter()
        columns = served.candidate.features
        summary = detect_drift(served.window, batch, columns, self.config.drift, html_when="never")
        self._drifts[key] = (summary, time.perf_counter() - t0)
        return summary, 0.0

    def features_of(self, index: int) -> pd.DataFrame:
        """Batch `index` as the monitor sees it when it arrives: its features, no label."""
        return self.batches[index][1].drop(columns=[self.target])

    def estimate(self, served: _Served, index: int) -> dict | None:
        """The served model's metric estimated on batch `index`'s features, as the live monitor
        estimates a features batch (`estimate_frame`, one chunk of the whole batch); None when
        there is no estimate (the live monitor then warns and goes on)."""
        estimator = self._estimator(served.fit)
        if estimator is None:
            return None
        frame = self.features_of(index)
        candidate = served.candidate
        X = prepare_features(frame, candidate.numeric, candidate.categorical)
        try:
            return estimate_frame(
                estimator,
                candidate.pipeline,
                X,
                self.estimate_metric,
                chunk_rows=max(len(frame), 1),
            )
        except (ValueError, IndexError):
            return None

    def _ctloop_step(
        self,
        i,
        batch,
        served,
        pending,
        last_retrain,
        served_hits,
        trained_end,
        point,
        estimate=True,
    ):
        """The live decision code on one batch: monitor (drift, the label-free estimate, online
        decay, the onsets recorded as the monitor records them), then the retrain rules.

        `served_hits`: (metric, rows) of the served model on batches whose labels arrived.
        `estimate`: False for `ctloop_no_estimate` (the monitor had no estimate to give).
        """
        rules = self.config.triggers
        summary, reused = self._drift(served, i, batch)
        # the estimate sees the batch's features only (`features_of`): its labels may not
        # have arrived yet
        found = self.estimate(served, i) if estimate else None
        if found is not None:
            point.estimate = found.get("estimate")
        estimated = triggers.decide_estimated_drop(found, rules)
        verdict = triggers.judge_drift(summary.drift, found, rules)
        perf = None
        if served_hits and pending is None:
            values, weights = zip(*served_hits, strict=True)
            online = float(np.average(values, weights=weights))
            perf = triggers.decide_performance(
                online,
                served.metric,
                int(sum(weights)),
                rules,
                self.metric_name,
                served.metric_std,
                served.holdout_rows,
                batch_rows=triggers.mean_batch_rows(self.labelled(i)),
            )
        if pending is None:  # the first change offered wins (`triggers.record_changes`)
            changes = triggers.changes_to_record(
                self.manifests[i].time_min,
                self.manifests[i].time_max,
                summary.reasons if verdict.retrains else None,
                estimated,
                perf,
                served_since=self.manifests[i].time_min,
            )
            pending = changes[0] if changes else None
        now = datetime.fromisoformat(self.manifests[i].time_max).replace(tzinfo=None)
        state = self.state_at(i, served, pending, last_retrain, trained_end)
        decision = live.decide(state, rules, now=now)
        if not decision.retrain and self.schedule_fired(i):
            scheduled = live.decide_scheduled(state, rules)
            if scheduled.retrain:  # as a scheduled run: whatever the rules say
                decision = scheduled
        if decision.retrain:
            note = f"{decision.trigger}: {decision.reason}"
            return _Step(True, decision.since, note, pending, reused, decision.trigger)
        notes = [f"{pending.trigger} pending"] if pending else []
        if summary.drift and not verdict.retrains:
            notes.append("drift does not retrain: the estimate says it does not hurt")
        return _Step(False, note="; ".join(notes), pending=pending, reused=reused)


def replay(
    frame: pd.DataFrame,
    config: Config,
    freq: str = "1D",
    schedule_every: int = 7,
    policies: tuple[str, ...] = POLICIES,
    progress: Callable[[str, int, int, BatchPoint], None] | None = None,
    label_delay: int | str | None = None,
    oracle: bool = False,
) -> ReplayResult:
    """Replay `frame` as batches of `freq` and run each policy over them.

    Args:
        progress: called after each batch of each policy with (policy, batch index, batches,
            the batch's point), e.g. to print a line per batch ("oracle": after each of its fits).
        label_delay: batches (an int or "3") or a duration ("2D") before a batch's labels
            arrive (see the module docstring); None or 0: at once.
        oracle: compute the hindsight-optimal schedule and each policy's regret (about one
            fit per batch, shared with `every_batch`; `ctloop replay` computes it by default).
    """
    target = config.require_target()
    if target not in frame.columns:
        raise InputError(f"target column '{target}' is not in the data")
    if not config.dataset.timestamp:
        raise InputError("replay needs a timestamp column (--timestamp COL)")
    unknown = sorted(set(policies) - set(KNOWN_POLICIES))
    if unknown:
        raise InputError(f"unknown policies {unknown}; known: {list(KNOWN_POLICIES)}")
    problem = check_metric(config.gates.primary_metric, str(config.dataset.task))
    if problem:
        raise InputError(f"gates.primary_metric: {problem}")
    delay = parse_label_delay(label_delay)
    # column names as a file gives them (a frame built in Python may name columns 0, 1, ...;
    # the drift report and the schema read names as text)
    frame = frame.rename(columns=str).dropna(subset=[target])
    batches = split_batches(frame, config.dataset.timestamp, freq)
    if len(batches) < 3:
        raise NotEnoughData(f"{len(batches)} batches at --freq {freq}; at least 3 are needed")
    replayer = Replayer(config, batches, schedule_every, delay)
    if not replayer.units():
        first = replayer.bootstrap_index()
        left = sum(len(b) for _, b in batches[first + 1 :])
        classes = ", and two classes" if replayer.classification else ""
        raise NotEnoughData(
            f"the first model waits for triggers.bootstrap_rows "
            f"{config.triggers.bootstrap_rows} labelled rows, reached after batch {first + 1} "
            f"of {len(batches)}; the {left} rows after it cannot score a policy (at least "
            f"{SCORE_MIN_ROWS}{classes}); set it lower in ctloop.yaml or "
            "CTLOOP_TRIGGERS__BOOTSTRAP_ROWS, or replay a longer history"
        )
    step = None
    if progress is not None:

        def step(name: str, index: int, point: BatchPoint) -> None:
            progress(name, index, len(batches), point)

    best, reference = replayer.oracle(step) if oracle else (None, None)
    if best is not None and step is not None:
        step("oracle", len(batches) - 1, BatchPoint(batches[-1][0], 0, None))
    results = {name: replayer.run(name, step) for name in policies}
    if best is not None:
        best = replayer.with_policy_fits(best)
        for result in results.values():
            result.regret = best.regret_of(result)
    plural = "" if delay == 1 else "es"
    delay_text = str(delay) if isinstance(delay, pd.Timedelta) else f"{delay} batch{plural}"
    delay_text = delay_text if delay else None
    return ReplayResult(
        results,
        len(batches),
        config.gates.primary_metric,
        best,
        delay_text,
        reference,
        replayer.estimate_metric,
    )
