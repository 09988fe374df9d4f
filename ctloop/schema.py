"""The data schema: inferred from the first accepted batch, stored as readable versioned JSON."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from ctloop.config import DatasetConfig, Task
from ctloop.errors import InputError

NUMERIC = "numeric"
CATEGORICAL = "categorical"
DATETIME = "datetime"
IDENTIFIER = "id"


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
            if c.kind in (NUMERIC, CATEGORICAL) and c.handling != "drop"
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
            if c.name not in exclude and c.kind in (NUMERIC, CATEGORICAL) and c.handling != "drop"
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
        elif pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
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


def schema_path(folder: Path, version: int) -> Path:
    return folder / f"schema-v{version}.json"


def save_schema(schema: Schema, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = schema_path(folder, schema.version)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(schema.to_json())
    tmp.replace(path)
    return path


def save_schema_if_absent(schema: Schema, folder: Path) -> Schema:
    """Publish a schema version unless another writer did first; returns the one that won.

    Concurrent first batches (several processes) each infer a schema; a hard link makes the
    creation exclusive, so every process ends up on the same version 1.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = schema_path(folder, schema.version)
    tmp = folder / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    tmp.write_text(schema.to_json())
    try:
        os.link(tmp, path)
        return schema
    except FileExistsError:
        return Schema.from_json(path.read_text())
    finally:
        tmp.unlink(missing_ok=True)


def load_latest_schema(folder: Path) -> Schema | None:
    """The newest schema version in the folder, or None before the first accepted batch."""
    if not folder.is_dir():
        return None
    versions = sorted((int(p.stem.split("-v")[1]), p) for p in folder.glob("schema-v*.json"))
    if not versions:
        return None
    path = versions[-1][1]
    try:
        return Schema.from_json(path.read_text())
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{path}: not a valid schema file ({exc})") from None
