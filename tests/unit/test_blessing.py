"""The blessing gate: floors, ceilings, and beating the champion by the margin."""

from __future__ import annotations

import pytest

from ctloop.config.settings import GateConfig
from ctloop.gates.blessing import bless


def test_first_model_is_blessed_with_no_champion_reason():
    result = bless({"roc_auc": 0.71}, None, GateConfig())
    assert result.blessed
    assert any("no champion" in r for r in result.reasons)
    assert any("roc_auc 0.7100 >= floor 0.6" in r for r in result.reasons)
    assert result.champion is None
    assert result.as_dict()["reasons"] == list(result.reasons)


@pytest.mark.parametrize(
    ("value", "shortfall"), [(0.55, "0.0500"), (0.3, "0.3000"), (0.5999, "0.0001")]
)
def test_refused_below_a_floor_with_the_shortfall(value, shortfall):
    result = bless({"roc_auc": value}, None, GateConfig(min_metrics={"roc_auc": 0.6}))
    assert not result.blessed
    assert len(result.reasons) == 1
    reason = result.reasons[0]
    assert f"roc_auc {value:.4f} < floor 0.6" in reason
    assert f"short by {shortfall}" in reason
    # a refusal lists only what failed
    assert not any("no champion" in r for r in result.reasons)


def test_exactly_at_the_floor_passes():
    assert bless({"roc_auc": 0.6}, None, GateConfig(min_metrics={"roc_auc": 0.6})).blessed


def test_every_failed_floor_is_listed():
    gates = GateConfig(min_metrics={"roc_auc": 0.7, "recall": 0.5, "pr_auc": 0.4})
    result = bless({"roc_auc": 0.65, "recall": 0.2, "pr_auc": 0.9}, None, gates)
    assert not result.blessed
    assert len(result.reasons) == 2
    assert any(r.startswith("roc_auc") for r in result.reasons)
    assert any(r.startswith("recall") and "short by 0.3000" in r for r in result.reasons)


def test_a_floor_on_a_metric_not_computed_refuses():
    result = bless({"accuracy": 0.9}, None, GateConfig(min_metrics={"roc_auc": 0.6}))
    assert not result.blessed
    assert result.reasons == ("roc_auc: not computed, needs >= 0.6",)


def test_ceiling():
    gates = GateConfig(min_metrics={}, max_metrics={"calibration_error": 0.1})
    refused = bless({"calibration_error": 0.25}, None, gates)
    assert not refused.blessed
    assert "over by 0.1500" in refused.reasons[0]
    assert bless({"calibration_error": 0.05}, None, gates).blessed
    assert not bless({}, None, gates).blessed


def test_must_beat_the_champion_by_the_margin():
    gates = GateConfig(min_improvement=0.01)
    champion = {"roc_auc": 0.80}
    better = bless({"roc_auc": 0.83}, champion, gates)
    assert better.blessed
    assert any("beats it" in r and "gain +0.0300" in r for r in better.reasons)
    slightly = bless({"roc_auc": 0.805}, champion, gates)
    assert not slightly.blessed
    assert "does not beat" in slightly.reasons[0] and "gain +0.0050" in slightly.reasons[0]
    worse = bless({"roc_auc": 0.78}, champion, gates)
    assert not worse.blessed and "gain -0.0200" in worse.reasons[0]
    assert worse.champion == champion


def test_zero_margin_accepts_a_tie():
    tie = bless({"roc_auc": 0.8}, {"roc_auc": 0.8}, GateConfig())
    assert tie.blessed
    assert "matches or beats it (gain +0.0000)" in tie.reasons[-1]
    assert "margin" not in tie.reasons[-1]  # not "beats it by the margin 0"
    worse = bless({"roc_auc": 0.79}, {"roc_auc": 0.8}, GateConfig())
    assert "does not match it (gain -0.0100)" in worse.reasons[0]


def test_strict_floors_refuse_even_a_better_challenger():
    gates = GateConfig(min_metrics={"roc_auc": 0.6}, floors_against_champion=False)
    result = bless({"roc_auc": 0.58}, {"roc_auc": 0.5}, gates)
    assert not result.blessed
    assert len(result.reasons) == 1 and "floor" in result.reasons[0]
    # by default the better of two models below the floor serves, flagged
    default = bless({"roc_auc": 0.58}, {"roc_auc": 0.5}, GateConfig(min_metrics={"roc_auc": 0.6}))
    assert default.blessed and default.reasons[0].startswith("warning: roc_auc 0.5800 < floor")


@pytest.mark.parametrize(
    ("challenger", "champion", "margin", "blessed"),
    [
        (0.40, 0.50, 0.0, True),  # lower loss wins
        (0.60, 0.50, 0.0, False),  # higher loss loses
        (0.45, 0.50, 0.02, True),  # 10% better > a margin of 2% of the champion's loss
        (0.49, 0.50, 0.03, False),  # 2% better < a margin of 3%
    ],
)
def test_lower_is_better_primary_metric(challenger, champion, margin, blessed):
    # log_loss has no fixed scale: the margin is a fraction of the champion's value
    gates = GateConfig(primary_metric="log_loss", min_metrics={}, min_improvement=margin)
    result = bless({"log_loss": challenger}, {"log_loss": champion}, gates)
    assert result.blessed is blessed
    assert result.primary_metric == "log_loss"
    gain = champion - challenger
    assert any(f"gain {gain:+.4g}, {gain / champion:+.1%}" in r for r in result.reasons)


def test_primary_metric_missing_cannot_compare():
    gates = GateConfig(primary_metric="pr_auc", min_metrics={})
    result = bless({"roc_auc": 0.9}, {"roc_auc": 0.8, "pr_auc": 0.5}, gates)
    assert not result.blessed
    assert "cannot compare" in result.reasons[0]
    assert not bless({"pr_auc": 0.9}, {"roc_auc": 0.8}, gates).blessed


def test_margin_comparison_is_not_fooled_by_binary_floats():
    gates = GateConfig(primary_metric="roc_auc", min_metrics={}, min_improvement=0.2)
    decision = bless({"roc_auc": 0.3}, {"roc_auc": 0.1}, gates)
    assert decision.blessed, decision.reasons
    assert not bless({"roc_auc": 0.29}, {"roc_auc": 0.1}, gates).blessed


# --- per slice and fairness ----------------------------------------------------------------


def _slices(**values):
    return {"region": {v: {"rows": rows, "roc_auc": auc} for v, (auc, rows) in values.items()}}


def test_every_slice_must_stay_within_the_slice_margin():
    gates = GateConfig(slice_columns=["region"], slice_min_improvement=-0.02, min_slice_rows=30)
    champion = _slices(north=(0.80, 100), south=(0.75, 100), tiny=(0.90, 10))
    ok = _slices(north=(0.81, 100), south=(0.74, 100), tiny=(0.40, 10))
    result = bless(
        {"roc_auc": 0.8}, {"roc_auc": 0.79}, gates, challenger_slices=ok, champion_slices=champion
    )
    assert result.blessed, result.reasons
    assert any("all 2 slices" in r for r in result.reasons)  # the 10-row slice is not gated
    assert result.slices["region"]["south"]["gain"] == pytest.approx(-0.01)

    worse = _slices(north=(0.85, 100), south=(0.70, 100))
    refused = bless(
        {"roc_auc": 0.8},
        {"roc_auc": 0.79},
        gates,
        challenger_slices=worse,
        champion_slices=champion,
    )
    assert not refused.blessed
    assert len(refused.reasons) == 1
    assert "slice region=south (100 rows)" in refused.reasons[0]
    assert "gain -0.0500" in refused.reasons[0] and "short by 0.0300" in refused.reasons[0]


def test_slices_are_not_compared_for_a_first_model():
    gates = GateConfig(slice_columns=["region"])
    result = bless({"roc_auc": 0.8}, None, gates, challenger_slices=_slices(a=(0.1, 500)))
    assert result.blessed
    assert any("no champion yet, nothing to compare per slice" in r for r in result.reasons)


def test_a_gated_slice_column_missing_from_the_holdout_refuses():
    gates = GateConfig(slice_columns=["segment"])
    result = bless({"roc_auc": 0.8}, {"roc_auc": 0.7}, gates, challenger_slices={})
    assert (
        not result.blessed and "slices of segment: column not in the holdout" in result.reasons[0]
    )


def test_fairness_gap_over_the_maximum_refuses_with_the_excess():
    from ctloop.model.analyse import SliceGap

    gates = GateConfig(max_slice_gap=0.1)
    gap = SliceGap("region", "roc_auc", "north", 0.85, "east", 0.70)
    refused = bless({"roc_auc": 0.8}, None, gates, gaps=[gap])
    assert not refused.blessed
    assert refused.reasons == (
        "fairness: roc_auc gap 0.1500 between region=north and region=east > max 0.1 "
        "(over by 0.0500)",
    )
    small = SliceGap("region", "roc_auc", "north", 0.80, "east", 0.75)
    assert bless({"roc_auc": 0.8}, None, gates, gaps=[small]).blessed
    # without a configured maximum, a gap is reported elsewhere but never gates
    assert bless({"roc_auc": 0.8}, None, GateConfig(), gaps=[gap]).blessed


REGRESSION_GATES = GateConfig(primary_metric="rmse", min_metrics={"r2": 0.0})


def test_a_floor_does_not_keep_a_worse_champion_in():
    """river's airline passengers: a trend puts the newest holdout out of every tree model's
    reach, so both models miss r2 >= 0; the challenger is far better than the stale champion
    and serves, with a warning."""
    challenger = {"rmse": 60.0, "r2": -0.4}
    champion = {"rmse": 140.0, "r2": -6.5}
    result = bless(challenger, champion, REGRESSION_GATES)
    assert result.blessed, result.reasons
    assert result.reasons[0].startswith("warning: r2 -0.4000 < floor 0 (short by 0.4000), as")
    assert "champion's -6.5000" in result.reasons[0]
    # strict floors: refused, as before
    strict = REGRESSION_GATES.model_copy(update={"floors_against_champion": False})
    refused = bless(challenger, champion, strict)
    assert not refused.blessed and refused.reasons == ("r2 -0.4000 < floor 0 (short by 0.4000)",)


@pytest.mark.parametrize(
    ("champion", "why"),
    [
        (None, "r2 -0.4000 < floor 0"),  # a first model meets the floors
        ({"rmse": 50.0, "r2": 0.2}, "r2 -0.4000 < floor 0"),  # the champion meets it
        ({"rmse": 55.0, "r2": -0.3}, "r2 -0.4000 < floor 0"),  # it misses by less
    ],
)
def test_a_floor_still_refuses_when_the_champion_is_no_worse(champion, why):
    result = bless({"rmse": 60.0, "r2": -0.4}, champion, REGRESSION_GATES)
    assert not result.blessed
    assert result.reasons[0].startswith(why)


def test_below_the_floor_and_not_better_on_the_primary_metric_is_refused():
    result = bless({"rmse": 150.0, "r2": -0.4}, {"rmse": 140.0, "r2": -6.5}, REGRESSION_GATES)
    assert not result.blessed
    assert any("rmse 150.0000 vs champion 140.0000" in r for r in result.reasons)
