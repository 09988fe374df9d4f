"""One verdict shape for every gate: combining them, and the gates that produce them."""

from __future__ import annotations

import pandas as pd
import pytest

from ctloop.config.settings import GateConfig
from ctloop.gates.blessing import bless
from ctloop.gates.reports import blessing_markdown
from ctloop.gates.review import review_verdict
from ctloop.gates.verdict import BLOCK, INFO, WARN, Verdict, combine
from ctloop.validate.checks import split_parity

PASSED_BLESSING = Verdict("blessing", True, ("roc_auc 0.8000 >= floor 0.6", "no champion yet"))
FAILED_BLESSING = Verdict("blessing", False, ("roc_auc 0.5000 < floor 0.6 (short by 0.1000)",))
PARITY_WARN = Verdict("split_parity", False, ("class 1 is 30% vs 10% (gap 20% > 10%)",), WARN)
PARITY_BLOCK = Verdict("split_parity", False, ("class 1 is 30% vs 10% (gap 20% > 10%)",), BLOCK)


def test_all_passed_keeps_the_passed_reasons_in_order():
    verdict = combine(Verdict("split_parity", True, (), BLOCK), PASSED_BLESSING)
    assert verdict.passed
    assert verdict.reasons == ("roc_auc 0.8000 >= floor 0.6", "no champion yet")
    assert [v.gate for v in verdict.parts] == ["split_parity", "blessing"]


def test_a_warning_never_changes_the_decision_or_its_reasons():
    verdict = combine(PARITY_WARN, PASSED_BLESSING)
    assert verdict.passed
    assert verdict.reasons == PASSED_BLESSING.reasons
    assert verdict.warnings == ("class 1 is 30% vs 10% (gap 20% > 10%)",)
    assert verdict.part("split_parity") is PARITY_WARN


@pytest.mark.parametrize(
    ("blessing", "expected"),
    [
        # a passed gate's reasons are dropped once another blocks
        (PASSED_BLESSING, ("class 1 is 30% vs 10% (gap 20% > 10%)",)),
        # failed reasons: the first failed gate first, then the next
        (
            FAILED_BLESSING,
            (
                "class 1 is 30% vs 10% (gap 20% > 10%)",
                "roc_auc 0.5000 < floor 0.6 (short by 0.1000)",
            ),
        ),
    ],
)
def test_a_blocking_failure_refuses_with_the_failed_reasons_first(blessing, expected):
    verdict = combine(PARITY_BLOCK, blessing)
    assert not verdict.passed
    assert verdict.reasons == expected
    assert verdict.warnings == ()


def test_combining_a_combined_verdict_flattens_it_and_skips_none():
    first = combine(PARITY_WARN, PASSED_BLESSING)
    rejected = review_verdict(False, "the card shows a gap")
    verdict = combine(first, None, rejected)
    assert [v.gate for v in verdict.parts] == ["split_parity", "blessing", "review"]
    assert not verdict.passed
    assert verdict.reasons == ("rejected in review: the card shows a gap",)
    assert verdict.warnings == PARITY_WARN.reasons


def test_info_verdicts_are_recorded_only():
    note = Verdict("note", False, ("seen",), INFO)
    verdict = combine(note, PASSED_BLESSING)
    assert verdict.passed and verdict.reasons == PASSED_BLESSING.reasons
    assert verdict.warnings == ()


def test_verdicts_are_frozen():
    with pytest.raises(AttributeError):
        PASSED_BLESSING.passed = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("approve", "reason", "timeout", "passed", "answer", "recorded"),
    [
        (True, "looks fine", None, True, "approved", "looks fine"),
        (True, "", None, True, "approved", "approved"),
        (False, "", None, False, "rejected", "rejected in review: no reason given"),
        (False, "gap", None, False, "rejected", "rejected in review: gap"),
        (None, "", 30, False, "timeout", "review timed out after 30 s: the champion stays"),
    ],
)
def test_review_verdict(approve, reason, timeout, passed, answer, recorded):
    verdict = review_verdict(approve, reason, timeout)
    assert verdict.gate == "review" and verdict.severity == BLOCK
    assert verdict.passed is passed
    assert verdict.details == {"answer": answer, "reason": recorded}
    # an approval adds no reason, so a blessed challenger keeps the blessing's reasons
    assert verdict.reasons == (() if passed else (recorded,))


def test_blessing_as_verdict_and_as_recorded_with_the_combined_decision():
    blessing = bless({"roc_auc": 0.71}, {"roc_auc": 0.65}, GateConfig())
    verdict = blessing.verdict()
    assert verdict.gate == "blessing" and verdict.passed and verdict.severity == BLOCK
    assert verdict.reasons == blessing.reasons
    assert verdict.details["challenger"] == {"roc_auc": 0.71}
    assert verdict.details["champion"] == {"roc_auc": 0.65}

    refused = combine(PARITY_BLOCK, verdict)
    recorded = blessing.as_dict(refused)
    assert recorded["blessed"] is False
    assert recorded["reasons"] == ["class 1 is 30% vs 10% (gap 20% > 10%)"]
    assert list(recorded) == list(blessing.as_dict())  # same keys, same order
    markdown = blessing_markdown(blessing, None, refused)
    assert markdown.startswith("## Not blessed\n\n- class 1 is 30% vs 10% (gap 20% > 10%)")
    assert "| roc_auc | 0.7100 | 0.6500 |" in markdown
    assert blessing_markdown(blessing, "1.1.0").startswith("## Blessed: version 1.1.0")


def _labels(ones: int, rows: int = 100) -> pd.DataFrame:
    return pd.DataFrame({"default": [1] * ones + [0] * (rows - ones)})


@pytest.mark.parametrize(
    ("severity", "expected"), [("warn", WARN), ("block", BLOCK), ("off", INFO)]
)
def test_split_parity_verdict(make_config, severity, expected):
    config = make_config(validation={"severity": {"label_parity": severity}})
    even = split_parity(_labels(20), _labels(20), config)
    assert even.passed and even.reasons == () and even.severity == expected
    skewed = split_parity(_labels(40), _labels(10), config)
    if severity == "off":
        assert skewed.passed
        return
    assert not skewed.passed and skewed.severity == expected
    assert skewed.reasons == (
        "target 'default': class 1 is 40% of the train split and 10% of the validation split "
        "(gap 30% > 10%)",
    )
    assert skewed.details["check"] == "label_parity" and skewed.details["value"] == 0.3


def test_batch_report_as_verdict():
    from ctloop.validate.checks import Issue, ValidationReport

    missing = Issue("missing", "warn", "column income: 30% missing > 20%", "income", 0.3)
    schema = Issue("schema", "block", "column age: text in a numeric column", "age")
    drift = Issue("data_drift", "block", "3 of 5 columns drifted (share 0.60 > 0.50)", None, 0.6)
    refused = ValidationReport("day3.csv", 100, (missing, schema, drift)).verdict()
    assert refused.gate == "batch" and not refused.passed
    assert refused.reasons == (
        "column age: text in a numeric column",
        "3 of 5 columns drifted (share 0.60 > 0.50)",
    )
    assert refused.warnings == ("column income: 30% missing > 20%",)
    assert [v.details for v in refused.parts if v.blocks] == [schema.as_dict(), drift.as_dict()]
    warned = ValidationReport("day4.csv", 100, (missing,)).verdict()
    assert warned.passed and warned.reasons == () and warned.warnings == (missing.message,)
    assert ValidationReport("day5.csv", 100, ()).verdict().passed


@pytest.mark.parametrize(
    ("action", "passed", "severity"),
    [("promote", True, BLOCK), ("rollback", False, BLOCK), ("wait", False, INFO)],
)
def test_canary_decision_as_verdict(action, passed, severity):
    from ctloop.loop.rollout import RolloutDecision

    decision = RolloutDecision(action, "online roc_auc: challenger v3 0.8100 vs champion v2 0.7900")
    verdict = decision.verdict()
    assert (verdict.gate, verdict.passed, verdict.severity) == ("canary", passed, severity)
    assert verdict.reasons == ("online roc_auc: challenger v3 0.8100 vs champion v2 0.7900",)
    assert verdict.details["action"] == action
    # a wait never blocks a combined decision; a rollback does
    assert combine(verdict).passed is (action != "rollback")
