"""Flow tests: ingest, retrain and monitor wired for real under a Prefect test harness."""

from __future__ import annotations

import numpy as np
import pytest

from ctloop.data.demo import DemoScript, corrupt, demo_config, generate_day
from ctloop.lake import snapshots as lake
from ctloop.loop import triggers
from ctloop.registry.store import CHAMPION, open_registry
from ctloop.stores.home import home_of

pytestmark = pytest.mark.slow

SCRIPT = DemoScript(rows_per_day=250)


def _write_day(folder, day, *, labelled=True, broken=False, seed=0):
    frame = generate_day(SCRIPT, day, np.random.default_rng(seed + day))
    if broken:
        frame = corrupt(frame, np.random.default_rng(99))
    if not labelled:
        frame = frame.drop(columns=["default"])
    path = folder / f"day{day:02d}_{'labelled' if labelled else 'features'}.csv"
    frame.to_csv(path, index=False)
    return str(path)


@pytest.fixture
def config(tmp_path):
    return demo_config(str(tmp_path / "home"), rows_per_day=SCRIPT.rows_per_day)


def test_loop_ingest_retrain_monitor(prefect_harness, config, tmp_path):
    from ctloop.loop.policy import current_decision
    from flows.ingest import ingest
    from flows.monitor import monitor
    from flows.retrain import RetrainRequest, retrain

    home = home_of(config)
    files = [_write_day(tmp_path, d) for d in range(5)]

    ingested = ingest(files, config)
    assert [a["rows"] for a in ingested["accepted"]] == [250] * 5
    assert ingested["quarantined"] == []
    assert len(lake.list_snapshots(home)) == 5

    # the same file again is the same snapshot: nothing new
    again = ingest(files[:1], config)
    assert again["accepted"][0]["new"] is False
    assert len(lake.list_snapshots(home)) == 5

    decision = current_decision(config)
    assert decision.retrain and decision.trigger == "new_data"

    first = retrain(RetrainRequest(trigger="new_data", reason="test bootstrap"), config)
    assert first["blessed"] and first["promoted"]
    assert first["semver"] == "1.0.0"
    registry = open_registry(config)
    champion = registry.by_alias(CHAMPION)
    assert champion.version == first["version"]
    assert champion.tags["ctloop.trigger"] == "new_data"
    assert set(champion.snapshots) <= {m.snapshot for m in lake.list_snapshots(home)}
    assert first["metrics"]["roc_auc"] > 0.65
    # the data window is an MLflow input of the run, named by the lake's digest
    inputs = registry.client.get_run(first["run_id"]).inputs.dataset_inputs
    assert [i.dataset.digest for i in inputs] == [
        lake.describe_window(home, first["snapshots"])["digest"]
    ]

    # a corrupt batch is quarantined; the lake is unchanged
    before = {m.snapshot for m in lake.list_snapshots(home)}
    bad = ingest([_write_day(tmp_path, 5, broken=True)], config)
    assert bad["accepted"] == []
    checks = {r["check"] for r in bad["quarantined"][0]["reasons"] if r["severity"] == "block"}
    assert {"type_error", "missing_values"} <= checks
    assert {m.snapshot for m in lake.list_snapshots(home)} == before
    assert len(lake.list_quarantined(home)) == 1

    # monitoring: a stable day is quiet, the concept-drift days are not
    quiet = monitor(_write_day(tmp_path, 6, labelled=False), config, html_when="never")
    assert quiet["drift"] is False
    assert triggers.load_pending(home) is None
    loud = monitor(_write_day(tmp_path, 20, labelled=False), config, html_when="on_drift")
    assert loud["drift"] is True
    assert {"region", "purpose", "age"} <= set(loud["drifted_columns"])
    assert loud["report"] and loud["report"].endswith(".html")
    pending = triggers.load_pending(home)
    assert pending is not None and pending.since.startswith("2026-01-25")

    # the data reports are runs of the `<project>-data` experiment in MLflow
    data = registry.client.get_experiment_by_name(f"{config.registry_name}-data")
    runs = registry.client.search_runs([data.experiment_id])
    kinds = sorted(r.data.tags["ctloop.report"] for r in runs)
    # two drift checks (a run each), one line of label-free estimates (one run, a point per
    # check), one quarantine
    assert kinds == ["drift", "drift", "estimate", "quarantine"]
    series = next(r for r in runs if r.data.tags["ctloop.report"] == "estimate")
    points = registry.client.get_metric_history(series.info.run_id, "estimated_roc_auc")
    assert [p.step for p in points] == [0, 1]
    quarantine = next(r for r in runs if r.data.tags["ctloop.report"] == "quarantine")
    files = {f.path for f in registry.client.list_artifacts(quarantine.info.run_id)}
    assert {"quarantine.md", "reasons.json"} <= files
    drifted = [
        r.data.metrics["drifted_share"] for r in runs if r.data.tags["ctloop.report"] == "drift"
    ]
    assert sorted(drifted)[0] < config.drift.share <= sorted(drifted)[1]

    # drift retrain waits for labelled post-drift rows, then trains on them and wins
    assert current_decision(config).retrain is False
    ingest([_write_day(tmp_path, d) for d in (20, 21, 22)], config)
    decision = current_decision(config)
    assert decision.retrain and decision.trigger == "drift"
    second = retrain(
        RetrainRequest(trigger="drift", reason=decision.reason, since=decision.since), config
    )
    assert second["promoted"], second["reasons"]
    assert second["semver"] == "1.1.0"
    assert second["metrics"]["roc_auc"] > second["champion_metrics"]["roc_auc"]
    assert registry.by_alias(CHAMPION).version == second["version"]
    assert triggers.load_pending(home) is None


def test_refused_challenger_keeps_champion(prefect_harness, config, tmp_path):
    from ctloop.loop.policy import current_decision
    from flows.ingest import ingest
    from flows.retrain import RetrainRequest, retrain

    ingest([_write_day(tmp_path, d, seed=7) for d in range(4)], config)
    first = retrain(RetrainRequest(), config)
    assert first["promoted"]
    ingest([_write_day(tmp_path, d, seed=7) for d in range(4, 6)], config)
    strict = config.model_copy(deep=True)
    strict.gates.min_metrics = {"roc_auc": 0.99}
    strict.gates.floors_against_champion = False  # the champion misses it too
    refused = retrain(RetrainRequest(reason="strict gate"), strict)
    assert refused["blessed"] is False and refused["promoted"] is False
    assert refused["version"] is None
    assert any("roc_auc" in r and "< floor 0.99" in r for r in refused["reasons"])
    assert open_registry(config).by_alias(CHAMPION).version == first["version"]
    # the refused attempt's data end is kept: the new-data rule counts from it, so the
    # rows it was trained on do not start the same refused retrain again
    home = home_of(config)
    newest = max(m.time_max for m in lake.list_snapshots(home))
    assert triggers.last_trained_end(home) == newest
    decision = current_decision(config)
    assert not decision.retrain
    assert decision.reason.startswith("0 new labelled rows since the last retrain"), decision


def test_rules_checked_for_event_triggered_runs(prefect_harness, config, tmp_path):
    from flows.ingest import ingest
    from flows.retrain import RetrainRequest, retrain

    ingest([_write_day(tmp_path, 0)], config)  # 250 rows < bootstrap of 1000
    result = retrain(RetrainRequest(trigger="new_data", check_rules=True), config)
    assert result["skipped"] is True and result["promoted"] is False
    assert "waiting for" in result["reasons"][0]
    assert open_registry(config).by_alias(CHAMPION) is None


def test_a_run_retried_after_a_lost_worker_is_not_stopped_by_its_own_claim(
    prefect_harness, config, tmp_path
):
    """The cooldown starts at the claim; the same run started again (same flow run id, its
    worker killed mid-run) still retrains, another run is held back."""
    from ctloop.loop.policy import claim_decision
    from flows.ingest import ingest
    from flows.retrain import RetrainRequest, retrain

    config.triggers.cooldown_minutes = 60
    config.triggers.min_new_rows = 500
    ingest([_write_day(tmp_path, d) for d in range(5)], config)  # 1250 rows >= bootstrap
    assert retrain(RetrainRequest(trigger="new_data"), config)["promoted"]  # no claim: manual
    ingest([_write_day(tmp_path, d) for d in (5, 6)], config)  # 500 new rows
    first = claim_decision(config, claimant="run-a")
    assert first.retrain and first.trigger == "new_data"
    again = claim_decision(config, claimant="run-a")
    assert again.retrain, again.reason
    other = claim_decision(config, claimant="run-b")
    assert other.retrain is False and other.reason.startswith("cooldown")
    # once another run has claimed, run-a's retry is held back like any other run
    triggers.claim_retrain(home_of(config), by="run-c")
    held = claim_decision(config, claimant="run-a")
    assert held.retrain is False and held.reason.startswith("cooldown")


def test_register_is_undone_when_promotion_fails(prefect_harness, config, tmp_path):
    from prefect import flow
    from prefect.transactions import transaction

    from flows.ingest import ingest
    from flows.retrain import RetrainRequest, retrain
    from tasks.register import register_version

    ingest([_write_day(tmp_path, d) for d in range(4)], config)
    first = retrain(RetrainRequest(), config)
    registry = open_registry(config)
    run_uri = f"runs:/{first['run_id']}/model"

    @flow
    def publish_then_fail():
        with transaction():
            register_version(run_uri, first["run_id"], {"semver": "9.9.9"}, config)
            raise RuntimeError("promotion failed")

    with pytest.raises(RuntimeError):
        publish_then_fail()
    assert [v.version for v in registry.versions()] == [first["version"]]


def test_deployments_declare_schedule_triggers_and_concurrency(config):
    from deployments.definitions import build_deployments

    deployments = {d.name: d for d in build_deployments(config)}
    assert set(deployments) == {"retrain", "monitor", "ingest", "ingest-landing", "score-batch"}
    retrain = deployments["retrain"]
    assert [s.schedule.cron for s in retrain.schedules] == [config.triggers.schedule_cron]
    assert retrain.schedules[0].parameters["request"]["trigger"] == "schedule"
    events = {next(iter(t.expect)): t for t in retrain.triggers}
    assert set(events) == {
        "ctloop.batch.accepted",
        "ctloop.drift.detected",
        "ctloop.performance.degraded",
        "ctloop.performance.estimated_drop",
    }
    assert events["ctloop.drift.detected"].parameters["request"]["trigger"] == "drift"
    estimated = events["ctloop.performance.estimated_drop"].parameters["request"]
    assert estimated["trigger"] == "estimated_drop" and estimated["check_rules"] is True
    assert events["ctloop.batch.accepted"].parameters["request"]["check_rules"] is True
    assert all(t.match.root["ctloop.project"] == config.project for t in retrain.triggers)
    assert retrain.concurrency_limit == 1
    assert retrain.concurrency_options.collision_strategy == "ENQUEUE"
    monitor = deployments["monitor"]
    assert next(iter(monitor.triggers[0].expect)) == "ctloop.batch.accepted"
    assert monitor.schedules[0].schedule.interval.total_seconds() == (
        config.triggers.monitor_every_minutes * 60
    )
    assert deployments["ingest-landing"].concurrency_limit == 1
    for deployment in deployments.values():
        assert deployment.entrypoint.startswith(("flows.", "flows/")), deployment.entrypoint
        assert deployment.parameters["config"]["project"] == config.project
