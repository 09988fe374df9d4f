"""A staged batch against the reference window: drift of every column, and Evidently's report.

The reference is the newest accepted data (up to `validation.reference_rows` rows); the batch is
read back from its staged file, sampled to the same bound, so the check costs the same for a
batch of any size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ctloop.config.settings import Config
from ctloop.lake import snapshots as lake
from ctloop.monitor.drift import DriftSummary, fast_drift, measurable_columns, profile_reference
from ctloop.stores.home import Home
from ctloop.validate.checks import Issue, StagedBatch, make_issue


@dataclass(frozen=True)
class ReferenceCheck:
    """What the comparison found: issues to add to the report, the drift, Evidently's HTML."""

    issues: list[Issue]
    drift: DriftSummary | None
    html: str | None


def reference_sample(home: Home, rows: int, seed: int = 0) -> pd.DataFrame | None:
    """The newest accepted snapshots, at most `rows` rows (sampled), or None for an empty lake."""
    manifests = lake.list_snapshots(home)
    chosen, total = [], 0
    for m in reversed(manifests):
        chosen.append(m.snapshot)
        total += m.rows
        if total >= rows:
            break
    if not chosen:
        return None
    frame = lake.load_snapshots(home, list(reversed(chosen)))
    return frame.sample(rows, random_state=seed) if len(frame) > rows else frame


def staged_sample(staged: StagedBatch, rows: int, seed: int = 0) -> pd.DataFrame:
    """Up to `rows` rows of the staged file, read row group by row group (bounded memory)."""
    parts, total = [], 0
    with staged.writer.read_staged() as parquet:
        for i in range(parquet.num_row_groups):
            parts.append(parquet.read_row_group(i).to_pandas())
            total += len(parts[-1])
            if total >= rows * 4:
                break
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return frame.sample(rows, random_state=seed) if len(frame) > rows else frame


def compare_to_reference(staged: StagedBatch, config: Config, home: Home) -> ReferenceCheck:
    """Drift against the newest accepted data (a `data_drift` issue) and Evidently's HTML."""
    if staged.writer is None or staged.new_schema or not staged.writer.staged_exists():
        return ReferenceCheck([], None, None)
    rows = config.validation.reference_rows
    reference = reference_sample(home, rows)
    if reference is None:
        return ReferenceCheck([], None, None)
    current = staged_sample(staged, rows)
    columns = [
        c
        for c in staged.schema.feature_columns
        if c in current.columns
        and c in reference.columns
        and c not in config.dataset.non_features()
        and not staged.schema.columns[c].personal
    ]
    issues: list[Issue] = []
    columns, empty = measurable_columns(reference, current, columns)
    if empty and config.validation.severity_of("data_drift") != "off":
        issues += [
            Issue("data_drift", "warn", f"column '{c}': no valid value, drift not measured", c)
            for c in empty
        ]
    summary = None
    if columns and len(current):
        profile = profile_reference(reference, columns, config.drift.workers)
        summary = fast_drift(profile, current, config.drift)
        if summary.drift:
            issue = make_issue(
                config,
                "data_drift",
                f"drift against the newest {len(reference)} accepted rows: {summary.reasons[0]}",
                ",".join(summary.drifted_columns) or None,
                summary.share,
            )
            issues += [issue] if issue else []
    html = None
    when = config.validation.evidently_report
    blocked = not staged.report.passed or any(i.severity == "block" for i in issues)
    if columns and len(current) and (when == "always" or when == "on_block" and blocked):
        try:
            html = str(
                write_evidently_html(reference, current, columns, config, home, staged.source)
            )
        except ValueError as exc:  # Evidently refusing data it cannot describe: no report
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "ValueError"
            issues.append(Issue("data_drift", "warn", f"no Evidently report: {first}"))
    return ReferenceCheck(issues, summary, html)


def write_evidently_html(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    config: Config,
    home: Home,
    source: str,
) -> Path:
    """Evidently's data summary and drift presets on the two samples, as one HTML file."""
    from evidently import Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    cfg = config.drift
    report = Report(
        [
            DataSummaryPreset(columns=columns),
            DataDriftPreset(
                columns=columns,
                num_method=cfg.num_method,
                cat_method=cfg.cat_method,
                threshold=cfg.threshold,
                drift_share=cfg.share,
            ),
        ]
    )
    snapshot = report.run(
        current_data=current[columns].reset_index(drop=True),
        reference_data=reference[columns].reset_index(drop=True),
    )
    home.reports.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    path = home.reports / f"validation-{Path(source).stem}-{stamp}.html"
    snapshot.save_html(str(path))
    return path
