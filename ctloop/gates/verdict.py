"""One shape for every gate's answer (`Verdict`), and one way to combine several (`combine`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

BLOCK = "block"
WARN = "warn"
INFO = "info"

SeverityName = Literal["block", "warn", "info"]


@dataclass(frozen=True)
class Verdict:
    """What one gate decided, with the reasons (and their numbers) written out.

    Attributes:
        gate: the gate's name (`blessing`, `split_parity`, `review`, ...).
        passed: whether the gate let the candidate through.
        reasons: why, one sentence each, with the measured values and the thresholds.
        severity: what a failure does: `block` stops the candidate, `warn` is recorded and
            lets it through, `info` is for the record only.
        details: the gate's own numbers, for reports (never needed to read the decision).
        parts: the verdicts a combined verdict was made of, in order (empty for one gate).
    """

    gate: str
    passed: bool
    reasons: tuple[str, ...] = ()
    severity: SeverityName = BLOCK
    details: dict[str, Any] = field(default_factory=dict, compare=False)
    parts: tuple[Verdict, ...] = ()

    @property
    def blocks(self) -> bool:
        """A failed blocking verdict: the candidate stops here."""
        return not self.passed and self.severity == BLOCK

    @property
    def warnings(self) -> tuple[str, ...]:
        """The reasons of every failed `warn` verdict in this one (or this one's own)."""
        return tuple(
            r for v in self.leaves() if not v.passed and v.severity == WARN for r in v.reasons
        )

    def leaves(self) -> Iterator[Verdict]:
        """The single-gate verdicts this one is made of (itself for a single gate)."""
        if not self.parts:
            yield self
        for part in self.parts:
            yield from part.leaves()

    def part(self, gate: str) -> Verdict | None:
        """The verdict of one gate inside this one, or None when that gate did not run."""
        return next((v for v in self.leaves() if v.gate == gate), None)


def combine(*verdicts: Verdict | None, gate: str = "gates") -> Verdict:
    """The verdict of several gates together: it fails when any blocking verdict fails.

    The reasons are those of the failed blocking verdicts, in the order given, when any failed;
    otherwise those of every blocking verdict (the checks that passed). Warnings and info stay
    in `parts` (see `Verdict.warnings`) and never change the decision or its reasons. A combined
    verdict given again is flattened into its parts; None (a gate that did not run) is skipped.
    """
    parts = tuple(leaf for v in verdicts if v is not None for leaf in v.leaves())
    blocking = [v for v in parts if v.severity == BLOCK]
    failed = [v for v in blocking if not v.passed]
    chosen = failed or blocking
    return Verdict(
        gate=gate,
        passed=not failed,
        reasons=tuple(r for v in chosen for r in v.reasons),
        severity=BLOCK,
        parts=parts,
    )
