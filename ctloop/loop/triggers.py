"""Retraining rules: the one decision shared by the live deployments, the CLI and the demo."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ctloop.config.settings import TriggerConfig
from ctloop.lake.snapshots import Manifest, list_snapshots
from ctloop.stores.home import Home

MANUAL = "manual"
SCHEDULE = "schedule"
NEW_DATA = "new_data"
DRIFT = "drift"
PERFORMANCE = "performance"
ESTIMATED_DROP = "estimated_drop"
TRIGGERS = (MANUAL, SCHEDULE, NEW_DATA, DRIFT, PERFORMANCE, ESTIMATED_DROP)
# the triggers that record an onset: the retrain waits for labelled rows from it on
ONSET_TRIGGERS = (DRIFT, PERFORMANCE, ESTIMATED_DROP)


@dataclass(frozen=True)
class PendingDrift:
    """A change seen by the monitor (drift on features, decay of the served metric, or a drop
    of the label-free estimate); a retrain waits for labelled rows from `since` on and then
    trains on them."""

    since: str
    detected_at: str
    reasons: list[str]
    trigger: str = DRIFT


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    trigger: str
    reason: str
    since: str | None = None
    cooldown: bool = False  # a skip by the cooldown: it depends on the clock, not on the state


class RetrainRequest(BaseModel):
    """Why this retrain runs; recorded on the Prefect run, the MLflow run and the version."""

    trigger: Literal["manual", "schedule", "new_data", "drift", "performance", "estimated_drop"] = (
        "manual"
    )
    reason: str = "manual run"
    since: str | None = Field(
        default=None, description="train only on data after this ISO time (drift onset)"
    )
    check_rules: bool = Field(
        default=False,
        description="event-triggered runs: retrain only when the trigger rules in the config hold",
    )

    def answering(self, decision: RetrainDecision) -> RetrainRequest:
        """This request as the rules decided it: their trigger, reason and data onset."""
        return self.model_copy(
            update={"trigger": decision.trigger, "reason": decision.reason, "since": decision.since}
        )


def answered(home: Home, trigger: str, trained_on: list[str] | None = None) -> None:
    """A finished retrain, blessed or refused. A drift, performance or estimated-drop retrain
    answers the pending change (the monitor re-raises it if it still holds); other triggers
    leave it. The newest timestamp of its snapshots `trained_on` is kept, so the new-data rule
    counts the rows after it: a refused challenger is not trained again on every next batch."""
    trained_end = data_end(list_snapshots(home), trained_on) if trained_on else None
    with _locked_state(home) as state:
        if trigger in ONSET_TRIGGERS:
            state["pending_drift"] = None
        if trained_end and trained_end > (state.get("last_trained_end") or ""):
            state["last_trained_end"] = trained_end


def last_trained_end(home: Home) -> str | None:
    """The newest timestamp the last finished retrain trained on (blessed or refused)."""
    return _read_state(home).get("last_trained_end")


def data_end(manifests: list[Manifest], ids: list[str] | tuple[str, ...]) -> str | None:
    """The newest timestamp of the snapshots `ids` (None: none timestamped)."""
    wanted = set(ids)
    ends = [m.time_max for m in manifests if m.snapshot in wanted and m.time_max]
    return max(ends) if ends else None


def rows_after(manifests: list[Manifest], since: str | None) -> int:
    """Labelled rows in snapshots whose data ends after `since` (all rows when None)."""
    return sum(m.rows for m in manifests if since is None or (m.time_max or "") > since)


def mean_batch_rows(manifests: list[Manifest]) -> float | None:
    """The rows of a typical accepted batch: the unit of `rules.retrain_cost` (metric units
    summed over batches); None when there is no batch."""
    return sum(m.rows for m in manifests) / len(manifests) if manifests else None


def _first_model(manifests: list[Manifest], rules: TriggerConfig, trigger: str) -> RetrainDecision:
    """No champion yet: the bootstrap rule, whichever trigger asks."""
    total = rows_after(manifests, None)
    if total >= rules.bootstrap_rows:
        return RetrainDecision(
            True, trigger, f"no champion yet; {total} labelled rows >= {rules.bootstrap_rows}"
        )
    return RetrainDecision(
        False, trigger, f"waiting for {rules.bootstrap_rows} labelled rows (have {total})"
    )


def decide_retrain(
    manifests: list[Manifest],
    champion_data_end: str | None,
    has_champion: bool,
    pending: PendingDrift | None,
    rules: TriggerConfig,
    last_retrain_at: str | None = None,
    now: datetime | None = None,
    trained_end: str | None = None,
) -> RetrainDecision:
    """Should new labelled data start a retrain, and with which trigger and reason?

    Args:
        manifests: every accepted snapshot.
        champion_data_end: the newest timestamp the champion was trained on.
        has_champion: whether a champion is registered.
        pending: drift detected by the monitor and not yet answered by a retrain.
        rules: thresholds from `triggers` in the config.
        last_retrain_at: when the last rule-started retrain began (for the cooldown).
        now: the current time (tests and replays pass their own clock).
        trained_end: the newest timestamp the last finished retrain trained on; when a
            challenger was refused after the champion's data, new rows count from there.
    """
    if rules.cooldown_minutes and last_retrain_at and has_champion:
        now = now or datetime.now(UTC)
        elapsed = (now - datetime.fromisoformat(last_retrain_at)).total_seconds() / 60
        if elapsed < rules.cooldown_minutes:
            return RetrainDecision(
                False,
                DRIFT if pending else NEW_DATA,
                f"cooldown: last retrain {elapsed:.1f} min ago < {rules.cooldown_minutes:g} min",
                cooldown=True,
            )
    if not has_champion:
        return _first_model(manifests, rules, NEW_DATA)
    if pending is not None:
        after = rows_after(manifests, pending.since)
        if after >= rules.drift_min_rows:
            return RetrainDecision(
                True,
                pending.trigger,
                f"{pending.trigger} since {pending.since[:10]} ({'; '.join(pending.reasons)}); "
                f"{after} labelled rows since then >= {rules.drift_min_rows}",
                since=pending.since,
            )
        return RetrainDecision(
            False,
            pending.trigger,
            f"{pending.trigger} pending since {pending.since[:10]}: "
            f"{after} of {rules.drift_min_rows} labelled rows arrived",
        )
    refused = bool(trained_end) and trained_end > (champion_data_end or "")
    new = rows_after(manifests, trained_end if refused else champion_data_end)
    if rules.min_new_rows is None:
        return RetrainDecision(
            False, NEW_DATA, f"{new} new labelled rows; the new-data rule is off"
        )
    since = "the last retrain (its challenger was refused)" if refused else "the champion"
    sign = ">=" if new >= rules.min_new_rows else "<"
    return RetrainDecision(
        new >= rules.min_new_rows,
        NEW_DATA,
        f"{new} new labelled rows since {since} {sign} {rules.min_new_rows}",
    )


def decide_scheduled(
    manifests: list[Manifest],
    champion_data_end: str | None,
    has_champion: bool,
    rules: TriggerConfig,
    trained_end: str | None = None,
) -> RetrainDecision:
    """A scheduled retrain (`schedule_cron`): the safety net for what the rules cannot see.

    It retrains on whatever arrived, whatever the rules say, and skips only when there is
    nothing to learn from: no champion yet and fewer than `bootstrap_rows` labelled rows (the
    first model is the bootstrap rule's), or no labelled row after the data of the last
    retrain (blessed or refused), when it would fit the same window again.
    """
    if not has_champion:
        return _first_model(manifests, rules, SCHEDULE)
    last = max(trained_end or "", champion_data_end or "") or None
    new = rows_after(manifests, last)
    if new == 0:
        return RetrainDecision(
            False, SCHEDULE, f"nothing new since the last retrain (its data ends {last})"
        )
    since = "since the last retrain" if last else "(no timestamps to tell new rows apart)"
    return RetrainDecision(True, SCHEDULE, f"{new} labelled rows {since}")


def decide_performance(
    online: float | None,
    baseline: float | None,
    rows: int,
    rules: TriggerConfig,
    metric: str = "roc_auc",
    baseline_std: float | None = None,
    baseline_rows: int | None = None,
    batch_rows: float | None = None,
) -> RetrainDecision:
    """Has the served model decayed? Compares its metric on labelled served rows with the
    value it had on its holdout when it was blessed.

    Two ways to decay, both in the metric's scale (`ctloop.model.metrics`: an amount of a 0-1
    metric, a fraction of the holdout value for an error such as rmse):

    - a drop: the online metric is worse by more than `rules.performance_drop`;
    - a loss worth a retrain (`rules.retrain_cost`, alpha, when `batch_rows` is given): the
      drop summed over the batches served, `drop x rows / batch_rows`, exceeds alpha, the
      price of one retrain in the same units (`ctloop replay`'s oracle and regret). A small
      drop that persists pays for a retrain as surely as a large one does at once; this is
      the rent-or-buy rule (retrain once what was lost equals what a retrain costs): on a
      lasting drop that a retrain recovers, it loses at most about twice what the schedule
      chosen in hindsight loses (ski rental; no causal rule does better on every stream).

    When the holdout's spread is known (`baseline_std`, the bootstrap std of the metric on its
    `baseline_rows` rows), either must also exceed `rules.performance_noise` standard errors
    of the difference, `baseline_std * sqrt(1 + baseline_rows / rows)`: a drop the size of the
    sampling noise of two small samples is not decay.

    Args:
        batch_rows: the rows of a typical batch (alpha's unit: the mean accepted snapshot);
            None: the loss rule is off.
    """
    import math

    from ctloop.model import metrics as m

    if online is None or baseline is None:
        return RetrainDecision(False, PERFORMANCE, "no online metric yet")
    if rows < rules.performance_min_rows:
        return RetrainDecision(
            False, PERFORMANCE, f"{rows} labelled served rows < {rules.performance_min_rows}"
        )
    drop = -m.relative_improvement(online, baseline, metric)
    worse = -m.improvement(online, baseline, metric)
    limit = m.describe_threshold(rules.performance_drop, baseline, metric)
    shown = f"{worse:.4f}" if m.spec(metric).unit_scale else f"{worse:.4g} ({drop:.1%})"
    noise = None
    if baseline_std and baseline_rows and rules.performance_noise:
        noise = rules.performance_noise * baseline_std * math.sqrt(1 + baseline_rows / rows)
    head = f"online {metric} {online:.4f} vs {baseline:.4f} at blessing"
    found = [f"decayed by {shown} > {limit}"] if drop > rules.performance_drop else []
    loss = _summed_loss(drop, rows, batch_rows, rules.retrain_cost, metric)
    if loss is not None and loss[0]:
        found.append(loss[1])
    if found and (noise is None or worse > noise):
        beyond = "" if noise is None else f" and > noise {noise:.4g}"
        return RetrainDecision(True, PERFORMANCE, f"{head}: {found[0]}{beyond} over {rows} rows")
    if found:
        return RetrainDecision(
            False,
            PERFORMANCE,
            f"{head}: {found[0]}, but within the noise {noise:.4g} "
            f"({rules.performance_noise:g} standard errors over {rows} served and "
            f"{baseline_rows} holdout rows)",
        )
    tail = f"; {loss[1]}" if loss is not None else ""
    return RetrainDecision(False, PERFORMANCE, f"{head}: within {limit}{tail}")


def _summed_loss(
    drop: float, rows: int, batch_rows: float | None, cost: float, metric: str
) -> tuple[bool, str] | None:
    """The drop summed over the batches served against alpha (`retrain_cost`): (passes it,
    why); None when the rule does not apply (no batch size, alpha 0, or nothing lost)."""
    from ctloop.model import metrics as m

    if not batch_rows or batch_rows <= 0 or cost <= 0 or drop <= 0:
        return None
    served = rows / batch_rows
    lost = drop * served
    amount, alpha = m.describe_amount(lost, metric), m.describe_amount(cost, metric)
    if lost > cost + 1e-12:
        return True, (
            f"{m.describe_amount(drop, metric)} lost on each of {served:.1f} batches served = "
            f"{amount} > triggers.retrain_cost {alpha} (one retrain's worth)"
        )
    return False, f"{amount} lost over {served:.1f} batches <= triggers.retrain_cost {alpha}"


def optimistic_bound(estimate: dict, metric: str) -> float | None:
    """The end of the estimate's interval most favourable to the model: `ci_high` for a
    higher-is-better metric, `ci_low` for an error (the estimate itself when no interval)."""
    from ctloop.model import metrics as m

    bound = estimate.get("ci_high" if m.higher_is_better(metric) else "ci_low")
    return estimate.get("estimate") if bound is None else bound


def decide_estimated_drop(estimate: dict | None, rules: TriggerConfig) -> RetrainDecision:
    """Has the champion's metric dropped, by its label-free estimate on a features batch?

    The estimate's optimistic bound (see `optimistic_bound`) must be worse than the champion's
    holdout metric (`estimate["reference"]`) by `rules.performance_drop`, read in the metric's
    scale as the decay trigger reads it (an amount of a 0-1 metric, a fraction of the holdout
    value for an error). The interval is the estimate's own noise (the chunk's sampling error
    and the calibration's), so the bound being past the threshold is the whole rule.

    Args:
        estimate: `estimate_version`'s answer for the batch (`metric`, `reference`, `estimate`,
            `ci_low`, `ci_high`, `rows`), or None when there is none.
    """
    from ctloop.model import metrics as m

    if not estimate or estimate.get("estimate") is None:
        return RetrainDecision(False, ESTIMATED_DROP, "no performance estimate")
    metric, reference = estimate["metric"], estimate.get("reference")
    if reference is None:
        return RetrainDecision(False, ESTIMATED_DROP, f"no holdout {metric} to compare with")
    bound = optimistic_bound(estimate, metric)
    side = "high" if m.higher_is_better(metric) else "low"
    drop = -m.relative_improvement(bound, reference, metric)
    worse = -m.improvement(bound, reference, metric)
    limit = m.describe_threshold(rules.performance_drop, reference, metric)
    shown = f"{worse:.4f}" if m.spec(metric).unit_scale else f"{worse:.4g} ({drop:.1%})"
    head = (
        f"estimated {metric} {estimate['estimate']:.4f} (95% interval {estimate['ci_low']:.4f}"
        f"-{estimate['ci_high']:.4f}, {estimate.get('rows', '?')} rows, no labels) vs "
        f"{reference:.4f} at blessing"
    )
    if drop > rules.performance_drop + 1e-9:  # exactly at the threshold is within it
        return RetrainDecision(
            True, ESTIMATED_DROP, f"{head}: even its {side} bound is worse by {shown} > {limit}"
        )
    return RetrainDecision(False, ESTIMATED_DROP, f"{head}: {side} bound within {limit}")


@dataclass(frozen=True)
class DriftVerdict:
    """Whether the drift of a batch may retrain, and why not when it may not."""

    retrains: bool
    reason: str | None = None


def judge_drift(drift: bool, estimate: dict | None, rules: TriggerConfig) -> DriftVerdict:
    """Drift retrains, unless `rules.drift_needs_estimated_drop` asks the estimate first and
    the estimate says the drift does not hurt (its optimistic bound within the threshold).
    With no estimate to ask, drift retrains as it would without the option (a missing estimate
    is no evidence that the drift is harmless), and the reason says so."""
    if not drift:
        return DriftVerdict(False)
    if not rules.drift_needs_estimated_drop:
        return DriftVerdict(True)
    estimated = decide_estimated_drop(estimate, rules)
    usable = bool(estimate) and estimate.get("estimate") is not None
    if not usable or estimate.get("reference") is None:
        return DriftVerdict(True, f"drift retrains: {estimated.reason} to ask")
    if estimated.retrain:
        return DriftVerdict(True, f"drift retrains: the estimate says it hurts: {estimated.reason}")
    return DriftVerdict(
        False,
        "drift does not retrain (triggers.drift_needs_estimated_drop): the estimate says it "
        f"does not hurt: {estimated.reason}",
    )


def changes_to_record(
    onset: str,
    now: str,
    drift_reasons: list[str] | None,
    estimated: RetrainDecision | None,
    performance: RetrainDecision | None = None,
    served_since: str | None = None,
) -> list[PendingDrift]:
    """The changes one monitor run saw, in the order they are offered to the trigger state
    (the first one recorded wins, `record_pending_if_none`): an estimated drop before the drift
    it explains (the estimate is the stronger evidence), then the drift, then online decay.

    Args:
        onset: the batch's first timestamp (where the retrain's data starts).
        now: the time of the check.
        drift_reasons: the drift's reasons when drift may retrain (`judge_drift`), else None.
        estimated: the estimated-drop decision; recorded when it fires.
        performance: the online decay decision; recorded when it fires.
        served_since: the first served prediction the decay was measured on.
    """
    found = []
    if estimated is not None and estimated.retrain:
        found.append(PendingDrift(onset, now, [estimated.reason], ESTIMATED_DROP))
    if drift_reasons:
        found.append(PendingDrift(onset, now, list(drift_reasons), DRIFT))
    if performance is not None and performance.retrain:
        found.append(PendingDrift(served_since or now, now, [performance.reason], PERFORMANCE))
    return found


def _state_path(home: Home) -> Path:
    return home.root / "triggers.json"


@contextmanager
def _locked_state(home: Home) -> Iterator[dict]:
    """Read-modify-write of the trigger state under an exclusive lock (monitor and retrain
    runs may update it from different processes)."""
    path = _state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = json.loads(path.read_text()) if path.exists() else {}
            yield state
            state["updated_at"] = datetime.now(UTC).isoformat()
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=2))
            tmp.replace(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_state(home: Home) -> dict:
    path = _state_path(home)
    return json.loads(path.read_text()) if path.exists() else {}


def load_pending(home: Home) -> PendingDrift | None:
    data = _read_state(home).get("pending_drift")
    return PendingDrift(**data) if data else None


def save_pending(home: Home, pending: PendingDrift | None) -> None:
    with _locked_state(home) as state:
        state["pending_drift"] = asdict(pending) if pending else None


def record_pending_if_none(home: Home, pending: PendingDrift) -> bool:
    """Record drift unless some is already pending (keeps the earliest onset). True if saved."""
    with _locked_state(home) as state:
        if state.get("pending_drift"):
            return False
        state["pending_drift"] = asdict(pending)
        return True


def record_changes(home: Home, changes: list[PendingDrift]) -> PendingDrift | None:
    """Offer the changes in order; the first is recorded unless one is pending already.
    Returns the one recorded (None: none, or one was pending)."""
    for change in changes:
        if record_pending_if_none(home, change):
            return change
    return None


def last_retrain_at(home: Home) -> str | None:
    return _read_state(home).get("last_retrain_at")


def last_retrain_by(home: Home) -> str | None:
    """Who made the last claim (a flow run id), when the claimant said."""
    return _read_state(home).get("last_retrain_by")


def claim_retrain(home: Home, at: datetime | None = None, by: str | None = None) -> None:
    """Mark that a rule-started retrain begins now: the cooldown counts from here.

    `by` names the claimant (the flow run id), so the same run, retried after its worker was
    lost, is not stopped by its own cooldown.
    """
    with _locked_state(home) as state:
        state["last_retrain_at"] = (at or datetime.now(UTC)).isoformat()
        state["last_retrain_by"] = by
