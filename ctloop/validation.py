"""Batch validation against the schema: each check has a severity (block, warn, off)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ctloop.config import Config, Severity, Task
from ctloop.schema import CATEGORICAL, DATETIME, NUMERIC, Schema, _label_key, class_shares


@dataclass(frozen=True)
class Issue:
    """One finding of a check: which check, how severe, which column, what and how much."""

    check: str
    severity: str
    message: str
    column: str | None = None
    value: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ValidationReport:
    source: str
    rows: int
    issues: tuple[Issue, ...]

    @property
    def blocking(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == Severity.BLOCK]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == Severity.WARN]

    @property
    def passed(self) -> bool:
        return not self.blocking

    def reasons(self) -> list[dict]:
        return [i.as_dict() for i in self.issues]


def _example(raw: pd.Series, mask: pd.Series) -> str:
    idx = mask[mask].index[0]
    pos = raw.index.get_loc(idx)
    return f"first at row {pos + 1}: {raw.loc[idx]!r}"


class _Checker:
    def __init__(self, config: Config):
        self.config = config
        self.issues: list[Issue] = []

    def add(self, check: str, message: str, column: str | None = None, value=None) -> None:
        severity = self.config.validation.severity_of(check)
        if severity == Severity.OFF:
            return
        value = None if value is None else round(float(value), 6)
        self.issues.append(Issue(check, str(severity), message, column, value))


def _numeric_view(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Values as numbers, and a mask of present values that are not numbers."""
    numbers = pd.to_numeric(raw, errors="coerce")
    bad = raw.notna() & numbers.isna()
    return numbers, bad


def validate_batch(
    frame: pd.DataFrame, schema: Schema | None, config: Config, source: str = "batch"
) -> ValidationReport:
    """Check a raw batch (as read from its file) against the schema and the config.

    With no schema yet (the first batch), only the checks that need none run.
    """
    v = config.validation
    check = _Checker(config)
    target = config.require_target()
    rows = len(frame)

    if rows < v.min_rows:
        check.add("empty", f"batch has {rows} rows, at least {v.min_rows} needed", value=rows)
        return ValidationReport(source, rows, tuple(check.issues))
    if target not in frame.columns:
        shown = ", ".join(map(str, frame.columns[:8]))
        check.add(
            "missing_target",
            f"target column '{target}' is missing (columns: {shown})",
            column=target,
        )

    for column in frame.columns:
        share = float(frame[column].isna().mean())
        if share > v.max_missing_share:
            check.add(
                "missing_values",
                f"column '{column}': {share:.0%} missing, "
                f"at most {v.max_missing_share:.0%} allowed",
                column,
                share,
            )

    if target in frame.columns and config.dataset.task != Task.REGRESSION:
        if schema is not None and schema.class_shares:
            labels = frame[target].dropna().map(_label_key)
            unknown = sorted(set(labels) - set(schema.class_shares))
            if unknown:
                check.add(
                    "unknown_label",
                    f"target '{target}': unknown classes {unknown[:5]}, "
                    f"expected {sorted(schema.class_shares)}",
                    target,
                    len(unknown),
                )
            else:
                shares = class_shares(frame[target])
                gaps = {
                    k: abs(shares.get(k, 0.0) - schema.class_shares.get(k, 0.0))
                    for k in set(shares) | set(schema.class_shares)
                }
                worst = max(gaps, key=gaps.get)
                if gaps[worst] > v.max_label_shift:
                    check.add(
                        "label_shift",
                        f"target '{target}': class {worst} is {shares.get(worst, 0):.0%} of rows, "
                        f"{schema.class_shares.get(worst, 0):.0%} in the reference "
                        f"(shift {gaps[worst]:.0%} > {v.max_label_shift:.0%})",
                        target,
                        gaps[worst],
                    )

    duplicate_share = float(frame.duplicated().mean())
    if duplicate_share > v.max_duplicate_share:
        check.add(
            "duplicates",
            f"{duplicate_share:.0%} of rows are duplicates (at most {v.max_duplicate_share:.0%})",
            value=duplicate_share,
        )

    if schema is None:
        for column in frame.columns:
            if frame[column].dtype == object:
                numbers, bad = _numeric_view(frame[column])
                if numbers.notna().mean() > 0.5 and bad.any():
                    check.add(
                        "type_error",
                        f"column '{column}': {int(bad.sum())} of {rows} values are not numbers "
                        f"({_example(frame[column], bad)})",
                        column,
                        bad.sum(),
                    )
        return ValidationReport(source, rows, tuple(check.issues))

    expected = [c for c in schema.columns if c != target]
    missing = [c for c in expected if c not in frame.columns]
    for column in missing:
        check.add("missing_column", f"column '{column}' is missing", column)
    extra = [c for c in frame.columns if c not in schema.columns]
    for column in extra:
        check.add("extra_column", f"column '{column}' is not in schema v{schema.version}", column)

    for name, col in schema.columns.items():
        if name not in frame.columns or name == target and config.dataset.task != Task.REGRESSION:
            continue
        raw = frame[name]
        if col.kind == NUMERIC:
            numbers, bad = _numeric_view(raw)
            if bad.any():
                check.add(
                    "type_error",
                    f"column '{name}': {int(bad.sum())} of {rows} values are not numbers "
                    f"({_example(raw, bad)})",
                    name,
                    bad.sum(),
                )
            if col.min is not None and col.max is not None and numbers.notna().any():
                margin = v.range_margin * max(col.max - col.min, abs(col.max) * 1e-9, 1e-9)
                outside = (numbers < col.min - margin) | (numbers > col.max + margin)
                share = float(outside.mean())
                if share > v.max_out_of_range_share:
                    check.add(
                        "out_of_range",
                        f"column '{name}': {share:.0%} of values outside "
                        f"[{col.min:g}, {col.max:g}] (observed {np.nanmin(numbers):g}.."
                        f"{np.nanmax(numbers):g})",
                        name,
                        share,
                    )
        elif col.kind == DATETIME:
            parsed = pd.to_datetime(raw, errors="coerce", format="mixed")
            bad = raw.notna() & parsed.isna()
            if bad.any():
                check.add(
                    "type_error",
                    f"column '{name}': {int(bad.sum())} of {rows} values are not dates "
                    f"({_example(raw, bad)})",
                    name,
                    bad.sum(),
                )
        elif col.kind == CATEGORICAL and col.categories:
            present = raw.dropna().map(_label_key)
            unseen = ~present.isin(set(col.categories))
            share = float(unseen.mean()) if len(present) else 0.0
            if share > v.max_unseen_category_share:
                examples = sorted(present[unseen].unique())[:5]
                check.add(
                    "unseen_categories",
                    f"column '{name}': {share:.0%} of values are unseen categories "
                    f"(e.g. {examples}; at most {v.max_unseen_category_share:.0%} allowed)",
                    name,
                    share,
                )
    return ValidationReport(source, rows, tuple(check.issues))


def coerce_to_schema(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Cast an accepted batch to the schema's types (no feature engineering here)."""
    out = frame.copy()
    for name, col in schema.columns.items():
        if name not in out.columns:
            continue
        if col.kind == NUMERIC:
            out[name] = pd.to_numeric(out[name], errors="coerce")
        elif col.kind == DATETIME:
            out[name] = pd.to_datetime(out[name], errors="coerce", format="mixed")
        else:
            out[name] = out[name].map(lambda x: x if pd.isna(x) else _label_key(x)).astype(object)
    return out
