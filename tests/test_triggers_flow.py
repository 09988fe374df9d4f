"""A flow test per trigger: each run records its trigger and reason on the MLflow version."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ctloop.data.demo import DemoScript, demo_config, generate_day
from ctloop.loop import triggers
from ctloop.registry.store import CHAMPION, open_registry
from ctloop.stores.home import home_of

pytestmark = pytest.mark.slow
SCRIPT = DemoScript(rows_per_day=250)


@pytest.fixture(scope="module")
def bootstrapped(prefect_harness, tmp_path_factory):
    """A home with four labelled days and a first champion, built once for the module."""
    from flows.ingest import ingest
    from flows.retrain import RetrainRequest, retrain

    folder = tmp_path_factory.mktemp("bootstrapped")
    config = demo_config(str(folder / "home"), rows_per_day=SCRIPT.rows_per_day)
    paths = []
    for day in range(4):
        path = folder / f"day{day}.csv"
        generate_day(SCRIPT, day, np.random.default_rng(day)).to_csv(path, index=False)
        paths.append(str(path))
    ingest(paths, config)
    first = retrain(RetrainRequest(trigger="new_data", reason="bootstrap"), config)
    assert first["promoted"]
    return config


@pytest.fixture
def trained(bootstrapped, tmp_path):
    """A home with four labelled days and a first champion: each test its own copy of it (the
    lake, the MLflow registry, the trigger state); the first model's artifacts are read where
    they were written."""
    home = tmp_path / "home"
    shutil.copytree(bootstrapped.paths.home, home)
    config = bootstrapped.model_copy(deep=True)
    config.paths.home = str(home)
    return config


def test_manual_is_recorded(trained):
    from flows.retrain import RetrainRequest, retrain

    config = trained.model_copy(deep=True)
    config.gates.min_improvement = -1.0  # accept a same-data retrain: this test is about tags
    result = retrain(RetrainRequest(trigger="manual", reason="operator asked"), config)
    assert result["promoted"] and result["trigger"] == "manual"
    registry = open_registry(config)
    version = registry.version(result["version"])
    assert version.tags["ctloop.trigger"] == "manual"
    assert version.tags["ctloop.reason"] == "operator asked"
    run = registry.client.get_run(result["run_id"])
    assert run.data.tags["ctloop.trigger"] == "manual"


def test_a_scheduled_run_trains_on_what_arrived_and_skips_when_nothing_did(trained, tmp_path):
    """The schedule retrains whatever the rules say (a new day is far below `min_new_rows`),
    and a second run with no new labelled row is skipped, not a refit of the same window."""
    from flows.ingest import ingest
    from flows.retrain import RetrainRequest, retrain

    config = trained.model_copy(deep=True)
    config.gates.min_improvement = -1.0  # this test is about the trigger, not the blessing
    scheduled = RetrainRequest(trigger="schedule", reason="scheduled retrain")
    skipped = retrain(scheduled, config)  # the champion was trained on every labelled row
    assert skipped["skipped"] and not skipped["promoted"]
    assert skipped["reasons"][0].startswith("nothing new since the last retrain")
    path = tmp_path / "day4.csv"
    generate_day(SCRIPT, 4, np.random.default_rng(4)).to_csv(path, index=False)
    ingest([str(path)], config)
    assert config.triggers.min_new_rows > SCRIPT.rows_per_day  # the new-data rule says no
    result = retrain(scheduled, config)
    assert result["promoted"] and result["trigger"] == "schedule"
    version = open_registry(config).version(result["version"])
    assert version.tags["ctloop.trigger"] == "schedule"
    rows = SCRIPT.rows_per_day
    assert (
        version.tags["ctloop.reason"]
        == f"scheduled retrain: {rows} labelled rows since the last retrain"
    )
    again = retrain(scheduled, config)
    assert again["skipped"], again


TS0 = 1_795_000_000.0  # when the first logged prediction was served


def log_contradicted_day(config, day: int = 5):
    """Log the champion's served answers on a demo day, then labels that contradict every one
    of them (its online AUC collapses); the day's frame is returned."""
    from ctloop.model.train import prepare_features
    from ctloop.stores.predlog import SERVED, LoggedPrediction, PredictionLog, default_log_url

    registry = open_registry(config)
    champion = registry.by_alias(CHAMPION)
    model = registry.load(champion)
    frame = generate_day(SCRIPT, day, np.random.default_rng(day))
    numeric = [n for n, kind in champion.signature if kind == "numeric"]
    categorical = [n for n, kind in champion.signature if kind == "categorical"]
    proba = model.predict_proba(prepare_features(frame, numeric, categorical))[:, 1]
    log = PredictionLog(default_log_url(home_of(config).root))
    rows = [
        LoggedPrediction(
            f"r{i}", 0, TS0 + i, champion.version, "champion", SERVED, {}, int(p > 0.5), float(p)
        )
        for i, p in enumerate(proba)
    ]
    log.append(rows)
    log.flush()
    log.add_feedback((f"r{i}", 0, int(p <= 0.5)) for i, p in enumerate(proba))
    log.close()
    return frame


def test_performance_decay_is_detected_from_joined_feedback(trained, tmp_path):
    """Labels that contradict the champion's served answers: the monitor raises the trigger."""
    from flows.monitor import monitor

    config = trained
    champion = open_registry(config).by_alias(CHAMPION)
    frame = log_contradicted_day(config)
    features = tmp_path / "features.csv"
    frame.drop(columns=["default"]).to_csv(features, index=False)
    result = monitor(str(features), config, html_when="never")
    performance = result["performance"]
    assert performance["version"] == champion.version
    assert performance["labelled"] == len(frame)
    assert performance["online"] < performance["baseline"] - config.triggers.performance_drop
    assert performance["decision"]["retrain"] is True
    pending = triggers.load_pending(home_of(config))
    assert pending is not None and pending.trigger == "performance"
    assert "decayed by" in pending.reasons[0]


def test_decay_counts_only_rows_served_since_the_last_retrain(trained):
    """A retrain that began after some of the rows were served answered them: the decay rule
    reads the rest (a refused challenger is not retrained on the same loss at every check)."""
    from datetime import UTC, datetime

    from ctloop.loop.decay import check_online_performance

    config = trained
    frame = log_contradicted_day(config)
    home = home_of(config)
    before = check_online_performance(config, open_registry(config))
    assert before.labelled == len(frame) and before.decision.retrain
    half = len(frame) // 2
    triggers.claim_retrain(home, at=datetime.fromtimestamp(TS0 + half, UTC))
    after = check_online_performance(config, open_registry(config))
    assert after.labelled == len(frame) - half
    triggers.claim_retrain(home, at=datetime.fromtimestamp(TS0 + len(frame) + 1, UTC))
    none = check_online_performance(config, open_registry(config))
    assert none.labelled == 0 and not none.decision.retrain


def test_no_feedback_means_no_performance_trigger(trained, tmp_path):
    from flows.monitor import monitor

    features = tmp_path / "features.csv"
    generate_day(SCRIPT, 5, np.random.default_rng(5)).drop(columns=["default"]).to_csv(
        features, index=False
    )
    result = monitor(str(features), trained, html_when="never")
    assert result["performance"]["decision"]["retrain"] is False
    assert triggers.load_pending(home_of(trained)) is None


def test_refusal_and_promotion_reach_the_webhook(trained):
    """Notifications: a refused blessing and a promotion are posted to the configured webhook."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from flows.retrain import RetrainRequest, retrain

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = trained.model_copy(deep=True)
        config.notifications.webhook_url = f"http://127.0.0.1:{server.server_port}/hook"
        strict = config.model_copy(deep=True)
        strict.gates.min_metrics = {"roc_auc": 0.999}
        strict.gates.floors_against_champion = False  # the champion misses it too
        refused = retrain(RetrainRequest(reason="strict"), strict)
        assert refused["blessed"] is False
        lenient = config.model_copy(deep=True)
        lenient.gates.min_improvement = -1.0
        promoted = retrain(RetrainRequest(reason="lenient"), lenient)
        assert promoted["promoted"] is True
    finally:
        server.shutdown()
    events = [r["event"] for r in received]
    assert events == ["ctloop.model.refused", "ctloop.model.promoted"]
    assert "< floor 0.999" in received[0]["payload"]["reason"]
    assert received[1]["payload"]["version"] == promoted["version"]


def _log_served(config, version: int, labels_agree: bool, start: int) -> None:
    """Serve one day through `version` (as the server's log would hold it), then its labels."""
    from ctloop.model.train import prepare_features
    from ctloop.stores.predlog import SERVED, LoggedPrediction, PredictionLog, default_log_url

    registry = open_registry(config)
    ref = registry.version(version)
    model = registry.load(ref)
    frame = generate_day(SCRIPT, 6, np.random.default_rng(6))
    numeric = [n for n, kind in ref.signature if kind == "numeric"]
    categorical = [n for n, kind in ref.signature if kind == "categorical"]
    proba = model.predict_proba(prepare_features(frame, numeric, categorical))[:, 1]
    log = PredictionLog(default_log_url(home_of(config).root))
    ids = [f"v{version}-{start + i}" for i in range(len(proba))]
    log.append(
        [
            LoggedPrediction(
                rid, 0, 1_795_000_000.0, version, "x", SERVED, {}, int(p > 0.5), float(p)
            )
            for rid, p in zip(ids, proba, strict=True)
        ]
    )
    log.flush()
    log.add_feedback(
        (rid, 0, int(p > 0.5) if labels_agree else int(p <= 0.5))
        for rid, p in zip(ids, proba, strict=True)
    )
    log.close()


@pytest.mark.parametrize("challenger_wins", [True, False])
def test_canary_is_promoted_or_rolled_back_online(trained, tmp_path, challenger_wins):
    from ctloop.registry.store import CHALLENGER
    from flows.monitor import monitor
    from flows.retrain import RetrainRequest, retrain

    config = trained.model_copy(deep=True)
    config.gates.promote = False  # a blessed model becomes the canary, not the champion
    config.gates.min_improvement = -1.0
    config.serving.challenger_traffic = 0.1
    canary = retrain(RetrainRequest(reason="canary"), config)
    registry = open_registry(config)
    champion = registry.by_alias(CHAMPION).version
    assert registry.by_alias(CHALLENGER).version == canary["version"] != champion

    _log_served(config, champion, labels_agree=not challenger_wins, start=0)
    _log_served(config, canary["version"], labels_agree=challenger_wins, start=10_000)
    features = tmp_path / "features.csv"
    generate_day(SCRIPT, 6, np.random.default_rng(6)).drop(columns=["default"]).to_csv(
        features, index=False
    )
    result = monitor(str(features), config, html_when="never")
    rollout = result["rollout"]
    assert rollout["action"] == ("promote" if challenger_wins else "rollback"), rollout
    assert registry.by_alias(CHALLENGER) is None
    expected = canary["version"] if challenger_wins else champion
    assert registry.by_alias(CHAMPION).version == expected


def _paused_run_id(timeout: float = 120.0):
    """The id of the retrain run waiting for review, once it is paused."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStateName

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=dict(name=FlowRunFilterStateName(any_=["Paused"]))
                )
            )
            if runs:
                return runs[0].id
            time.sleep(0.5)
    raise AssertionError("no paused run appeared")


@pytest.mark.parametrize("approve", [True, False])
def test_review_pauses_before_promotion(trained, approve):
    import threading

    from prefect.flow_runs import resume_flow_run

    from flows.retrain import RetrainRequest, retrain

    config = trained.model_copy(deep=True)
    config.gates.review_required = True
    config.gates.min_improvement = -1.0
    before = open_registry(config).by_alias(CHAMPION).version
    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.update(retrain(RetrainRequest(reason="reviewed"), config))
    )
    worker.start()
    run_id = _paused_run_id()
    resume_flow_run(run_id, run_input={"approve": approve, "reason": "looked at the card"})
    worker.join(timeout=300)
    assert result, "the reviewed run did not finish"
    registry = open_registry(config)
    if approve:
        assert result["promoted"] is True
        version = registry.version(result["version"])
        assert version.tags["ctloop.review"] == "approved"
        assert registry.by_alias(CHAMPION).version == result["version"] != before
    else:
        assert result["promoted"] is False and result["blessed"] is False
        assert result["reasons"] == ["rejected in review: looked at the card"]
        assert registry.by_alias(CHAMPION).version == before


def test_review_timeout_keeps_the_champion(trained):
    from flows.retrain import RetrainRequest, retrain

    config = trained.model_copy(deep=True)
    config.gates.review_required = True
    config.gates.review_timeout_seconds = 2
    config.gates.min_improvement = -1.0
    before = open_registry(config).by_alias(CHAMPION).version
    result = retrain(RetrainRequest(reason="nobody answers"), config)
    assert result["promoted"] is False
    assert "timed out after 2 s" in result["reasons"][0]
    assert open_registry(config).by_alias(CHAMPION).version == before


def _flow_run(state):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def test_a_run_the_rules_do_not_let_train_ends_skipped_with_its_reason(trained):
    from flows.retrain import RetrainRequest, retrain

    request = RetrainRequest(trigger="new_data", reason="new data accepted", check_rules=True)
    state = retrain(request, trained, return_state=True)
    assert state.is_completed() and state.name == "Skipped"
    assert "new labelled rows since the champion <" in state.message
    answer = state.result()
    assert answer["skipped"] is True and answer["reasons"] == [state.message]
    run = _flow_run(state)
    assert run.name == "retrain-new_data" and run.state.name == "Skipped"
    assert len(open_registry(trained).versions()) == 1


def test_a_run_is_named_after_the_trigger_its_version_records(trained):
    """A batch arrives while a drift waits for its rows: the rules answer the drift, so the run
    is renamed `retrain-drift`, and MLflow describes the run and version and links back."""
    from flows.retrain import RetrainRequest, retrain

    config = trained.model_copy(deep=True)
    config.gates.min_improvement = -1.0
    since = SCRIPT.start.isoformat()  # the four labelled days all came after it
    pending = triggers.PendingDrift(since=since, detected_at=since, reasons=["income drifted"])
    triggers.save_pending(home_of(config), pending)
    request = RetrainRequest(trigger="new_data", reason="new data accepted", check_rules=True)
    state = retrain(request, config, return_state=True)
    answer = state.result()
    assert state.name == "Completed" and answer["trigger"] == "drift", answer
    assert _flow_run(state).name == "retrain-drift"
    registry = open_registry(config)
    version = registry.version(answer["version"])
    assert version.tags["ctloop.trigger"] == "drift"
    run = registry.client.get_run(answer["run_id"])
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("**drift** retrain: drift since") and "income drifted" in note
    assert f"blessed as {answer['semver']}" in note
    flow_run_id = str(state.state_details.flow_run_id)
    assert run.data.tags["ctloop.prefect_flow_run"] == flow_run_id and flow_run_id in note
    # a link to the run's page: this API's UI, or where `ctloop ui` serves the home's runs
    from prefect.settings import PREFECT_UI_URL

    base = (PREFECT_UI_URL.value() or "http://127.0.0.1:4200").rstrip("/")
    link = f"{base}/runs/flow-run/{flow_run_id}"
    assert run.data.tags["ctloop.prefect_flow_run_url"] == link and f"]({link})" in note
    described = registry.client.get_model_version(registry.name, str(answer["version"]))
    assert described.description == note


def test_a_decision_cancels_the_queued_event_runs_it_covers(prefect_harness, monkeypatch):
    """Against the Prefect API: the waiting rule-checked runs of the deciding run's deployment
    created before it started are Cancelled with a message naming it; a manual run, a run of
    another deployment and a run created after it stay queued. An API error only warns."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.states import Pending, Running, Scheduled

    import flows.retrain as module

    config = {"project": "loans"}
    event = {"config": config, "request": {"trigger": "drift", "check_rules": True}}
    manual = {"config": config, "request": {"trigger": "manual"}}
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("retrain")
        retrain_dep = client.create_deployment(flow_id, f"retrain-{time.time_ns()}")
        other_dep = client.create_deployment(flow_id, f"other-{time.time_ns()}")

        def queued(deployment, parameters, name):
            return client.create_flow_run_from_deployment(
                deployment, parameters=parameters, state=Scheduled(), name=name
            ).id

        covered = [queued(retrain_dep, event, "covered-1"), queued(retrain_dep, event, "covered-2")]
        kept = [queued(retrain_dep, manual, "manual"), queued(other_dep, event, "other-dep")]
        time.sleep(0.05)
        me = client.create_flow_run_from_deployment(
            retrain_dep, parameters=event, state=Scheduled(), name="retrain-drift"
        )
        client.set_flow_run_state(me.id, Pending(), force=True)
        client.set_flow_run_state(me.id, Running(), force=True)
        time.sleep(0.05)
        kept.append(queued(retrain_dep, event, "after-start"))
        monkeypatch.setenv("PREFECT__FLOW_RUN_ID", str(me.id))

        assert module.cancel_covered_runs(keep=1) == [str(covered[0])]  # the newest stays
        assert sorted(module.cancel_covered_runs()) == [str(covered[1])]
        for run_id in covered:
            state = client.read_flow_run(run_id).state
            assert state.type.value == "CANCELLED", state
            assert state.message.startswith(f"covered by retrain run retrain-drift ({me.id})")
        for run_id in kept:
            assert client.read_flow_run(run_id).state.name == "Scheduled"

    def broken(*args, **kwargs):
        raise RuntimeError("API down")

    warnings = []
    monkeypatch.setattr("prefect.client.orchestration.get_client", broken)
    monkeypatch.setattr(module, "_logger", lambda: type("L", (), {
        "warning": lambda *a: warnings.append(a), "info": lambda *a: None})())  # fmt: skip
    assert module.cancel_covered_runs() == []
    assert "API down" in str(warnings)
