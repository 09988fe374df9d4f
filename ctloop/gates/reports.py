"""Readable summaries (markdown) of validation, drift and blessing, for Prefect and MLflow."""

from __future__ import annotations

from ctloop.gates.blessing import Blessing
from ctloop.gates.verdict import Verdict
from ctloop.monitor.drift import DriftSummary


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def issues_markdown(source: str, verdict: str, reasons: list[dict]) -> str:
    lines = [f"## {verdict}: `{source}`", ""]
    if not reasons:
        return "\n".join(lines + ["All checks passed."])
    lines += ["| check | severity | column | message |", "|---|---|---|---|"]
    for r in reasons:
        lines.append(
            f"| {_cell(r['check'])} | {_cell(r['severity'])} | {_cell(r.get('column') or '')} "
            f"| {_cell(r['message'])} |"
        )
    return "\n".join(lines)


def drift_markdown(source: str, summary: DriftSummary, html_path: str | None) -> str:
    verdict = "Drift detected" if summary.drift else "No drift"
    lines = [
        f"## {verdict}: `{source}`",
        "",
        f"{summary.current_rows} rows against {summary.reference_rows} reference rows "
        "(the champion's training window).",
        "",
        *[f"- {r}" for r in summary.reasons],
        "",
        "| column | method | score | threshold | drifted |",
        "|---|---|---|---|---|",
    ]
    for c in summary.columns:
        lines.append(
            f"| {c.column} | {c.method} | {c.score:.4f} | {c.threshold:g} | "
            f"{'**yes**' if c.drifted else 'no'} |"
        )
    if html_path:
        lines += ["", f"Evidently report: `{html_path}`"]
    return "\n".join(lines)


def blessing_markdown(
    blessing: Blessing, version: str | None, decision: Verdict | None = None
) -> str:
    """The decision, its reasons and the metrics; `decision` (all the gates together) replaces
    the blessing's own decision when given."""
    decision = decision or blessing.verdict()
    verdict = "Blessed" if decision.passed else "Not blessed"
    lines = [f"## {verdict}" + (f": version {version}" if version else ""), ""]
    lines += [f"- {r}" for r in decision.reasons]
    names = sorted(set(blessing.challenger) | set(blessing.champion or {}))
    lines += ["", "| metric | challenger | champion |", "|---|---|---|"]
    for name in names:
        mine = blessing.challenger.get(name)
        theirs = (blessing.champion or {}).get(name)
        lines.append(f"| {name} | {_number(mine)} | {_number(theirs)} |")
    return "\n".join(lines)
