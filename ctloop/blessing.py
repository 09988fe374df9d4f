"""The blessing gate: a challenger must clear every threshold and beat the champion."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ctloop.config import GateConfig
from ctloop.evaluation import higher_is_better


@dataclass(frozen=True)
class Blessing:
    """The decision, always written with its reasons (also for a first model and a refusal)."""

    blessed: bool
    reasons: tuple[str, ...]
    primary_metric: str
    challenger: dict[str, float]
    champion: dict[str, float] | None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        return data


def bless(
    challenger: dict[str, float], champion: dict[str, float] | None, gates: GateConfig
) -> Blessing:
    """Decide whether the challenger may replace the champion, and say why.

    Args:
        challenger: the challenger's metrics on the recent holdout.
        champion: the champion's metrics on the same rows, or None when there is no champion.
        gates: floors (`min_metrics`), ceilings (`max_metrics`) and the margin to beat.
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

    blessed = not failed
    return Blessing(blessed, tuple(failed if failed else passed), metric, challenger, champion)
