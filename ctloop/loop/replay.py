"""Replay a labelled history as a stream of batches and compare retraining policies.

Scoring is prequential: each batch is first scored by the model serving at that time, then its
labels are learned from. Every policy trains the same way (the config's family and window) and
starts from the same first model (the bootstrap rule); they differ only in when they retrain:

- `never`: the first model serves forever;
- `every_batch`: retrain after every batch (the model is replaced unconditionally);
- `schedule`: retrain every `schedule_every` batches (replaced unconditionally);
- `ctloop`: the live system's rules, decided by the live code (`ctloop.loop.policy.decide` on the
  state the live loop would read): drift from Evidently on the batch's features against the
  champion's training window (a drift retrain trains on data since the onset once
  `drift_min_rows` arrived), performance decay of the served metric, the new-data volume rule,
  the cooldown; and the challenger must pass the blessing gate.

Every policy trains on the live loop's window (`ctloop.loop.policy.window_ids`: whole batches of
the newest `training.window_days`, reaching back to `training.min_rows` rows). A batch that
cannot be scored alone (fewer than `SCORE_MIN_ROWS` rows, or one class) is scored together with
the next batches.

Time is accelerated: the clock is the batch's own timestamps, so the cooldown and windows follow
the data, not the wall clock.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.config.settings import Config, Task
from ctloop.errors import InputError, NotEnoughData
from ctloop.gates.blessing import bless
from ctloop.lake.snapshots import Manifest
from ctloop.loop import policy as live
from ctloop.loop import triggers
from ctloop.model.evaluate import (
    evaluate_outputs,
    evaluate_predictions,
    evaluate_with_spread,
    model_outputs,
)
from ctloop.model.metrics import check_metric
from ctloop.model.train import Candidate, prepare_features, split_holdout, train_candidate
from ctloop.monitor.drift import detect_drift

POLICIES = ("never", "every_batch", "schedule", "ctloop")
# a batch with fewer labelled rows is scored together with the next ones (an AUC or an rmse of
# a handful of rows says little)
SCORE_MIN_ROWS = 30


@dataclass
class BatchPoint:
    batch: str
    rows: int
    metric: float | None
    retrained: bool = False
    note: str = ""


@dataclass
class PolicyResult:
    policy: str
    metric_name: str
    mean_metric: float | None
    retrains: int
    seconds: float
    points: list[BatchPoint] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "metric_name": self.metric_name,
            "mean_metric": self.mean_metric,
            "retrains": self.retrains,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class ReplayResult:
    policies: dict[str, PolicyResult]
    batches: int
    metric_name: str

    def as_json(self) -> dict:
        return {
            "policies": {name: p.summary() for name, p in self.policies.items()},
            "batches": self.batches,
            "metric_name": self.metric_name,
            "per_batch": {name: [asdict(x) for x in p.points] for name, p in self.policies.items()},
        }


def split_batches(frame: pd.DataFrame, timestamp: str, freq: str) -> list[tuple[str, pd.DataFrame]]:
    """Cut a labelled history into consecutive batches of `freq` (a pandas frequency)."""
    if timestamp not in frame.columns:
        raise InputError(f"timestamp column '{timestamp}' is not in the data")
    # one clock for the whole replay: naive UTC
    stamps = pd.to_datetime(frame[timestamp], errors="coerce", format="mixed", utc=True)
    stamps = stamps.dt.tz_localize(None)
    if stamps.isna().all():
        raise InputError(f"timestamp column '{timestamp}': no value parses as a date")
    try:
        pd.tseries.frequencies.to_offset(freq)
    except ValueError:
        raise InputError(f"--freq {freq!r}: not a pandas frequency (e.g. 1D, 12h, 1W)") from None
    frame = frame.assign(**{timestamp: stamps}).dropna(subset=[timestamp])
    frame = frame.sort_values(timestamp, kind="stable").reset_index(drop=True)
    groups = frame.groupby(pd.Grouper(key=timestamp, freq=freq), sort=True)
    return [(str(k)[:19], g.reset_index(drop=True)) for k, g in groups if len(g)]


def _manifest(index: int, batch: pd.DataFrame, timestamp: str) -> Manifest:
    lo, hi = batch[timestamp].min(), batch[timestamp].max()
    return Manifest(
        snapshot=f"b{index:05d}",
        sha256="",
        source=f"batch {index}",
        rows=len(batch),
        columns=list(batch.columns),
        schema_version=1,
        arrived_at=hi.isoformat(),
        time_min=lo.isoformat(),
        time_max=hi.isoformat(),
    )


class _Served:
    """The model a policy serves, with the snapshots it was trained on and its holdout metric."""

    def __init__(
        self, candidate: Candidate, window: pd.DataFrame, ids: list[str], metrics: dict, name: str
    ):
        self.candidate = candidate
        self.window = window
        self.snapshots = tuple(ids)
        self.metric = metrics.get(name)
        self.metric_std = metrics.get(f"{name}_std")  # the holdout's bootstrap spread
        self.holdout_rows = int(metrics.get("rows", 0)) or None


class _Pool:
    """Served outputs waiting to be scored: a batch too small to be scored alone (one row, one
    class) is scored together with the next ones, each row by the model that served it."""

    def __init__(self) -> None:
        self.y: list[np.ndarray] = []
        self.outputs: list[np.ndarray] = []
        self.classes: list[np.ndarray | None] = []

    def add(self, y: pd.Series, output: np.ndarray, classes: np.ndarray | None) -> None:
        self.y.append(y.to_numpy())
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


class Replayer:
    """Runs the policies over the same batches with the same training code."""

    def __init__(
        self, config: Config, batches: list[tuple[str, pd.DataFrame]], schedule_every: int
    ):
        self.config = config
        self.batches = batches
        self.schedule_every = schedule_every
        self.target = config.require_target()
        self.timestamp = config.dataset.timestamp
        self.metric_name = config.gates.primary_metric
        self.manifests = [_manifest(i, b, self.timestamp) for i, (_, b) in enumerate(batches)]

    # -- shared pieces -------------------------------------------------------------------------

    def window_ids(self, upto: int, since: str | None = None) -> list[str]:
        """The live loop's window rule (`loop.policy.window_ids`) on the batches so far."""
        return live.window_ids(self.manifests[: upto + 1], self.config, since)

    def _window(self, ids: list[str]) -> pd.DataFrame:
        frames = [self.batches[int(i[1:])][1] for i in ids]
        return pd.concat(frames, ignore_index=True)

    def _fit(self, window: pd.DataFrame) -> tuple[Candidate, dict[str, float], pd.DataFrame]:
        split = split_holdout(window, self.config)
        candidate = train_candidate(split.train, self.config)
        metrics = self._score(candidate, split.holdout, spread=True)
        return candidate, metrics, split.holdout

    def _score(
        self, candidate: Candidate, batch: pd.DataFrame, spread: bool = False
    ) -> dict[str, float]:
        X = prepare_features(batch, candidate.numeric, candidate.categorical)
        y = batch[self.target]
        if self.config.dataset.task != Task.REGRESSION and y.nunique() < 2:
            return {}
        evaluate = evaluate_with_spread if spread else evaluate_predictions
        return evaluate(candidate.pipeline, X, y, self.config)

    def _serve(self, candidate: Candidate, batch: pd.DataFrame, pool: _Pool) -> float | None:
        """Score a batch with the serving model into the pool; the pool's metric once it can
        be computed (then the pool empties), else None."""
        X = prepare_features(batch, candidate.numeric, candidate.categorical)
        classes = (
            None
            if self.config.dataset.task == Task.REGRESSION
            else np.asarray(candidate.pipeline.classes_)
        )
        pool.add(batch[self.target], model_outputs(candidate.pipeline, X, self.config), classes)
        value = pool.score(self.config).get(self.metric_name)
        if value is not None:
            pool.__init__()
        return value

    def _bootstrap_index(self) -> int:
        total = 0
        for i, m in enumerate(self.manifests):
            total += m.rows
            if total >= self.config.triggers.bootstrap_rows:
                return i
        raise NotEnoughData(
            f"{total} labelled rows in the whole history < triggers.bootstrap_rows "
            f"{self.config.triggers.bootstrap_rows} (the rows a first model waits for; set it "
            "lower in ctloop.yaml or CTLOOP_TRIGGERS__BOOTSTRAP_ROWS)"
        )

    # -- one policy ----------------------------------------------------------------------------

    def run(self, policy_name: str, progress=None) -> PolicyResult:
        compute = 0.0
        first = self._bootstrap_index()
        t0 = time.perf_counter()
        ids = self.window_ids(first)
        window = self._window(ids)
        candidate, metrics, _ = self._fit(window)
        compute += time.perf_counter() - t0
        served = _Served(candidate, window, ids, metrics, self.metric_name)
        retrains = 1
        points = [
            BatchPoint(label, len(b), None, i == first, "first model" if i == first else "no model")
            for i, (label, b) in enumerate(self.batches[: first + 1])
        ]
        pending: triggers.PendingDrift | None = None
        last_retrain: str | None = self.manifests[first].time_max
        served_rows = 0
        served_hits: list[tuple[float, int]] = []
        pool = _Pool()
        for i in range(first + 1, len(self.batches)):
            label, batch = self.batches[i]
            waiting = pool.rows
            scored = self._serve(served.candidate, batch, pool)
            point = BatchPoint(label, len(batch), scored)
            points.append(point)
            try:
                if scored is not None:
                    served_hits.append((scored, len(batch) + waiting))
                    served_rows += len(batch) + waiting
                retrain, since, note = False, None, ""
                t0 = time.perf_counter()
                if policy_name == "every_batch":
                    retrain, note = True, "every batch"
                elif policy_name == "schedule":
                    retrain = (i - first) % self.schedule_every == 0
                    note = f"every {self.schedule_every} batches" if retrain else ""
                elif policy_name == "ctloop":
                    retrain, since, note, pending = self._ctloop_step(
                        i, batch, served, pending, last_retrain, served_hits, served_rows
                    )
                if scored is None:
                    wait = f"scored with the next batches ({pool.rows} rows so far)"
                    note = f"{note}; {wait}" if note else wait
                compute += time.perf_counter() - t0
                if not retrain:
                    point.note = note
                    continue
                t0 = time.perf_counter()
                ids = self.window_ids(i, since)
                window = self._window(ids)
                try:
                    challenger, metrics, holdout = self._fit(window)
                except NotEnoughData as exc:
                    point.note = f"{note}; not trained: {exc}"
                    compute += time.perf_counter() - t0
                    continue
                replace = True
                if policy_name == "ctloop":
                    champion_metrics = self._score(served.candidate, holdout)
                    blessing = bless(metrics, champion_metrics, self.config.gates)
                    replace = blessing.blessed
                    verdict = "blessed" if replace else "refused: " + blessing.reasons[0]
                    note = f"{note}; {verdict}"
                    pending = None
                    last_retrain = self.manifests[i].time_max
                compute += time.perf_counter() - t0
                retrains += 1
                point.retrained = True
                point.note = note
                if replace:
                    served = _Served(challenger, window, ids, metrics, self.metric_name)
                    served_hits, served_rows = [], 0
            finally:
                if progress is not None:
                    progress(policy_name, i, point)

        scored = [p.metric for p in points if p.metric is not None]
        mean = float(np.mean(scored)) if scored else None
        return PolicyResult(policy_name, self.metric_name, mean, retrains, compute, points)

    def state_at(
        self,
        i: int,
        served: _Served,
        pending: triggers.PendingDrift | None,
        last_retrain: str | None,
    ) -> live.LoopState:
        """What the live loop would read from its stores after batch `i` was accepted."""
        return live.LoopState(
            manifests=tuple(self.manifests[: i + 1]),
            champion_snapshots=served.snapshots,
            pending=pending,
            last_retrain_at=last_retrain,
            last_retrain_by=None,
        )

    def _ctloop_step(self, i, batch, served, pending, last_retrain, served_hits, served_rows):
        """The live decision code on one batch: monitor, then the retrain rules."""
        rules = self.config.triggers
        columns = served.candidate.features
        summary = detect_drift(served.window, batch, columns, self.config.drift, html_when="never")
        if summary.drift and pending is None:
            pending = triggers.PendingDrift(
                since=self.manifests[i].time_min,
                detected_at=self.manifests[i].time_max,
                reasons=summary.reasons,
            )
        if served_hits and pending is None:
            values, weights = zip(*served_hits, strict=True)
            online = float(np.average(values, weights=weights))
            perf = triggers.decide_performance(
                online,
                served.metric,
                served_rows,
                rules,
                self.metric_name,
                served.metric_std,
                served.holdout_rows,
            )
            if perf.retrain:
                pending = triggers.PendingDrift(
                    since=self.manifests[i].time_min,
                    detected_at=self.manifests[i].time_max,
                    reasons=[perf.reason],
                    trigger=triggers.PERFORMANCE,
                )
        now = datetime.fromisoformat(self.manifests[i].time_max).replace(tzinfo=None)
        state = self.state_at(i, served, pending, last_retrain)
        decision = live.decide(state, rules, now=now)
        if decision.retrain:
            return True, decision.since, f"{decision.trigger}: {decision.reason}", pending
        note = f"{pending.trigger} pending" if pending else ""
        return False, None, note, pending


def replay(
    frame: pd.DataFrame,
    config: Config,
    freq: str = "1D",
    schedule_every: int = 7,
    policies: tuple[str, ...] = POLICIES,
    progress: Callable[[str, int, int, BatchPoint], None] | None = None,
) -> ReplayResult:
    """Replay `frame` as batches of `freq` and run each policy over them.

    Args:
        progress: called after each batch of each policy with (policy, batch index, batches,
            the batch's point), e.g. to print a line per batch.
    """
    target = config.require_target()
    if target not in frame.columns:
        raise InputError(f"target column '{target}' is not in the data")
    if not config.dataset.timestamp:
        raise InputError("replay needs a timestamp column (--timestamp COL)")
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        raise InputError(f"unknown policies {unknown}; known: {list(POLICIES)}")
    problem = check_metric(config.gates.primary_metric, str(config.dataset.task))
    if problem:
        raise InputError(f"gates.primary_metric: {problem}")
    frame = frame.dropna(subset=[target])
    batches = split_batches(frame, config.dataset.timestamp, freq)
    if len(batches) < 3:
        raise NotEnoughData(f"{len(batches)} batches at --freq {freq}; at least 3 are needed")
    replayer = Replayer(config, batches, schedule_every)
    step = None
    if progress is not None:

        def step(name: str, index: int, point: BatchPoint) -> None:
            progress(name, index, len(batches), point)

    results = {name: replayer.run(name, step) for name in policies}
    return ReplayResult(results, len(batches), config.gates.primary_metric)


def plot_replay(result: ReplayResult, path: Path) -> Path:
    """Metric over time per policy, with a marker at each retrain; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5))
    for name, policy in result.policies.items():
        xs = list(range(len(policy.points)))
        ys = [np.nan if p.metric is None else p.metric for p in policy.points]
        (line,) = ax.plot(xs, ys, label=f"{name} ({policy.retrains} retrains)", linewidth=1.6)
        marks = [x for x, p in zip(xs, policy.points, strict=True) if p.retrained]
        mark_y = [ys[x] if not np.isnan(ys[x]) else np.nanmin(ys) for x in marks]
        ax.scatter(marks, mark_y, color=line.get_color(), marker="v", s=36, zorder=3)
    ax.set_xlabel("batch")
    ax.set_ylabel(f"served {result.metric_name} (prequential)")
    ax.set_title("ctloop replay: metric of the serving model per batch; ▼ = retrain")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report_html(result: ReplayResult, png: Path, path: Path) -> Path:
    """A self-contained HTML report: the summary table, the plot, the per-batch notes."""
    image = base64.b64encode(png.read_bytes()).decode()

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{fmt(p.mean_metric)}</td><td>{p.retrains}</td>"
        f"<td>{p.seconds:.1f}</td></tr>"
        for n, p in result.policies.items()
    )
    summary = {n: p.summary() for n, p in result.policies.items()}
    notes = ""
    for name, policy in result.policies.items():
        items = "".join(
            f"<li>{html.escape(p.batch)}: {'' if p.metric is None else f'{p.metric:.4f}'} "
            f"{'<b>retrain</b> ' if p.retrained else ''}{html.escape(p.note)}</li>"
            for p in policy.points
            if p.retrained or p.note
        )
        notes += f"<h3>{html.escape(name)}</h3><ul>{items}</ul>"
    body = (
        "<html><head><meta charset='utf-8'><title>ctloop replay</title></head><body>"
        f"<h1>ctloop replay: {result.batches} batches</h1>"
        f"<table border='1' cellpadding='4'><tr><th>policy</th><th>mean {result.metric_name}"
        f"</th><th>retrains</th><th>compute s</th></tr>{rows}</table>"
        f"<p><img src='data:image/png;base64,{image}'/></p>{notes}"
        f"<pre>{html.escape(json.dumps(summary, indent=2))}</pre>"
        "</body></html>"
    )
    path.write_text(body)
    return path
