"""The blessing gate: a challenger must clear every threshold and beat the champion."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from ctloop.config.settings import TASK_FLOORS, TASK_PRIMARY_METRIC, GateConfig
from ctloop.gates.verdict import BLOCK, Verdict
from ctloop.model import metrics as m


@dataclass(frozen=True)
class Blessing:
    """The decision, always written with its reasons (also for a first model and a refusal)."""

    blessed: bool
    reasons: tuple[str, ...]
    primary_metric: str
    challenger: dict[str, float]
    champion: dict[str, float] | None
    slices: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)

    def as_dict(self, decision: Verdict | None = None) -> dict:
        """The blessing as recorded (`blessing.json`); with `decision`, the decision of all the
        gates together (split parity, blessing, review) replaces this gate's own."""
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        if decision is not None:
            data.update(blessed=decision.passed, reasons=list(decision.reasons))
        return data

    def verdict(self) -> Verdict:
        """This gate's decision as a `Verdict` (a refusal blocks); the metrics go in details."""
        return Verdict(
            gate="blessing",
            passed=self.blessed,
            reasons=self.reasons,
            severity=BLOCK,
            details={
                "primary_metric": self.primary_metric,
                "challenger": self.challenger,
                "champion": self.champion,
                "slices": self.slices,
            },
        )


def _compare_slices(
    challenger_slices: dict[str, dict[str, dict[str, float]]],
    champion_slices: dict[str, dict[str, dict[str, float]]],
    gates: GateConfig,
    failed: list[str],
    passed: list[str],
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per slice of each gated column: the challenger must beat the champion by the slice margin."""
    metric, margin = primary_of(gates), gates.slice_min_improvement
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for column in gates.slice_columns:
        mine_by_value = challenger_slices.get(column)
        if mine_by_value is None:
            failed.append(f"slices of {column}: column not in the holdout, cannot compare")
            continue
        theirs_by_value = champion_slices.get(column, {})
        compared, shortfalls = 0, []
        for value, mine in mine_by_value.items():
            theirs = theirs_by_value.get(value, {})
            rows = mine.get("rows", 0)
            a, b = mine.get(metric), theirs.get(metric)
            gain = None if a is None or b is None else m.relative_improvement(a, b, metric)
            table.setdefault(column, {})[value] = {
                "rows": rows,
                "challenger": a,
                "champion": b,
                "gain": gain,
            }
            if gain is None or rows < gates.min_slice_rows:
                continue
            compared += 1
            if gain < margin - 1e-9:
                shortfalls.append(
                    f"slice {column}={value} ({int(rows)} rows): {metric} {a:.4f} vs champion "
                    f"{b:.4f}, gain {m.describe_gain(a, b, metric)} below the slice margin "
                    f"{m.describe_threshold(margin, b, metric)} (short by "
                    f"{m.describe_amount(margin - gain, metric)})"
                )
        if shortfalls:
            failed.extend(shortfalls)
        elif compared:
            passed.append(
                f"slices of {column}: all {compared} slices of >= {gates.min_slice_rows} rows "
                f"within the slice margin {margin:g} of the champion"
            )
        else:
            passed.append(
                f"slices of {column}: no slice of >= {gates.min_slice_rows} rows to compare"
            )
    return table


def primary_of(gates: GateConfig) -> str:
    """The primary metric; a bare `GateConfig()` (no task known) takes the binary default."""
    return gates.primary_metric or TASK_PRIMARY_METRIC["binary"]


def floors_of(gates: GateConfig) -> dict[str, float]:
    return TASK_FLOORS["binary"] if gates.min_metrics is None else gates.min_metrics


def bless(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    gates: GateConfig,
    *,
    challenger_slices: dict[str, dict[str, dict[str, float]]] | None = None,
    champion_slices: dict[str, dict[str, dict[str, float]]] | None = None,
    gaps: Iterable | None = None,
    warnings: Iterable[str] = (),
) -> Blessing:
    """Decide whether the challenger may replace the champion, and say why.

    Args:
        challenger: the challenger's metrics on the recent holdout.
        champion: the champion's metrics on the same rows, or None when there is no champion.
        gates: floors (`min_metrics`), ceilings (`max_metrics`), the margin to beat, and the
            per-slice margin and fairness gap.
        challenger_slices: column -> value -> metrics of the challenger (`ctloop.model.analyse`).
        champion_slices: the same for the champion, on the same rows.
        gaps: the challenger's largest slice gaps (`SliceGap`) of the sensitive columns, held
            against `max_slice_gap`.
        warnings: findings that do not refuse on their own (e.g. a possible target leak from
            `ctloop.model.analyse.leakage_warnings`); they lead the reasons, blessed or not.
    """
    failed: list[str] = []
    passed: list[str] = []
    below_floor: list[str] = []  # floors missed by both models (`_check_floors`)
    _check_floors(challenger, champion, gates, failed, passed, below_floor)
    _check_ceilings(challenger, gates, failed, passed)
    metric = primary_of(gates)
    _check_champion(challenger, champion, metric, gates, failed, passed)
    _check_fairness(gaps or (), gates, failed, passed)

    table: dict = {}
    if gates.slice_columns:
        if champion is None:
            passed.append("slices: no champion yet, nothing to compare per slice")
        else:
            table = _compare_slices(
                challenger_slices or {}, champion_slices or {}, gates, failed, passed
            )

    warnings = list(warnings)
    if warnings and gates.leakage == "block":
        failed[:0] = [w.replace("warning: ", "refused: ", 1) for w in warnings]
        warnings = []
    warnings += below_floor
    blessed = not failed
    reasons = [*warnings, *(failed if failed else passed)]
    return Blessing(blessed, tuple(reasons), metric, challenger, champion, table)


def _check_floors(
    challenger: dict,
    champion: dict | None,
    gates: GateConfig,
    failed: list,
    passed: list,
    warnings: list,
) -> None:
    """Each floor is the worst acceptable value: a minimum, or a maximum for an error metric.

    A floor keeps a bad model out; it does not keep a bad champion in. With
    `gates.floors_against_champion`, a challenger below a floor that the champion misses too
    on the same rows, and by at least as much, passes that floor with a warning (it must still
    beat the champion on the primary metric)."""
    for name, floor in floors_of(gates).items():
        value, higher = challenger.get(name), m.higher_is_better(name)
        ok, fail, short = (">=", "<", "short") if higher else ("<=", ">", "over")
        if value is None:
            failed.append(f"{name}: not computed, needs {ok} {floor:g}")
            continue
        if m.improvement(value, floor, name) >= 0:
            passed.append(f"{name} {value:.4f} {ok} floor {floor:g}")
            continue
        below = f"{name} {value:.4f} {fail} floor {floor:g} ({short} by {abs(value - floor):.4f})"
        theirs = (champion or {}).get(name)
        if (
            gates.floors_against_champion
            and theirs is not None
            and m.improvement(value, theirs, name) >= 0
        ):
            warnings.append(
                f"warning: {below}, as the champion's {theirs:.4f} on the same holdout: both "
                "miss the floor and this one is no worse (gates.floors_against_champion)"
            )
            passed.append(f"{below}; the champion: {theirs:.4f}")
        else:
            failed.append(below)


def _check_ceilings(challenger: dict, gates: GateConfig, failed: list, passed: list) -> None:
    for name, ceiling in gates.max_metrics.items():
        value = challenger.get(name)
        if value is None:
            failed.append(f"{name}: not computed, needs <= {ceiling:g}")
        elif value > ceiling:
            failed.append(
                f"{name} {value:.4f} > ceiling {ceiling:g} (over by {value - ceiling:.4f})"
            )
        else:
            passed.append(f"{name} {value:.4f} <= ceiling {ceiling:g}")


def _check_champion(
    challenger: dict,
    champion: dict | None,
    metric: str,
    gates: GateConfig,
    failed: list,
    passed: list,
) -> None:
    """The challenger against the champion on the same rows, by `gates.min_improvement`."""
    mine = challenger.get(metric)
    if champion is None:
        passed.append("no champion yet: first model")
        return
    if mine is None or champion.get(metric) is None:
        failed.append(f"{metric}: missing for challenger or champion, cannot compare")
        return
    theirs = champion[metric]
    wins = m.better(mine, theirs, metric, gates.min_improvement)
    direction = "higher" if m.higher_is_better(metric) else "lower"
    gain = m.describe_gain(mine, theirs, metric)
    if gates.min_improvement == 0:  # a tie is enough: "beats it by the margin 0" misleads
        outcome = f"{'matches or beats' if wins else 'does not match'} it (gain {gain})"
    else:
        margin = m.describe_threshold(gates.min_improvement, theirs, metric)
        outcome = f"{'beats' if wins else 'does not beat'} it by the margin {margin} (gain {gain})"
    text = (
        f"{metric} {mine:.4f} vs champion {theirs:.4f} on the same holdout ({direction} is "
        f"better): {outcome}"
    )
    (passed if wins else failed).append(text)


def _check_fairness(gaps: Iterable, gates: GateConfig, failed: list, passed: list) -> None:
    """The sensitive columns' largest slice gaps against `gates.max_slice_gap` (when set)."""
    if gates.max_slice_gap is None:
        return
    for gap in gaps:
        where = f"between {gap.column}={gap.best} and {gap.column}={gap.worst}"
        if gap.gap > gates.max_slice_gap + 1e-9:
            failed.append(
                f"fairness: {gap.metric} gap {gap.gap:.4f} {where} > max "
                f"{gates.max_slice_gap:g} (over by {gap.gap - gates.max_slice_gap:.4f})"
            )
        else:
            passed.append(
                f"fairness: {gap.metric} gap {gap.gap:.4f} {where} <= max {gates.max_slice_gap:g}"
            )
