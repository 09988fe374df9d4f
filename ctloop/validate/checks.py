"""Batch validation against the schema: each check has a severity (block, warn, off).

Checks run on statistics gathered chunk by chunk (`BatchProfile`), so a file of any size is
validated in bounded memory, and a DataFrame is just a batch of one chunk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ctloop.config.settings import Config, DatasetConfig, PersonalDataConfig, Severity, Task
from ctloop.data import privacy
from ctloop.data.batches import TYPED, Conversion, frame_to_raw, row_hashes, to_numbers, to_type
from ctloop.data.batches import _text as as_text
from ctloop.data.schema import (
    BOOLEAN_KIND,
    CATEGORICAL,
    DATETIME,
    FALSE_WORDS,
    IDENTIFIER,
    NUMERIC,
    TRUE_WORDS,
    ColumnSchema,
    Schema,
    _label_key,
    class_shares,
    parse_boolean,
)
from ctloop.gates.verdict import BLOCK, INFO, WARN, Verdict, combine

if TYPE_CHECKING:
    from ctloop.lake.snapshots import SnapshotWriter


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

    def verdict(self) -> Verdict:
        """The batch gate as a verdict: one part per finding, with its check's severity.

        It fails when any finding blocks; its reasons are the blocking findings' messages, and
        the warnings stay in `Verdict.warnings`.
        """
        severity = {Severity.BLOCK: BLOCK, Severity.WARN: WARN}
        parts = [
            Verdict(i.check, False, (i.message,), severity.get(i.severity, INFO), i.as_dict())
            for i in self.issues
        ]
        return combine(*parts, gate="batch")

    def with_issues(self, more: list[Issue]) -> ValidationReport:
        return ValidationReport(self.source, self.rows, self.issues + tuple(more))


class _Checker:
    def __init__(self, config: Config):
        self.config = config
        self.issues: list[Issue] = []

    def add(
        self,
        check: str,
        message: str,
        column: str | None = None,
        value=None,
        at_most: Severity | None = None,
    ) -> None:
        severity = self.config.validation.severity_of(check)
        if severity == Severity.OFF:
            return
        if at_most == Severity.WARN and severity == Severity.BLOCK:
            severity = Severity.WARN
        value = None if value is None else round(float(value), 6)
        self.issues.append(Issue(check, str(severity), message, column, value))


def make_issue(config: Config, check: str, message: str, column=None, value=None) -> Issue | None:
    """One issue with the configured severity, or None when the check is off."""
    checker = _Checker(config)
    checker.add(check, message, column, value)
    return checker.issues[0] if checker.issues else None


# --- the provisional schema of a first batch ----------------------------------------------


NUMBER_LIKE = r"^\s*[-+]?((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|inf|infinity|nan)\s*$"
NUMERIC_SHARE = 0.95  # of present values that are numbers, for a text column to be numeric


@dataclass
class KindEvidence:
    """What a first batch's values say about a column's kind, summed over every chunk."""

    arrow: str  # "timestamp", "boolean", "number", "typed_text" (categories) or "text"
    present: int = 0
    numbers: int = 0
    booleans: int = 0

    def add(self, arr: pa.Array) -> None:
        present = len(arr) - arr.null_count
        self.present += present
        if self.arrow not in ("text", "typed_text") or not present:
            return
        text = as_text(arr)
        if self.booleans == self.present - present:  # all boolean words so far
            words = pc.utf8_lower(pc.utf8_trim_whitespace(text))
            found = pc.is_in(words, value_set=pa.array(sorted(TRUE_WORDS | FALSE_WORDS)))
            self.booleans += int(pc.sum(found).as_py() or 0)
        if self.arrow == "text":
            numbers = pc.match_substring_regex(text, NUMBER_LIKE, ignore_case=True)
            self.numbers += int(pc.sum(numbers).as_py() or 0)

    def kind(self) -> str:
        if self.arrow == "timestamp":
            return DATETIME
        if self.arrow == "boolean":
            return BOOLEAN_KIND
        if self.arrow == "number":
            return NUMERIC
        if self.present and self.booleans == self.present:
            return BOOLEAN_KIND
        if self.arrow == "typed_text":
            return CATEGORICAL
        # an all-missing column is numeric (and fails the missing-values check)
        if not self.present or self.numbers >= NUMERIC_SHARE * self.present:
            return NUMERIC
        return CATEGORICAL


def kind_evidence(raw: pa.Table) -> dict[str, KindEvidence]:
    """Empty evidence for each column of a raw chunk, by its Arrow type."""
    evidence = {}
    for fld in raw.schema:
        t = fld.type
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            arrow = "timestamp"
        elif pa.types.is_boolean(t):
            arrow = "boolean"
        elif pa.types.is_integer(t) or pa.types.is_floating(t):
            arrow = "number"
        elif fld.metadata and fld.metadata.get(TYPED):
            arrow = "typed_text"
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
            arrow = "text"
        else:
            arrow = "typed_text"
        evidence[fld.name] = KindEvidence(arrow)
    return evidence


def add_evidence(evidence: dict[str, KindEvidence], raw: pa.Table) -> None:
    for name, arr in zip(raw.column_names, raw.columns, strict=True):
        if name in evidence:
            evidence[name].add(arr)


def provisional_schema(
    raw: pa.Table,
    dataset: DatasetConfig,
    personal: PersonalDataConfig | None = None,
    kinds: dict[str, str] | None = None,
) -> Schema:
    """Kinds (and personal data) of a first batch; no ranges yet.

    `kinds` are the kinds the whole batch's `KindEvidence` gives (the stager passes them after
    its first pass over a file whose first chunk misled); without them, the kinds come from
    `raw` alone. Text that is (almost) all numbers is numeric, text that is all true/false or
    yes/no is boolean; text that stands for categories (a DataFrame's object column of non-text
    values) stays categorical.
    """
    personal = personal or PersonalDataConfig(detect=False)
    if kinds is None:
        evidence = kind_evidence(raw)
        add_evidence(evidence, raw)
        kinds = {name: e.kind() for name, e in evidence.items()}
    columns: dict[str, ColumnSchema] = {}
    for name, arr in zip(raw.column_names, raw.columns, strict=True):
        lo = hi = None
        if name == dataset.id:
            kind = IDENTIFIER
        elif name == dataset.timestamp:
            kind = DATETIME
        else:
            kind = kinds.get(name, CATEGORICAL)
        found = None
        if personal.detect and kind not in (DATETIME, BOOLEAN_KIND) and name != dataset.target:
            sample = as_text(arr.slice(0, 2000)).drop_null().to_pylist()
            found = privacy.detect_personal(name, [str(v) for v in sample])
        handling = privacy.decide(name, found, personal) if name != dataset.target else None
        if found and kind == NUMERIC:
            kind = CATEGORICAL  # card numbers and phones are identifiers, never quantities
        if name == dataset.target and kind == BOOLEAN_KIND:
            kind = CATEGORICAL  # labels keep their spelling: the model predicts what it saw
        if name == dataset.target and kind == NUMERIC:
            numbers = to_numbers(arr).values
            lo, hi = pc.min_max(numbers).values()
            lo, hi = lo.as_py(), hi.as_py()
        columns[name] = ColumnSchema(
            name, kind, True, lo, hi, personal=found, handling=handling or None
        )
    target = dataset.target or ""
    return Schema(0, target, str(dataset.task), columns, {})


# --- typing a chunk -----------------------------------------------------------------------


def type_chunk(
    raw: pa.Table, schema: Schema, salt: bytes | None = None
) -> tuple[pa.Table, dict[str, Conversion]]:
    """A raw chunk typed to the schema, with personal data dropped or hashed.

    Columns the schema does not know are kept as text. Returns the table a snapshot stores and
    the conversion record of every column (for the type checks).
    """
    arrays, names, conversions = [], [], {}
    for name, arr in zip(raw.column_names, raw.columns, strict=True):
        col = schema.columns.get(name)
        conv = to_type(arr, col, schema) if col is not None else Conversion(as_text(arr))
        conversions[name] = conv
        if col is not None and col.handling == "drop":
            continue
        values = conv.values
        if col is not None and col.handling == "hash":
            values = privacy.hash_values(as_text(arr), salt or b"")
        arrays.append(values)
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names), conversions


# --- statistics gathered chunk by chunk ---------------------------------------------------


@dataclass
class ColumnStats:
    rows: int = 0
    nulls: int = 0
    bad: int = 0
    first_bad: str | None = None
    lo: float | None = None
    hi: float | None = None
    outside: int = 0
    counts: dict[str, int] | None = field(default_factory=dict)
    unseen: int = 0
    present: int = 0
    unseen_examples: set[str] = field(default_factory=set)
    t_lo: object = None
    t_hi: object = None
    non_finite: int = 0
    first_non_finite: int | None = None  # row in the batch (1-based)


def _minmax(values) -> tuple[object, object]:
    result = pc.min_max(values)
    return result["min"].as_py(), result["max"].as_py()


class BatchProfile:
    """Statistics of one batch, gathered chunk by chunk, then checked all at once."""

    def __init__(self, schema: Schema, config: Config, provisional: bool = False):
        self.schema = schema
        self.config = config
        self.provisional = provisional
        self.rows = 0
        self.columns: list[str] | None = None
        self.stats: dict[str, ColumnStats] = {}
        self.labels: dict[str, int] = {}
        self._hashes: list[np.ndarray] = []

    def add(self, raw: pa.Table, conversions: dict[str, Conversion], hashes: np.ndarray) -> None:
        """Add one chunk: its raw columns, how they converted, and its row hashes."""
        if self.columns is None:
            self.columns = list(raw.column_names)
        offset = self.rows
        self.rows += raw.num_rows
        self._hashes.append(hashes)
        v = self.config.validation
        target = self.config.dataset.target
        for name, arr in zip(raw.column_names, raw.columns, strict=True):
            s = self.stats.setdefault(name, ColumnStats())
            s.rows += len(arr)
            s.nulls += arr.null_count
            conv = conversions[name]
            col = self.schema.columns.get(name)
            if conv.bad:
                if s.bad == 0:
                    s.first_bad = (
                        f"first at row {offset + conv.first_bad + 1}: {conv.first_bad_value!r}"
                    )
                s.bad += conv.bad
            if conv.non_finite:
                if s.non_finite == 0:
                    s.first_non_finite = offset + conv.first_non_finite + 1
                s.non_finite += conv.non_finite
            if col is None or len(arr) == 0:
                continue
            values = conv.values
            if col.kind == NUMERIC:
                lo, hi = _minmax(values)
                if lo is not None:
                    s.lo = lo if s.lo is None else min(s.lo, lo)
                    s.hi = hi if s.hi is None else max(s.hi, hi)
                if col.min is not None and col.max is not None and not self.provisional:
                    margin = v.range_margin * max(col.max - col.min, abs(col.max) * 1e-9, 1e-9)
                    out = pc.or_(
                        pc.less(values, col.min - margin), pc.greater(values, col.max + margin)
                    )
                    s.outside += int(pc.sum(out).as_py() or 0)
            elif col.kind == DATETIME:
                lo, hi = _minmax(values)
                if lo is not None:
                    s.t_lo = lo if s.t_lo is None else min(s.t_lo, lo)
                    s.t_hi = hi if s.t_hi is None else max(s.t_hi, hi)
            elif col.kind == CATEGORICAL and not col.personal:
                counted = pc.value_counts(values.drop_null())
                pairs = zip(
                    counted.field("values").to_pylist(),
                    counted.field("counts").to_pylist(),
                    strict=True,
                )
                present = 0
                for key, count in pairs:
                    present += count
                    if s.counts is not None:
                        s.counts[key] = s.counts.get(key, 0) + count
                    if col.categories and key not in self._category_set(name):
                        s.unseen += count
                        if len(s.unseen_examples) < 50:
                            s.unseen_examples.add(key)
                s.present += present
                if s.counts is not None and len(s.counts) > v.max_categories:
                    s.counts = None  # too many to be categories: no category set
            if name == target and self.config.dataset.task != Task.REGRESSION:
                counted = pc.value_counts(as_text(arr).drop_null())
                for key, count in zip(
                    counted.field("values").to_pylist(),
                    counted.field("counts").to_pylist(),
                    strict=True,
                ):
                    label = _label_key(key)
                    self.labels[label] = self.labels.get(label, 0) + count

    _sets: dict[str, set[str]]

    def _category_set(self, name: str) -> set[str]:
        if not hasattr(self, "_sets"):
            self._sets = {}
        if name not in self._sets:
            self._sets[name] = set(self.schema.columns[name].categories)
        return self._sets[name]

    @property
    def duplicate_rows(self) -> int:
        if not self._hashes:
            return 0
        hashes = np.concatenate(self._hashes)
        if len(hashes) < 2:
            return 0
        hashes.sort()  # a radix-friendly sort beats a hash set for 8-byte keys
        return int(np.count_nonzero(hashes[1:] == hashes[:-1]))

    def time_range(self, column: str | None) -> tuple[str | None, str | None]:
        s = self.stats.get(column or "")
        if s is None or s.t_lo is None:
            return None, None
        return pd.Timestamp(s.t_lo).isoformat(), pd.Timestamp(s.t_hi).isoformat()

    # -- the checks ---------------------------------------------------------------------

    def report(self, source: str) -> ValidationReport:
        """Every configured check on the gathered statistics."""
        v = self.config.validation
        check = _Checker(self.config)
        target = self.config.require_target()
        rows = self.rows
        columns = self.columns or []
        if rows < v.min_rows:
            only = " (a header only)" if rows == 0 and columns else ""
            check.add(
                "empty", f"batch has {rows} rows{only}, at least {v.min_rows} needed", value=rows
            )
            return ValidationReport(source, rows, tuple(check.issues))
        if target not in columns:
            shown = ", ".join(map(str, columns[:8]))
            hint = ""
            if len(columns) == 1 and any(d in columns[0] for d in ";\t|"):
                hint = " (one column only: wrong delimiter?)"
            check.add(
                "missing_target",
                f"target column '{target}' is missing (columns: {shown}){hint}",
                column=target,
            )

        skip = self.config.dataset.non_features()
        features = [c for c in self.schema.feature_columns if c in columns and c not in skip]
        if target in columns and not features:  # without the target, that is the problem
            check.add("no_features", self._no_features(columns, target))
        self._check_missing_values(check, columns)
        schema = self.schema
        if target in columns and self.config.dataset.task != Task.REGRESSION:
            if not self.provisional and schema.class_shares:
                self._check_labels(check, target)
        self._check_duplicates(check)
        if not self.provisional:
            self._check_columns_against_schema(check, columns, target)
        self._check_values(check, columns, target)
        return ValidationReport(source, rows, tuple(check.issues))

    def _no_features(self, columns: list[str], target: str) -> str:
        """What each column of a batch without a model input is (`no_features`)."""
        dataset = self.config.dataset
        roles = {target: "the target", dataset.id: "the id", dataset.timestamp: "the timestamp"}
        parts = []
        for column in columns:
            kind = self.schema.columns.get(column)
            role = roles.get(column) or ("excluded" if column in dataset.exclude else None)
            role = role or f"a {kind.kind} column" if kind else role or "not a feature"
            parts.append(f"'{column}' {role}")
        return f"no feature column, a model needs at least one input ({'; '.join(parts)})"

    def _check_missing_values(self, check: _Checker, columns: list[str]) -> None:
        v, rows = self.config.validation, self.rows
        for column in columns:
            share = self.stats[column].nulls / rows
            if share > v.max_missing_share:
                check.add(
                    "missing_values",
                    f"column '{column}': {share:.0%} missing, "
                    f"at most {v.max_missing_share:.0%} allowed",
                    column,
                    share,
                )

    def _check_duplicates(self, check: _Checker) -> None:
        v = self.config.validation
        duplicate_share = self.duplicate_rows / self.rows
        if duplicate_share > v.max_duplicate_share:
            check.add(
                "duplicates",
                f"{duplicate_share:.0%} of rows are duplicates "
                f"(at most {v.max_duplicate_share:.0%})",
                value=duplicate_share,
            )

    def _check_columns_against_schema(
        self, check: _Checker, columns: list[str], target: str
    ) -> None:
        schema = self.schema
        expected = [c for c in schema.columns if c != target]
        for column in [c for c in expected if c not in columns]:
            check.add("missing_column", f"column '{column}' is missing", column)
        for column in [c for c in columns if c not in schema.columns]:
            check.add(
                "extra_column", f"column '{column}' is not in schema v{schema.version}", column
            )

    def _check_values(self, check: _Checker, columns: list[str], target: str) -> None:
        """Types, ranges and categories of each column the schema knows."""
        v, rows = self.config.validation, self.rows
        for name, col in self.schema.columns.items():
            if name not in columns:
                continue
            if name == target and self.config.dataset.task != Task.REGRESSION:
                continue
            s = self.stats[name]
            # the first batch defines the types: what does not fit them is stored as missing
            # and reported, it cannot fail the batch (a declared timestamp still can)
            defined = self.provisional and name != self.config.dataset.timestamp
            cap = Severity.WARN if defined else None
            stored = "; stored as missing (the first batch defines the types)" if defined else ""
            if s.non_finite:
                check.add(
                    "non_finite",
                    f"column '{name}': {s.non_finite} of {rows} values are infinite "
                    f"(first at row {s.first_non_finite}); stored as missing",
                    name,
                    s.non_finite,
                )
            if col.kind == NUMERIC:
                if s.bad:
                    check.add(
                        "type_error",
                        f"column '{name}': {s.bad} of {rows} values are not numbers "
                        f"({s.first_bad}){stored}",
                        name,
                        s.bad,
                        cap,
                    )
                share = s.outside / rows
                if share > v.max_out_of_range_share:
                    check.add(
                        "out_of_range",
                        f"column '{name}': {share:.0%} of values outside "
                        f"[{col.min:g}, {col.max:g}] (observed {s.lo:g}..{s.hi:g})",
                        name,
                        share,
                    )
            elif col.kind == DATETIME and s.bad:
                check.add(
                    "type_error",
                    f"column '{name}': {s.bad} of {rows} values are not dates "
                    f"({s.first_bad}){stored}",
                    name,
                    s.bad,
                    cap,
                )
            elif col.kind == BOOLEAN_KIND and s.bad:
                check.add(
                    "type_error",
                    f"column '{name}': {s.bad} of {rows} values are not booleans "
                    f"(true/false, yes/no, 1/0; {s.first_bad}){stored}",
                    name,
                    s.bad,
                    cap,
                )
            elif col.kind == CATEGORICAL and col.categories and s.present:
                share = s.unseen / s.present
                if share > v.max_unseen_category_share:
                    examples = sorted(s.unseen_examples)[:5]
                    check.add(
                        "unseen_categories",
                        f"column '{name}': {share:.0%} of values are unseen categories "
                        f"(e.g. {examples}; at most {v.max_unseen_category_share:.0%} allowed)",
                        name,
                        share,
                    )

    def _check_labels(self, check: _Checker, target: str) -> None:
        v = self.config.validation
        reference = self.schema.class_shares
        unknown = sorted(set(self.labels) - set(reference))
        if unknown:
            check.add(
                "unknown_label",
                f"target '{target}': unknown classes {unknown[:5]}, expected {sorted(reference)}",
                target,
                len(unknown),
            )
            return
        total = sum(self.labels.values())
        if not total:
            return
        shares = {k: n / total for k, n in self.labels.items()}
        gaps = {
            k: abs(shares.get(k, 0.0) - reference.get(k, 0.0)) for k in set(shares) | set(reference)
        }
        worst = max(gaps, key=gaps.get)
        if gaps[worst] > v.max_label_shift:
            check.add(
                "label_shift",
                f"target '{target}': class {worst} is {shares.get(worst, 0):.0%} of rows, "
                f"{reference.get(worst, 0):.0%} in the reference "
                f"(shift {gaps[worst]:.0%} > {v.max_label_shift:.0%})",
                target,
                gaps[worst],
            )

    # -- the schema of a first batch ----------------------------------------------------

    def inferred_schema(self, version: int = 1) -> Schema:
        """The schema this batch defines: kinds, ranges, nullability, categories, class shares."""
        columns: dict[str, ColumnSchema] = {}
        for name, col in self.schema.columns.items():
            s = self.stats.get(name, ColumnStats())
            nullable = bool(s.nulls or s.bad)
            lo = hi = None
            categories: list[str] = []
            if col.kind == NUMERIC and not col.personal:
                lo = None if s.lo is None else float(s.lo)
                hi = None if s.hi is None else float(s.hi)
            if col.kind == CATEGORICAL and not col.personal and s.counts:
                categories = sorted(s.counts)
            columns[name] = ColumnSchema(
                name, col.kind, nullable, lo, hi, categories, col.personal, col.handling
            )
        shares: dict[str, float] = {}
        if self.config.dataset.task != Task.REGRESSION and self.labels:
            total = sum(self.labels.values())
            shares = {k: round(n / total, 6) for k, n in sorted(self.labels.items())}
        return Schema(version, self.schema.target, self.schema.task, columns, shares)


def profile_frame(
    frame: pd.DataFrame, schema: Schema | None, config: Config, salt: bytes | None = None
) -> tuple[BatchProfile, pa.Table]:
    """Profile a whole DataFrame as one chunk; returns the profile and the typed table."""
    raw = frame_to_raw(frame)
    provisional = schema is None
    if schema is None:
        schema = provisional_schema(raw, config.dataset, config.personal_data)
    typed, conversions = type_chunk(raw, schema, salt)
    profile = BatchProfile(schema, config, provisional)
    profile.add(raw, conversions, row_hashes(typed))
    return profile, typed


def validate_batch(
    frame: pd.DataFrame, schema: Schema | None, config: Config, source: str = "batch"
) -> ValidationReport:
    """Check a raw batch (as read from its file) against the schema and the config.

    With no schema yet (the first batch), only the checks that need none run.
    """
    config.require_target()
    profile, _ = profile_frame(frame, schema, config)
    return profile.report(source)


def label_parity(
    train_labels: pd.Series, validation_labels: pd.Series, config: Config
) -> Issue | None:
    """Class shares of the train and validation split must match (within the configured gap)."""
    if config.dataset.task == Task.REGRESSION:
        return None
    a, b = class_shares(train_labels), class_shares(validation_labels)
    gaps = {k: abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b)}
    if not gaps:
        return None
    # a tie (two classes always tie in a binary task) names the rarer class, then by name, so
    # the message does not depend on the order of a set
    worst = min(gaps, key=lambda k: (-round(gaps[k], 12), a.get(k, 0.0), str(k)))
    limit = config.validation.max_label_parity_gap
    if gaps[worst] <= limit:
        return None
    return make_issue(
        config,
        "label_parity",
        f"target '{config.dataset.target}': class {worst} is {a.get(worst, 0):.0%} of the train "
        f"split and {b.get(worst, 0):.0%} of the validation split (gap {gaps[worst]:.0%} > "
        f"{limit:.0%})",
        config.dataset.target,
        gaps[worst],
    )


def split_parity(train: pd.DataFrame, holdout: pd.DataFrame, config: Config) -> Verdict:
    """`label_parity` of the target between the train and validation split, as a verdict.

    It passes (with no reason) when the shares match or the check is off or does not apply; a
    gap fails with the configured severity (`warn` records it, `block` refuses the candidate).
    """
    target = config.require_target()
    issue = label_parity(train[target], holdout[target], config)
    configured = config.validation.severity_of("label_parity")
    severity = {Severity.BLOCK: BLOCK, Severity.WARN: WARN}.get(configured, INFO)
    if issue is None:
        return Verdict("split_parity", True, (), severity)
    return Verdict("split_parity", False, (issue.message,), severity, issue.as_dict())


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
        elif col.kind == BOOLEAN_KIND:
            parsed = parse_boolean(out[name])  # booleans, as the lake stores them
            out[name] = parsed.astype(object).where(parsed.notna(), None)
        else:
            out[name] = out[name].map(lambda x: x if pd.isna(x) else _label_key(x)).astype(object)
    return out


@dataclass
class StagedBatch:
    """A batch read, typed, profiled and written to a temporary file, waiting for the gate."""

    source: str
    format: str
    report: ValidationReport
    schema: Schema  # the schema it was checked against (or the one it defines)
    new_schema: bool  # True when this batch defines the first schema
    writer: SnapshotWriter | None = None
    time_min: str | None = None
    time_max: str | None = None
    personal: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.report.passed
