"""The run record: built from small synthetic values, without Prefect or MLflow."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ctloop.gates.blessing import bless
from ctloop.gates.review import review_verdict
from ctloop.gates.verdict import BLOCK, WARN, Verdict, combine
from ctloop.lake.snapshots import Manifest, window_span
from ctloop.loop.record import build_run_record, skipped_answer
from ctloop.loop.triggers import RetrainRequest
from ctloop.model.analyse import Analysis, SliceGap
from ctloop.model.train import Candidate, Split
from ctloop.model.tune import TrialRecord, TuningResult
from ctloop.names import MODEL_CHALLENGER, MODEL_PROMOTED, MODEL_REFUSED
from ctloop.registry.lineage import RECIPE_FILE
from ctloop.registry.store import ModelRef

SNAPSHOTS = ["s-001", "s-002"]
DIGESTS = {"s-001": "a" * 64, "s-002": "b" * 64}
PARITY_OK = Verdict("split_parity", True, (), WARN)


@pytest.fixture
def candidate() -> Candidate:
    return Candidate(
        pipeline=None,
        numeric=["income"],
        categorical=["region"],
        train_rows=80,
        params={"max_iter": 50, "learning_rate": 0.1},
        family="hist_gradient_boosting",
        recipe_params={"max_iter": 50},
    )


@pytest.fixture
def split() -> Split:
    frame = pd.DataFrame(
        {"income": [1.0, 2.0, 3.0], "region": ["n", "s", "n"], "default": [0, 1, 0]}
    )
    return Split(frame.iloc[:2], frame.iloc[2:], "time")


@pytest.fixture
def analysis() -> Analysis:
    gap = SliceGap("region", "roc_auc", "n", 0.8, "s", 0.7)
    return Analysis(
        metrics={"roc_auc": 0.75, "accuracy": 0.9},
        slices={},
        gaps=(gap,),
        importances={"income": 0.12},
        what_if=(),
        plots={"roc.png": b"png"},
    )


@pytest.fixture
def tuned() -> TuningResult:
    trial = TrialRecord(0, "COMPLETE", 0.74, "hist_gradient_boosting", {"max_iter": 50}, {}, 0, 1)
    return TuningResult(
        study_name="study-7",
        storage="journal",
        metric="roc_auc",
        direction="maximize",
        best_family="hist_gradient_boosting",
        best_params={"max_iter": 50},
        best_value=0.74,
        trials=(trial,),
        importances={"max_iter": 0.6},
    )


@pytest.fixture
def build(config, candidate, split, analysis):
    """The builder with the fixtures' values; keywords override them."""

    def make(**overrides):
        values = dict(
            request=RetrainRequest(trigger="drift", reason="income drifted", since="2024-01-02"),
            config=config,
            candidate=candidate,
            split=split,
            rows=3,
            analysis=analysis,
            blessing=bless(analysis.metrics, {"roc_auc": 0.7}, config.gates),
            champion_metrics={"roc_auc": 0.7},
            snapshots=SNAPSHOTS,
            digests=DIGESTS,
            trained_on="2024-01-01..2024-01-02 (2 snapshots, 3 rows)",
            latest=ModelRef(
                "loan",
                3,
                "1.2.0",
                "r3",
                {
                    "ctloop.signature": json.dumps(
                        [["income", "numeric"], ["region", "categorical"]]
                    )
                },
            ),
            commit="abc123",
            flow_run_id="flow-9",
        )
        values.update(overrides)
        if "decision" not in values:
            values["decision"] = combine(PARITY_OK, values["blessing"].verdict())
        return build_run_record(**values)

    return make


def test_a_blessed_record(build):
    record = build()
    assert record.blessed and record.semver == "1.3.0"  # same signature: minor
    assert record.run_name == "drift-1.3.0"
    tags = record.tags
    assert tags["ctloop.trigger"] == "drift" and tags["ctloop.reason"] == "income drifted"
    assert tags["ctloop.snapshots"] == "s-001,s-002"
    assert json.loads(tags["ctloop.snapshot_digests"]) == {"s-001": "a" * 16, "s-002": "b" * 16}
    assert tags["ctloop.git_commit"] == "abc123"
    assert tags["ctloop.prefect_flow_run"] == "flow-9"
    assert json.loads(tags["ctloop.signature"]) == [
        ["income", "numeric"],
        ["region", "categorical"],
    ]
    assert tags["ctloop.blessed"] == "true"
    assert len(record.reasons) > 1  # every passed check, joined
    assert tags["ctloop.blessing"] == "; ".join(record.reasons)
    assert "roc_auc 0.7500 vs champion 0.7000" in tags["ctloop.blessing"]
    assert json.loads(tags["ctloop.params"]) == {"max_iter": 50, "learning_rate": 0.1}
    assert tags["ctloop.split"] == "time"
    for absent in ("ctloop.review", "ctloop.split_warning", "ctloop.tuning_study"):
        assert absent not in tags
    assert record.version_tags == {**tags, "semver": "1.3.0"}
    assert record.params == {
        "max_iter": 50,
        "learning_rate": 0.1,
        "train_rows": 80,
        "since": "2024-01-02",
    }
    assert record.metrics == {
        "holdout_roc_auc": 0.75,
        "holdout_accuracy": 0.9,
        "champion_holdout_roc_auc": 0.7,
        "importance_income": 0.12,
        "slice_gap_region": pytest.approx(0.1),
    }
    assert set(record.artifacts) == {
        "blessing.json",
        "blessing.md",
        "model_card.md",
        "analysis.json",
        RECIPE_FILE,
        "config.json",
    }
    assert record.artifacts["blessing.md"].startswith("## Blessed: version 1.3.0")
    recipe = json.loads(record.artifacts[RECIPE_FILE])
    assert recipe["snapshots"] == SNAPSHOTS and recipe["git_commit"] == "abc123"
    assert recipe["rows"] == 3 and recipe["tuning"] is None
    assert record.model_card == record.artifacts["model_card.md"]
    assert "# Model card: " in record.model_card and " 1.3.0" in record.model_card.splitlines()[0]
    assert record.window == ("s-001", "s-002")
    assert record.images == {"roc.png": b"png"} and record.trials is None


def test_the_answer_and_the_event(build):
    record = build()
    answer = record.answer(version=4, promoted=True, run_id="run-1", ingested=None)
    assert list(answer) == [
        "version", "semver", "blessed", "reasons", "promoted", "trigger", "reason", "run_id",
        "snapshots", "metrics", "champion_metrics", "family", "params", "tuning", "gaps",
        "ingested",
    ]  # fmt: skip
    assert answer["version"] == 4 and answer["promoted"] is True and answer["run_id"] == "run-1"
    assert answer["blessed"] is True and answer["semver"] == "1.3.0"
    assert answer["reasons"] == list(record.reasons)
    assert answer["params"] == {"max_iter": 50}
    assert answer["gaps"] == [{"column": "region", "gap": pytest.approx(0.1)}]
    name, resource, payload = record.event(version=4, promoted=True, run_id="run-1")
    assert name == MODEL_PROMOTED
    assert resource.startswith("ctloop.model.")
    assert payload["version"] == 4 and payload["trigger"] == "drift"
    assert payload["reason"] == "; ".join(record.reasons)
    assert record.event(version=4, promoted=False, run_id="r")[0] == MODEL_CHALLENGER


def test_a_blocking_split_parity_refuses_and_is_recorded(build, config, analysis):
    parity = Verdict("split_parity", False, ("class 1: gap 30% > 10%",), BLOCK)
    blessing = bless(analysis.metrics, {"roc_auc": 0.7}, config.gates)
    assert blessing.blessed  # the blessing alone would pass
    refused = build(blessing=blessing, decision=combine(parity, blessing.verdict()))
    assert not refused.blessed and refused.semver is None
    assert refused.run_name == "drift-refused"
    assert refused.tags["ctloop.blessed"] == "false"
    assert refused.tags["ctloop.blessing"] == "class 1: gap 30% > 10%"
    assert refused.tags["ctloop.split_warning"] == "class 1: gap 30% > 10%"
    blessing = json.loads(refused.artifacts["blessing.json"])
    assert blessing["blessed"] is False and blessing["reasons"] == ["class 1: gap 30% > 10%"]
    assert blessing["challenger"] == {"roc_auc": 0.75, "accuracy": 0.9}
    assert refused.event(version=None, promoted=False, run_id="r")[0] == MODEL_REFUSED
    assert refused.answer(version=None, promoted=False, run_id="r")["reasons"] == [
        "class 1: gap 30% > 10%"
    ]


def test_a_warned_split_and_a_rejected_review(build, config, analysis):
    blessing = bless(analysis.metrics, None, config.gates)
    parity = Verdict("split_parity", False, ("class 1: gap 12% > 10%",), WARN)
    decision = combine(parity, blessing.verdict(), review_verdict(False, "slice s is too weak"))
    record = build(blessing=blessing, decision=decision, champion_metrics=None)
    assert not record.blessed
    assert record.tags["ctloop.split_warning"] == "class 1: gap 12% > 10%"
    assert record.tags["ctloop.review"] == "rejected"
    assert record.tags["ctloop.review_reason"] == "rejected in review: slice s is too weak"
    assert record.tags["ctloop.blessing"] == "rejected in review: slice s is too weak"
    assert "champion_holdout_roc_auc" not in record.metrics


def test_an_approved_review_keeps_the_blessing_reasons(build, config, analysis):
    blessing = bless(analysis.metrics, None, config.gates)
    decision = combine(PARITY_OK, blessing.verdict(), review_verdict(True, "ok"))
    record = build(blessing=blessing, decision=decision, latest=None)
    assert record.semver == "1.0.0"  # the first model
    assert record.tags["ctloop.review"] == "approved"
    assert record.tags["ctloop.review_reason"] == "ok"
    assert record.reasons == blessing.reasons


def test_tuning_is_recorded(build, tuned):
    record = build(tuned=tuned)
    assert record.tags["ctloop.tuning_study"] == "study-7"
    assert record.metrics["tuning_best_cv_score"] == 0.74
    assert record.metrics["param_importance_max_iter"] == 0.6
    assert json.loads(record.artifacts["tuning.json"])["trials"] == 1
    assert record.trials[0]["number"] == 0 and record.trials[0]["value"] == 0.74
    assert record.answer(version=None, promoted=False, run_id="r")["tuning"]["completed"] == 1


def test_skipped_answer():
    assert skipped_answer("new_data", "only 10 new rows") == {
        "skipped": True,
        "blessed": False,
        "promoted": False,
        "version": None,
        "semver": None,
        "reasons": ["only 10 new rows"],
        "trigger": "new_data",
    }


def test_window_span():
    def manifest(snapshot, start, end):
        return Manifest(snapshot, "x", "src.csv", 10, ["a"], 1, "2024-02-01", start, end)

    manifests = [
        manifest("s-001", "2024-01-01T00:00:00", "2024-01-01T23:00:00"),
        manifest("s-002", "2024-01-02T00:00:00", "2024-01-02T23:00:00"),
        manifest("s-003", "2024-01-03T00:00:00", "2024-01-03T23:00:00"),
    ]
    assert window_span(manifests, SNAPSHOTS, 20) == "2024-01-01..2024-01-02 (2 snapshots, 20 rows)"
    undated = [manifest("s-001", None, None)]
    assert window_span(undated, ["s-001"], 10) == "(1 snapshots, 10 rows)"


def test_request_answering_a_rule_decision():
    from ctloop.loop.triggers import RetrainDecision

    request = RetrainRequest(trigger="new_data", reason="batch", check_rules=True)
    decision = RetrainDecision(True, "drift", "drift on income", since="2024-01-05")
    answered = request.answering(decision)
    assert (answered.trigger, answered.reason, answered.since) == (
        "drift",
        "drift on income",
        "2024-01-05",
    )
    assert answered.check_rules is True and request.trigger == "new_data"
