"""The blessing gate: a challenger must clear every threshold and beat the champion."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from ctloop.config.settings import GateConfig
from ctloop.gates.verdict import BLOCK, Verdict
from ctloop.model.evaluate import higher_is_better


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
    metric, margin = gates.primary_metric, gates.slice_min_improvement
    sign = 1 if higher_is_better(metric) else -1
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
            gain = None if a is None or b is None else sign * (a - b)
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
                    f"{b:.4f}, gain {gain:+.4f} below the slice margin {margin:g} "
                    f"(short by {margin - gain:.4f})"
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


def bless(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    gates: GateConfig,
    *,
    challenger_slices: dict[str, dict[str, dict[str, float]]] | None = None,
    champion_slices: dict[str, dict[str, dict[str, float]]] | None = None,
    gaps: Iterable | None = None,
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
    """
    failed: list[str] = []
    passed: list[str] = []
    for name, floor in gates.min_metrics.items():
        value = challenger.get(name)
        if value is None:
            failed.append(f"{name}: not computed, needs >= {floor:g}")
        elif value < floor:
            failed.append(f"{name} {value:.4f} < floor {floor:g} (short by {floor - value:.4f})")
        else:
            passed.append(f"{name} {value:.4f} >= floor {floor:g}")
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

    metric = gates.primary_metric
    mine = challenger.get(metric)
    if champion is None:
        passed.append("no champion yet: first model")
    elif mine is None or champion.get(metric) is None:
        failed.append(f"{metric}: missing for challenger or champion, cannot compare")
    else:
        theirs = champion[metric]
        sign = 1 if higher_is_better(metric) else -1
        gain = sign * (mine - theirs)
        # a tolerance, so that 0.3 - 0.1 >= 0.2 holds despite binary floats
        wins = gain >= gates.min_improvement - 1e-9
        verb = "beats" if wins else "does not beat"
        text = (
            f"{metric} {mine:.4f} vs champion {theirs:.4f} on the same holdout: "
            f"{verb} it by the margin {gates.min_improvement:g} (gain {gain:+.4f})"
        )
        (passed if wins else failed).append(text)

    if gates.max_slice_gap is not None:
        for gap in gaps or ():
            where = f"between {gap.column}={gap.best} and {gap.column}={gap.worst}"
            if gap.gap > gates.max_slice_gap + 1e-9:
                failed.append(
                    f"fairness: {gap.metric} gap {gap.gap:.4f} {where} > max "
                    f"{gates.max_slice_gap:g} (over by {gap.gap - gates.max_slice_gap:.4f})"
                )
            else:
                passed.append(
                    f"fairness: {gap.metric} gap {gap.gap:.4f} {where} <= max "
                    f"{gates.max_slice_gap:g}"
                )

    table: dict = {}
    if gates.slice_columns:
        if champion is None:
            passed.append("slices: no champion yet, nothing to compare per slice")
        else:
            table = _compare_slices(
                challenger_slices or {}, champion_slices or {}, gates, failed, passed
            )

    blessed = not failed
    return Blessing(
        blessed, tuple(failed if failed else passed), metric, challenger, champion, table
    )
