"""Retraining rules: bootstrap, pending drift, new data; the pending-drift state file."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from ctloop.config.settings import TriggerConfig
from ctloop.lake.snapshots import Manifest
from ctloop.loop.triggers import (
    DRIFT,
    ESTIMATED_DROP,
    NEW_DATA,
    PERFORMANCE,
    DriftVerdict,
    PendingDrift,
    RetrainDecision,
    RetrainRequest,
    answered,
    changes_to_record,
    decide_estimated_drop,
    decide_retrain,
    decide_scheduled,
    judge_drift,
    last_trained_end,
    load_pending,
    record_changes,
    rows_after,
    save_pending,
)
from ctloop.stores.home import Home

RULES = TriggerConfig(bootstrap_rows=1000, min_new_rows=3000, drift_min_rows=800)


def day(d: int) -> str:
    return (datetime(2026, 1, 5) + timedelta(days=d)).isoformat()


def manifests(rows_per_day: int, days: range) -> list[Manifest]:
    return [
        Manifest(
            snapshot=f"s{d:02d}",
            sha256="0" * 64,
            source=f"day{d:02d}_labelled.csv",
            rows=rows_per_day,
            columns=["application_date"],
            schema_version=1,
            arrived_at=day(d + 2),
            time_min=day(d),
            time_max=(datetime.fromisoformat(day(d)) + timedelta(hours=20)).isoformat(),
        )
        for d in days
    ]


def test_rows_after():
    ms = manifests(100, range(5))
    assert rows_after(ms, None) == 500
    assert rows_after(ms, day(3)) == 200  # days 3 and 4 end after day 3 starts
    assert rows_after(ms, day(10)) == 0
    assert rows_after([], None) == 0


@pytest.mark.parametrize(("days", "retrain"), [(0, False), (3, False), (4, True), (9, True)])
def test_bootstrap_without_champion(days, retrain):
    decision = decide_retrain(manifests(250, range(days)), None, False, None, RULES)
    assert decision.retrain is retrain
    assert decision.trigger == NEW_DATA
    assert str(250 * days) in decision.reason
    assert decision.since is None


def test_a_schedule_retrains_on_any_new_row_and_skips_when_none_arrived():
    ms = manifests(250, range(6))
    champion_end = ms[3].time_max  # trained on days 0-3; days 4-5 arrived since
    decision = decide_scheduled(ms, champion_end, True, RULES)
    assert decision.retrain and decision.reason == "500 labelled rows since the last retrain"
    # the rules say no to the same state: 500 new rows < min_new_rows
    assert not decide_retrain(ms, champion_end, True, None, RULES).retrain
    # a refused retrain on days 0-5 was the last one: nothing new since its data
    skipped = decide_scheduled(ms, champion_end, True, RULES, trained_end=ms[5].time_max)
    assert not skipped.retrain
    assert skipped.reason == f"nothing new since the last retrain (its data ends {ms[5].time_max})"
    # no champion: the first model waits for the bootstrap rows, as the rules do
    waiting = decide_scheduled(manifests(250, range(3)), None, False, RULES)
    assert not waiting.retrain and waiting.reason == "waiting for 1000 labelled rows (have 750)"
    assert decide_scheduled(ms, None, False, RULES).retrain


def test_bootstrap_ignores_pending_drift():
    pending = PendingDrift(since=day(1), detected_at=day(2), reasons=["age drifted"])
    decision = decide_retrain(manifests(250, range(4)), None, False, pending, RULES)
    assert decision.retrain and decision.trigger == NEW_DATA


def test_pending_drift_waits_for_rows_then_fires_with_since():
    pending = PendingDrift(since=day(10), detected_at=day(10), reasons=["3 of 8 columns drifted"])
    champion_end = day(9)
    # 300 labelled rows/day; days 10 and 11 labelled: 600 < 800
    waiting = decide_retrain(manifests(300, range(12)), champion_end, True, pending, RULES)
    assert waiting.retrain is False
    assert waiting.trigger == DRIFT
    assert "600 of 800" in waiting.reason
    assert waiting.since is None
    # day 12 lands: 900 >= 800
    fired = decide_retrain(manifests(300, range(13)), champion_end, True, pending, RULES)
    assert fired.retrain is True
    assert fired.trigger == DRIFT
    assert fired.since == pending.since
    assert "900 labelled rows" in fired.reason
    assert "3 of 8 columns drifted" in fired.reason


@pytest.mark.parametrize(("drift_min_rows", "retrain"), [(899, True), (900, True), (901, False)])
def test_pending_drift_threshold_is_inclusive(drift_min_rows, retrain):
    rules = TriggerConfig(bootstrap_rows=1, min_new_rows=10**6, drift_min_rows=drift_min_rows)
    pending = PendingDrift(since=day(10), detected_at=day(10), reasons=["x"])
    decision = decide_retrain(manifests(300, range(13)), day(9), True, pending, rules)
    assert decision.retrain is retrain


def test_pending_drift_takes_precedence_over_new_data():
    pending = PendingDrift(since=day(30), detected_at=day(30), reasons=["x"])
    # plenty of new rows since the champion, but drift waits for post-drift rows
    decision = decide_retrain(manifests(1000, range(10)), day(0), True, pending, RULES)
    assert decision.retrain is False and decision.trigger == DRIFT


@pytest.mark.parametrize(
    ("champion_end_day", "retrain"), [(0, True), (4, True), (5, False), (9, False)]
)
def test_new_data_rule(champion_end_day, retrain):
    # 500 rows a day for days 0..9; the champion saw data up to the start of `champion_end_day`
    ms = manifests(500, range(10))
    decision = decide_retrain(ms, day(champion_end_day), True, None, RULES)
    new = 500 * (10 - champion_end_day)
    assert decision.retrain is (new >= RULES.min_new_rows)
    assert decision.retrain is retrain
    assert decision.trigger == NEW_DATA
    assert f"{new} new labelled rows" in decision.reason


def test_new_data_with_unknown_champion_end_counts_everything():
    decision = decide_retrain(manifests(500, range(6)), None, True, None, RULES)
    assert decision.retrain and "3000 new labelled rows" in decision.reason


def test_a_refused_retrain_is_not_tried_again_on_every_next_batch():
    # the champion's data ends before day 3; a retrain on days 0..5 was refused
    ms = manifests(500, range(14))
    champion_end = day(3)
    refused_end = ms[5].time_max
    # without the refusal's record: days 3..8 are 3000 rows since the champion: retrain,
    # and again on every later batch
    assert decide_retrain(ms[:9], champion_end, True, None, RULES).retrain
    assert decide_retrain(ms[:10], champion_end, True, None, RULES).retrain
    # with it: only the rows after day 5 are new
    held = decide_retrain(ms[:9], champion_end, True, None, RULES, trained_end=refused_end)
    assert not held.retrain
    assert "1500 new labelled rows since the last retrain (its challenger was refused)" in (
        held.reason
    )
    # 3000 rows after the refused attempt (days 6..11) retrain again
    again = decide_retrain(ms[:12], champion_end, True, None, RULES, trained_end=refused_end)
    assert again.retrain and "3000 new labelled rows since the last retrain" in again.reason
    # a champion newer than the attempt counts from the champion, as before
    newer = decide_retrain(ms, ms[8].time_max, True, None, RULES, trained_end=refused_end)
    assert "2500 new labelled rows since the champion" in newer.reason


def test_answered_keeps_the_newest_trained_end(tmp_path, monkeypatch):
    import ctloop.loop.triggers as triggers_module

    home = Home(tmp_path)
    ms = manifests(100, range(4))
    monkeypatch.setattr(triggers_module, "list_snapshots", lambda _home: ms)
    answered(home, NEW_DATA, ["s00", "s02"])
    assert last_trained_end(home) == ms[2].time_max
    answered(home, NEW_DATA, ["s01"])  # an older window never moves it back
    assert last_trained_end(home) == ms[2].time_max
    answered(home, NEW_DATA, None)
    assert last_trained_end(home) == ms[2].time_max
    # a drift retrain also answers the pending drift
    save_pending(home, PendingDrift(since=day(1), detected_at=day(2), reasons=["x"]))
    answered(home, DRIFT, ["s03"])
    assert load_pending(home) is None and last_trained_end(home) == ms[3].time_max


def test_pending_state_round_trip(tmp_path):
    home = Home(tmp_path)
    assert load_pending(home) is None
    pending = PendingDrift(
        since="2026-01-23T08:00:00", detected_at="2026-01-23T09:00:00+00:00", reasons=["a", "b"]
    )
    save_pending(home, pending)
    assert load_pending(home) == pending
    assert (tmp_path / "triggers.json").exists()
    assert not list(tmp_path.glob("*.tmp"))
    save_pending(home, None)
    assert load_pending(home) is None


def test_cooldown_holds_a_retrain_back_then_lets_it_through():
    from datetime import UTC

    rules = TriggerConfig(bootstrap_rows=1000, min_new_rows=1000, cooldown_minutes=30)
    data = manifests(600, range(6))
    last = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
    held = decide_retrain(
        data,
        None,
        True,
        None,
        rules,
        last_retrain_at=last.isoformat(),
        now=last + timedelta(minutes=10),
    )
    assert held.retrain is False and held.reason.startswith("cooldown")
    free = decide_retrain(
        data,
        None,
        True,
        None,
        rules,
        last_retrain_at=last.isoformat(),
        now=last + timedelta(minutes=31),
    )
    assert free.retrain is True and free.trigger == NEW_DATA


def test_cooldown_never_blocks_the_first_model():
    from datetime import UTC

    rules = TriggerConfig(bootstrap_rows=1000, cooldown_minutes=30)
    now = datetime(2026, 2, 1, tzinfo=UTC)
    decision = decide_retrain(
        manifests(600, range(3)),
        None,
        False,
        None,
        rules,
        last_retrain_at=now.isoformat(),
        now=now,
    )
    assert decision.retrain is True


def test_state_keeps_the_earliest_pending_drift_and_the_claim(tmp_path):
    from ctloop.loop.triggers import claim_retrain, last_retrain_at, record_pending_if_none

    home = Home(tmp_path)
    first = PendingDrift(since=day(3), detected_at=day(3), reasons=["a"])
    later = PendingDrift(since=day(5), detected_at=day(5), reasons=["b"])
    assert record_pending_if_none(home, first) is True
    assert record_pending_if_none(home, later) is False
    assert load_pending(home) == first
    assert last_retrain_at(home) is None
    claim_retrain(home, datetime(2026, 2, 1))
    assert last_retrain_at(home) == "2026-02-01T00:00:00"
    assert load_pending(home) == first  # the claim leaves the pending drift alone


# -- the estimated drop: the label-free estimate's optimistic bound against the holdout metric


def estimate(metric="roc_auc", mid=0.80, low=0.78, high=0.82, reference=0.90, rows=500):
    return {
        "metric": metric,
        "reference": reference,
        "estimate": mid,
        "ci_low": low,
        "ci_high": high,
        "rows": rows,
    }


@pytest.mark.parametrize(
    ("high", "fires"),
    [(0.84, True), (0.86, False), (0.85, False), (0.95, False)],
)
def test_estimated_drop_fires_when_even_the_high_bound_is_past_the_drop(high, fires):
    rules = TriggerConfig(performance_drop=0.05)  # holdout 0.90: fires below 0.85
    found = estimate(mid=min(0.80, high), low=0.70, high=high)
    decision = decide_estimated_drop(found, rules)
    assert decision.retrain is fires
    assert decision.trigger == ESTIMATED_DROP
    assert f"{high:.4f}" in decision.reason and "0.9000 at blessing" in decision.reason
    assert ("worse by" in decision.reason) is fires


def test_estimated_drop_of_an_error_metric_uses_the_low_bound_and_a_fraction_of_the_holdout():
    rules = TriggerConfig(performance_drop=0.10)  # rmse 10.0 at blessing: fires above 11.0
    hurt = decide_estimated_drop(estimate("rmse", 13.0, 11.5, 14.0, reference=10.0), rules)
    assert hurt.retrain and "low bound is worse by 1.5 (15.0%) > 10% of 10 (1)" in hurt.reason
    # the estimate itself is far worse, but the optimistic (low) bound is within 10%
    unsure = decide_estimated_drop(estimate("rmse", 13.0, 10.9, 16.0, reference=10.0), rules)
    assert not unsure.retrain and "low bound within 10% of 10 (1)" in unsure.reason
    better = decide_estimated_drop(estimate("rmse", 9.0, 8.0, 10.0, reference=10.0), rules)
    assert not better.retrain


@pytest.mark.parametrize(
    ("found", "why"),
    [
        (None, "no performance estimate"),
        (estimate(mid=None, low=None, high=None), "no performance estimate"),
        (estimate(reference=None), "no holdout roc_auc"),
    ],
)
def test_no_estimate_or_no_reference_never_fires(found, why):
    decision = decide_estimated_drop(found, TriggerConfig())
    assert not decision.retrain and why in decision.reason


def test_drift_retrains_as_before_unless_the_option_asks_the_estimate():
    harmless = estimate(mid=0.89, low=0.87, high=0.91)
    harmful = estimate(mid=0.70, low=0.68, high=0.72)
    off = TriggerConfig()
    on = TriggerConfig(drift_needs_estimated_drop=True)
    assert judge_drift(True, harmless, off) == DriftVerdict(True)
    assert judge_drift(False, harmful, on) == DriftVerdict(False)
    kept = judge_drift(True, harmless, on)
    assert not kept.retrains
    assert "does not hurt" in kept.reason and "0.9100" in kept.reason and "0.05" in kept.reason
    hurts = judge_drift(True, harmful, on)
    assert hurts.retrains and "says it hurts" in hurts.reason
    blind = judge_drift(True, None, on)  # no estimate: no evidence the drift is harmless
    assert blind.retrains and "no performance estimate" in blind.reason


def test_changes_are_offered_estimate_first_and_the_first_recorded_wins(tmp_path):
    fired = decide_estimated_drop(estimate(), TriggerConfig())
    quiet = decide_estimated_drop(estimate(mid=0.9, high=0.92), TriggerConfig())
    decay = RetrainDecision(True, PERFORMANCE, "online roc_auc 0.7 vs 0.9")
    changes = changes_to_record(day(3), day(4), ["3 of 6 columns drifted"], fired, decay, day(1))
    assert [c.trigger for c in changes] == [ESTIMATED_DROP, DRIFT, PERFORMANCE]
    assert changes[0].since == changes[1].since == day(3) and changes[2].since == day(1)
    assert changes[0].reasons == [fired.reason]
    assert changes_to_record(day(3), day(4), None, quiet, None) == []

    home = Home(tmp_path / "home").ensure()
    assert record_changes(home, changes) == changes[0]
    assert load_pending(home).trigger == ESTIMATED_DROP
    assert record_changes(home, changes[1:]) is None  # one is pending: the earliest onset stays
    assert load_pending(home).trigger == ESTIMATED_DROP


def test_an_estimated_drop_waits_for_labels_since_its_onset_then_retrains_with_its_reason(
    tmp_path,
):
    reason = decide_estimated_drop(estimate(), TriggerConfig()).reason
    pending = PendingDrift(
        since=day(5), detected_at=day(5), reasons=[reason], trigger=ESTIMATED_DROP
    )
    waiting = decide_retrain(manifests(250, range(8)), day(2), True, pending, RULES)
    assert not waiting.retrain and waiting.trigger == ESTIMATED_DROP
    assert "750 of 800" in waiting.reason
    ready = decide_retrain(manifests(250, range(9)), day(2), True, pending, RULES)
    assert ready.retrain and ready.trigger == ESTIMATED_DROP and ready.since == day(5)
    assert reason in ready.reason
    home = Home(tmp_path / "home").ensure()
    save_pending(home, pending)
    answered(home, ESTIMATED_DROP)
    assert load_pending(home) is None
    assert RetrainRequest(trigger=ESTIMATED_DROP).trigger == ESTIMATED_DROP
