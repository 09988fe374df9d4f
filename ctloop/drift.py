"""Data drift with Evidently, parsed once into a `DriftSummary`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from ctloop.config import DriftConfig

# Evidently's stat tests by how their score reads: a distance drifts at or above the threshold,
# a p-value below it. `DriftConfig` only accepts names from these two sets.
DISTANCE_METHODS = frozenset({"wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "ed"})
P_VALUE_METHODS = frozenset(
    {
        "ks",
        "chisquare",
        "z",
        "t_test",
        "mannw",
        "anderson",
        "cramer_von_mises",
        "es",
        "fisher_exact",
        "g_test",
        "TVD",
        "empirical_mmd",
    }
)


def is_p_value(method: str) -> bool:
    """Whether Evidently's score for this method is a p-value (drift when below threshold)."""
    if method in P_VALUE_METHODS:
        return True
    if method in DISTANCE_METHODS:
        return False
    return "p_value" in method  # display names of older Evidently versions


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftSummary:
    """The monitor's verdict on one batch against the reference window."""

    drift: bool
    drifted_columns: list[str]
    share: float
    reasons: list[str]
    columns: list[ColumnDrift] = field(default_factory=list)
    reference_rows: int = 0
    current_rows: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _parse_metric_name(name: str) -> dict[str, str]:
    """`ValueDrift(column=a,method=K-S p_value,threshold=0.05)` -> its fields."""
    inner = name[name.index("(") + 1 : name.rindex(")")]
    out = {}
    for part in inner.split(","):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip()
    return out


def run_drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], cfg: DriftConfig
):
    """Run Evidently's DataDriftPreset on the given columns; returns the Evidently snapshot."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    preset = DataDriftPreset(
        columns=columns,
        num_method=cfg.num_method,
        cat_method=cfg.cat_method,
        threshold=cfg.threshold,
        drift_share=cfg.share,
    )
    return Report([preset]).run(
        current_data=current[columns].reset_index(drop=True),
        reference_data=reference[columns].reset_index(drop=True),
    )


def summarize_drift(snapshot, cfg: DriftConfig, reference_rows: int, current_rows: int):
    """Turn Evidently's result into a `DriftSummary` with the configured rule applied."""
    per_column: list[ColumnDrift] = []
    for metric in snapshot.dict()["metrics"]:
        if not metric["metric_name"].startswith("ValueDrift("):
            continue
        fields = _parse_metric_name(metric["metric_name"])
        method, threshold = fields["method"], float(fields["threshold"])
        score = float(metric["value"])
        drifted = score < threshold if is_p_value(method) else score >= threshold
        per_column.append(ColumnDrift(fields["column"], method, score, threshold, drifted))
    per_column.sort(key=lambda c: c.column)
    drifted = [c.column for c in per_column if c.drifted]
    share = len(drifted) / len(per_column) if per_column else 0.0
    reasons = []
    if per_column and share >= cfg.share:
        reasons.append(
            f"{len(drifted)} of {len(per_column)} columns drifted ({share:.0%} >= {cfg.share:.0%}):"
            f" {', '.join(drifted)}"
        )
    named = [c for c in cfg.columns if c in drifted]
    if named:
        reasons.append(f"watched columns drifted: {', '.join(named)}")
    if not reasons:
        reasons.append(
            f"{len(drifted)} of {len(per_column)} columns drifted ({share:.0%} < {cfg.share:.0%})"
            + (f": {', '.join(drifted)}" if drifted else "")
        )
        return DriftSummary(
            False, drifted, share, reasons, per_column, reference_rows, current_rows
        )
    return DriftSummary(True, drifted, share, reasons, per_column, reference_rows, current_rows)


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    cfg: DriftConfig,
    html_path: Path | None = None,
    html_when: str = "always",
) -> DriftSummary:
    """Compare the current batch with the reference on the model's input columns.

    Args:
        html_path: where to write Evidently's HTML report.
        html_when: "always", "on_drift" or "never".
    """
    columns = [c for c in columns if c in reference.columns and c in current.columns]
    snapshot = run_drift_report(reference, current, columns, cfg)
    summary = summarize_drift(snapshot, cfg, len(reference), len(current))
    if html_path is not None and (
        html_when == "always" or html_when == "on_drift" and summary.drift
    ):
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    return summary
