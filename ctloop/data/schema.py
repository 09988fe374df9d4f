"""The data schema: inferred from the first accepted batch, stored as readable versioned JSON."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.config.settings import DatasetConfig, Task
from ctloop.errors import InputError
from ctloop.stores.storage import LakeFolder

NUMERIC = "numeric"
CATEGORICAL = "categorical"
DATETIME = "datetime"
IDENTIFIER = "id"
BOOLEAN_KIND = "boolean"
BOOLEAN = BOOLEAN_KIND

# Spellings of a boolean, compared after trimming and lower-casing. Words only: a column of
# 0/1 stays numeric when a schema is inferred, but a boolean column accepts 0 and 1 as values.
TRUE_WORDS = frozenset({"true", "yes"})
FALSE_WORDS = frozenset({"false", "no"})
TRUE_VALUES = TRUE_WORDS | {"1", "1.0"}
FALSE_VALUES = FALSE_WORDS | {"0", "0.0"}
FEATURE_KINDS = (NUMERIC, CATEGORICAL, BOOLEAN_KIND)


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    kind: str
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    categories: list[str] = field(default_factory=list)
    personal: str | None = None  # what personal data it looks like (email, phone, ...)
    handling: str | None = None  # drop, hash or keep: applied before any snapshot is written


@dataclass(frozen=True)
class Schema:
    """Columns, their kinds and ranges, the target and its class shares."""

    version: int
    target: str
    task: str
    columns: dict[str, ColumnSchema]
    class_shares: dict[str, float] = field(default_factory=dict)

    @property
    def feature_columns(self) -> list[str]:
        return [
            c.name
            for c in self.columns.values()
            if c.kind in FEATURE_KINDS and c.handling != "drop"
        ]

    @property
    def stored_columns(self) -> list[str]:
        """Columns a snapshot keeps (personal data marked `drop` never reaches the lake)."""
        return [c.name for c in self.columns.values() if c.handling != "drop"]

    def signature(self, exclude: set[str]) -> list[tuple[str, str]]:
        """Model inputs as (name, kind): a change of it is a new major model version."""
        return [
            (c.name, c.kind)
            for c in self.columns.values()
            if c.name not in exclude and c.kind in FEATURE_KINDS and c.handling != "drop"
        ]

    def to_json(self) -> str:
        data = asdict(self)
        data["columns"] = [asdict(c) for c in self.columns.values()]
        return json.dumps(data, indent=2, default=str)

    @classmethod
    def from_json(cls, text: str) -> Schema:
        data = json.loads(text)
        columns = {c["name"]: ColumnSchema(**c) for c in data.pop("columns")}
        return cls(columns=columns, **data)


_WHOLE = re.compile(r"^-?\d+\.0+$")


def _boolean_of(value: object) -> bool | None:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return {0: False, 1: True}.get(value) if value in (0, 1) else None
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_VALUES:
            return True
        if word in FALSE_VALUES:
            return False
    return None


def parse_boolean(values) -> pd.Series:
    """Booleans from their spellings: True/False (any case), yes/no, 0/1, real booleans.

    Args:
        values: a Series or any sequence (text, numbers, booleans, missing values).

    Returns:
        A Series of pandas' nullable "boolean" dtype, index kept: missing values and values
        that are no boolean spelling are both <NA> (compare with the input's `notna()` to find
        the latter).
    """
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    parsed = [None if _missing(v) else _boolean_of(v) for v in series.tolist()]
    return pd.Series(parsed, index=series.index, dtype="boolean", name=series.name)


def is_boolean_word(value: object) -> bool:
    """True for a value that makes a column boolean when a schema is inferred (not 0/1)."""
    if isinstance(value, bool | np.bool_):
        return True
    return isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS


def _missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _label_key(value: object) -> str:
    """Category and class keys as text: 1.0 and "1.0" are "1", like a CSV export would mean."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and _WHOLE.match(value):
        return value.split(".")[0]
    return str(value)


def class_shares(labels: pd.Series) -> dict[str, float]:
    shares = labels.dropna().map(_label_key).value_counts(normalize=True).sort_index()
    return {str(k): round(float(v), 6) for k, v in shares.items()}


def guess_task(labels: pd.Series) -> tuple[Task, str]:
    """The task a target column looks like, and why: binary for two values, regression for
    many numbers (any fractional value, or more than 20 distinct integers), multiclass
    otherwise."""
    values = labels.dropna()
    distinct = values.nunique()
    if distinct <= 2:
        return Task.BINARY, f"{distinct} distinct values"
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        fractional = bool((numbers % 1 != 0).any())
        if fractional or distinct > 20:
            kind = "numbers with fractions" if fractional else "whole numbers"
            return Task.REGRESSION, f"{distinct} distinct {kind}"
    return Task.MULTICLASS, f"{distinct} distinct classes"


def infer_schema(frame: pd.DataFrame, dataset: DatasetConfig, version: int = 1) -> Schema:
    """Infer kinds, ranges, categories and class shares from accepted data."""
    target = dataset.target
    if not target:
        raise InputError("dataset.target: not set, cannot infer a schema")
    columns: dict[str, ColumnSchema] = {}
    for name in frame.columns:
        series = frame[name]
        nullable = bool(series.isna().any())
        if name == dataset.id:
            columns[name] = ColumnSchema(name, IDENTIFIER, nullable)
        elif name == dataset.timestamp or pd.api.types.is_datetime64_any_dtype(series):
            columns[name] = ColumnSchema(name, DATETIME, nullable)
        elif pd.api.types.is_bool_dtype(series) or _all_boolean_words(series):
            columns[name] = ColumnSchema(name, BOOLEAN_KIND, nullable)
        elif pd.api.types.is_numeric_dtype(series):
            lo, hi = series.min(), series.max()
            columns[name] = ColumnSchema(
                name,
                NUMERIC,
                nullable,
                None if pd.isna(lo) else float(lo),
                None if pd.isna(hi) else float(hi),
            )
        else:
            cats = sorted({_label_key(v) for v in series.dropna().unique()})
            columns[name] = ColumnSchema(name, CATEGORICAL, nullable, categories=cats)
    shares = class_shares(frame[target]) if dataset.task != Task.REGRESSION else {}
    return Schema(version, target, str(dataset.task), columns, shares)


def _all_boolean_words(series: pd.Series) -> bool:
    if series.dtype != object:
        return False
    present = series.dropna()
    return bool(len(present)) and all(is_boolean_word(v) for v in present.unique())


def schema_name(version: int) -> str:
    return f"schema-v{version}.json"


def schema_path(folder: Path, version: int) -> Path:
    """The file of a version in a local schema folder."""
    return folder / schema_name(version)


def _lake_folder(folder: Path | LakeFolder) -> LakeFolder:
    return folder if isinstance(folder, LakeFolder) else LakeFolder(Path(folder))


def save_schema(schema: Schema, folder: Path | LakeFolder) -> Path | str:
    """Write (or replace) a schema version; returns its path (a URL on a remote lake).

    `folder`: a local folder, or the lake's `schema` folder (`ctloop.stores.storage.open_lake`).
    """
    folder = _lake_folder(folder)
    name = schema_name(schema.version)
    folder.write_atomic(name, schema.to_json().encode())
    return folder.local_path(name) if folder.local else folder.url(name)


def save_schema_if_absent(schema: Schema, folder: Path | LakeFolder) -> Schema:
    """Publish a schema version unless another writer did first; returns the one that won.

    Concurrent first batches (several processes) each infer a schema; the creation is exclusive
    (a hard link locally, a conditional write on memory:// and S3), so every process ends up on
    the same version 1. On a filesystem without an exclusive create (see `ctloop.stores.storage`) it
    is check-then-write: two first batches racing within that window may both write v1, the last
    one wins, and the other writer's snapshot names a v1 that differs from the stored one
    (ingest the first batch alone to avoid it).
    """
    folder = _lake_folder(folder)
    name = schema_name(schema.version)
    if folder.create_exclusive(name, schema.to_json().encode()):
        return schema
    return Schema.from_json(folder.read_bytes(name))


_PATTERN = "schema-v*.json"


def load_latest_schema(folder: Path | LakeFolder) -> Schema | None:
    """The newest schema version in the folder, or None before the first accepted batch."""
    folder = _lake_folder(folder)
    versions = sorted((int(n[: -len(".json")].split("-v")[1]), n) for n in folder.names(_PATTERN))
    if not versions:
        return None
    name = versions[-1][1]
    try:
        return Schema.from_json(folder.read_bytes(name))
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{folder.where(name)}: not a valid schema file ({exc})") from None
