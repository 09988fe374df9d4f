"""Batches as Arrow tables: streamed reading in bounded chunks, typing to the schema, row hashes.

A file is read as delivered (CSV: every column as text) in chunks of `chunk_bytes`, typed to the
schema chunk by chunk with a record of the values that would not convert, and hashed row by row,
so a file of any size goes through in bounded memory and the content hash does not depend on how
the file was cut into chunks.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ctloop.data.schema import (
    BOOLEAN_KIND,
    DATETIME,
    FALSE_VALUES,
    NUMERIC,
    TRUE_VALUES,
    ColumnSchema,
    Schema,
)
from ctloop.data.schema import _label_key as label_key
from ctloop.errors import InputError

READABLE = {".csv", ".parquet", ".pq"}
TYPED = b"ctloop.typed"  # field metadata: text that stands for categories, not numbers
NULLS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "#N/A", "n/a", "-NaN", "-nan"]


def check_file(path: Path, handle: BinaryIO | None = None) -> str:
    """The file's kind ("csv" or "parquet"), or an InputError naming the file.

    With `handle` (the file already opened), its size is read from the descriptor, not the path.
    """
    if handle is None:
        if not path.exists():
            raise InputError(f"{path}: file not found")
        if path.is_dir():
            raise InputError(f"{path}: is a folder, expected a CSV or Parquet file")
    suffix = path.suffix.lower()
    if suffix not in READABLE:
        raise InputError(f"{path}: unsupported file type '{suffix}' (use .csv or .parquet)")
    size = os.fstat(handle.fileno()).st_size if handle is not None else path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: file is empty")
    return "csv" if suffix == ".csv" else "parquet"


def _csv_header(path: Path, handle: BinaryIO, delimiter: str) -> list[str]:
    handle.seek(0)
    head = handle.read(1 << 16)
    handle.seek(0)
    if b"\x00" in head:
        raise InputError(f"{path}: not a text CSV file (binary content)")
    cut = head.rfind(b"\n") if len(head) == 1 << 16 else len(head)
    try:
        text = head[: max(cut, 0)].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text (byte 0x{head[exc.start]:02x} at offset {exc.start}; "
            "wrong encoding? save the file as UTF-8)"
        ) from None
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if any(r)]
    if not rows:
        raise InputError(f"{path}: file has no columns")
    header = [h.strip() for h in rows[0]]
    if any(not h for h in header):
        raise InputError(f"{path}: column {header.index('') + 1} of the header has no name")
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise InputError(f"{path}: duplicate column names {dupes}")
    return header


def file_columns(path: str | Path, delimiter: str = ",") -> list[str]:
    """The column names of a CSV or Parquet file, read from its header (or schema) alone.

    Raises:
        InputError: the file is missing, empty, binary, of an unknown kind or its header is
            not readable; the message names the file.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if check_file(path) == "csv":
        try:
            opened = open(path, "rb")
        except OSError as exc:
            raise InputError(f"{path}: cannot be opened ({exc.strerror or exc})") from None
        with opened:
            return _csv_header(path, opened, delimiter)
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: {_parse_reason(_first_line(exc))}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_chunks(
    path: str | Path,
    chunk_bytes: int = 16 << 20,
    delimiter: str = ",",
    handle: BinaryIO | None = None,
) -> Iterator[pa.Table]:
    """Yield a CSV or Parquet file as raw Arrow tables of bounded size (CSV: all text).

    Args:
        handle: the file, already opened (`ctloop.lake.sources.open_source` checks the
            descriptor it reads): read from its start, `path` only names it and gives its
            kind. None: the file is opened here by its path.

    Raises:
        InputError: the file is missing, empty, binary, of an unknown kind or not parseable;
            the message names the file.
    """
    path = Path(path)
    if handle is None:
        check_file(path)
        try:
            opened = open(path, "rb")
        except OSError as exc:
            raise InputError(f"{path}: cannot be opened ({exc.strerror or exc})") from None
        with opened:
            yield from _read_chunks(path, opened, chunk_bytes, delimiter)
        return
    yield from _read_chunks(path, handle, chunk_bytes, delimiter)


def _read_chunks(
    path: Path, handle: BinaryIO, chunk_bytes: int, delimiter: str
) -> Iterator[pa.Table]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    kind = check_file(path, handle)
    handle.seek(0)
    try:
        if kind == "csv":
            header = _csv_header(path, handle, delimiter)
            reader = pacsv.open_csv(
                handle,
                read_options=pacsv.ReadOptions(block_size=chunk_bytes, use_threads=True),
                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in header},
                    null_values=NULLS,
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                ),
            )
            empty = True
            for batch in reader:
                empty = False
                yield pa.Table.from_batches([batch])
            if empty:
                yield pa.table({name: pa.array([], pa.string()) for name in header})
        else:
            parquet = pq.ParquetFile(handle)
            row_bytes = max(
                parquet.metadata.serialized_size // max(parquet.metadata.num_rows, 1), 1
            )
            rows = max(1024, chunk_bytes // max(row_bytes * 8, 64))
            empty = True
            for batch in parquet.iter_batches(batch_size=rows):
                empty = False
                yield pa.Table.from_batches([batch])
            if empty:
                yield parquet.schema_arrow.empty_table()
    except InputError:
        raise
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
        raise InputError(f"{path}: {_parse_reason(_first_line(exc))}") from None


_RAGGED = re.compile(r"Expected (\d+) columns, got (\d+): ?(.*)")


def _parse_reason(first: str) -> str:
    """Arrow's parse error as a reason a user can act on."""
    if "UTF8" in first or "utf8" in first or "utf-8" in first:
        return "not UTF-8 text (wrong encoding? save the file as UTF-8)"
    ragged = _RAGGED.search(first)
    if ragged:
        expected, got, row = ragged.groups()
        row = row if len(row) <= 60 else row[:57] + "..."
        return f"ragged rows: a row has {got} fields, the header {expected} (row {row!r})"
    return f"cannot be parsed ({first})"


def frame_to_raw(frame: pd.DataFrame) -> pa.Table:
    """A DataFrame as a raw Arrow table: typed columns kept, mixed object columns as text."""
    arrays, fields = [], []
    for name in frame.columns:
        series = frame[name]
        if series.dtype == object or isinstance(series.dtype, pd.CategoricalDtype):
            values = [v for v in series.astype(object).tolist()]
            text = [None if _isna(v) else label_key(v) for v in values]
            typed = any(not isinstance(v, str) for v in values if not _isna(v))
            arrays.append(pa.array(text, type=pa.string()))
            if typed or isinstance(series.dtype, pd.CategoricalDtype):
                # values that were not text (floats, mixed): categories, not numbers to parse
                fields.append(pa.field(str(name), pa.string(), metadata={TYPED: b"1"}))
                continue
        elif pd.api.types.is_bool_dtype(series):
            arrays.append(pa.array(series, type=pa.bool_(), from_pandas=True))
        elif pd.api.types.is_datetime64_any_dtype(series):
            s = series
            if getattr(s.dt, "tz", None) is not None:
                s = s.dt.tz_convert("UTC").dt.tz_localize(None)
            arrays.append(pa.array(s.astype("datetime64[ns]"), type=pa.timestamp("ns")))
            fields.append(pa.field(str(name), pa.timestamp("ns")))
            continue
        else:
            arrays.append(pa.array(series, from_pandas=True))
        fields.append(pa.field(str(name), arrays[-1].type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _isna(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


# --- typing to the schema ----------------------------------------------------------------


@dataclass
class Conversion:
    """A column typed to the schema, and what would not convert."""

    values: pa.Array
    bad: int = 0
    first_bad: int | None = None  # row within the chunk
    first_bad_value: str | None = None
    non_finite: int = 0  # numbers that are infinite, stored as missing values
    first_non_finite: int | None = None  # row within the chunk


def storage_type(col: ColumnSchema, schema: Schema) -> pa.DataType:
    """The Arrow type a snapshot stores a column as (fixed by the schema, never by a chunk)."""
    if col.handling == "hash":
        return pa.string()
    if col.kind == DATETIME:
        return pa.timestamp("ns")
    if col.kind == BOOLEAN_KIND:
        return pa.bool_()
    if col.kind == NUMERIC:
        if col.name == schema.target and schema.task != "regression" and _integral_labels(col):
            return pa.int64()
        return pa.float64()
    return pa.string()


def _integral_labels(col: ColumnSchema) -> bool:
    return all(v is None or float(v).is_integer() for v in (col.min, col.max))


def _text(arr: pa.Array) -> pa.Array:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr
    if pa.types.is_boolean(arr.type):
        return pa.array([None if v is None else str(v) for v in arr.to_pylist()], type=pa.string())
    if pa.types.is_floating(arr.type):
        return pa.array(
            [None if v is None else label_key(v) for v in arr.to_pylist()], type=pa.string()
        )
    if pa.types.is_dictionary(arr.type):
        return _text(arr.cast(arr.type.value_type))
    return pc.cast(arr, pa.string())


def _bad(raw: pa.Array, typed: pa.Array) -> Conversion:
    mask = pc.and_(pc.is_valid(raw), pc.is_null(typed))
    bad = int(pc.sum(mask).as_py() or 0)
    conv = Conversion(typed, bad)
    if bad:
        first = int(pc.index(mask, True).as_py())
        conv.first_bad, conv.first_bad_value = first, raw[first].as_py()
    return conv


def to_numbers(raw: pa.Array) -> Conversion:
    """Numbers as float64; text that is not a number becomes null and is counted.

    Infinite numbers become null too, counted as `non_finite` (no model can learn from them);
    NaN is a missing value.
    """
    if pa.types.is_boolean(raw.type):
        return _bad(raw, pa.nulls(len(raw), pa.float64()))
    if pa.types.is_integer(raw.type) or pa.types.is_floating(raw.type):
        return _finite(Conversion(pc.cast(raw, pa.float64())))
    text = _text(raw)
    try:
        return _finite(Conversion(pc.cast(text, pa.float64())))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        numbers = pd.to_numeric(text.to_pandas(), errors="coerce")
        return _finite(_bad(text, pa.array(numbers, type=pa.float64(), from_pandas=True)))


def _finite(conv: Conversion) -> Conversion:
    values = conv.values
    if values.null_count == len(values):
        return conv
    nan = pc.is_nan(values)
    inf = pc.is_inf(values)
    bad = pc.or_(nan, inf)
    if not pc.any(bad).as_py():
        return conv
    conv.values = pc.if_else(bad, pa.scalar(None, pa.float64()), values)
    conv.non_finite = int(pc.sum(inf).as_py() or 0)
    if conv.non_finite:
        conv.first_non_finite = int(pc.index(inf, True).as_py())
    return conv


def to_booleans(raw: pa.Array) -> Conversion:
    """Booleans from True/False (any case), yes/no, 0/1; anything else becomes null, counted."""
    if pa.types.is_boolean(raw.type):
        return Conversion(raw)
    if pa.types.is_integer(raw.type) or pa.types.is_floating(raw.type):
        numbers = pc.cast(raw, pa.float64())
        true, false = pc.equal(numbers, 1.0), pc.equal(numbers, 0.0)
    else:
        words = pc.utf8_lower(pc.utf8_trim_whitespace(_text(raw)))
        true = pc.is_in(words, value_set=pa.array(sorted(TRUE_VALUES)))
        false = pc.is_in(words, value_set=pa.array(sorted(FALSE_VALUES)))
    null = pa.scalar(None, pa.bool_())
    typed = pc.if_else(true, True, pc.if_else(false, False, null))
    return _bad(raw, typed)


def parse_times(values: pd.Series) -> pd.Series:
    """Text as naive UTC times, one format for the whole column where one fits.

    Tried in turn: ISO 8601, the format inferred from the first value (month first, then day
    first) applied to every value, and each value on its own; the one that parses the most
    values wins, the earlier on a tie. So `04/02/2015` and `13/02/2015` in one column are both
    read day first (4 and 13 February), never one as April and the other as February; text
    that is not a date is NaT."""
    tries = ({"format": "ISO8601"}, {"dayfirst": False}, {"dayfirst": True}, {"format": "mixed"})
    best = None
    with warnings.catch_warnings():  # "could not infer format": the next try says
        warnings.simplefilter("ignore")
        for options in tries:
            parsed = pd.to_datetime(values, errors="coerce", utc=True, **options)
            if best is None or parsed.notna().sum() > best.notna().sum():
                best = parsed
            if best.notna().sum() == values.notna().sum():
                break
    return best.dt.tz_localize(None)


def to_times(raw: pa.Array) -> Conversion:
    """Timestamps as naive UTC nanoseconds; text that is not a date becomes null and counted."""
    if pa.types.is_timestamp(raw.type):
        if raw.type.tz is not None:
            raw = pc.cast(raw, pa.timestamp(raw.type.unit, "UTC")).cast(pa.timestamp(raw.type.unit))
        return Conversion(pc.cast(raw, pa.timestamp("ns")))
    if pa.types.is_date(raw.type):
        return Conversion(pc.cast(pc.cast(raw, pa.timestamp("s")), pa.timestamp("ns")))
    text = _text(raw)
    try:
        return Conversion(pc.cast(text, pa.timestamp("ns")))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        parsed = parse_times(text.to_pandas()).astype("datetime64[ns]")
        return _bad(text, pa.array(parsed, type=pa.timestamp("ns"), from_pandas=True))


def to_type(raw: pa.Array, col: ColumnSchema, schema: Schema) -> Conversion:
    """Type one raw column to its storage type."""
    target = storage_type(col, schema)
    if pa.types.is_timestamp(target):
        return to_times(raw)
    if pa.types.is_boolean(target):
        return to_booleans(raw)
    if pa.types.is_floating(target):
        return to_numbers(raw)
    if pa.types.is_integer(target):
        numbers = to_numbers(raw)
        whole = pc.equal(pc.floor(numbers.values), numbers.values)
        ints = pc.if_else(whole, numbers.values, pa.scalar(None, pa.float64()))
        conv = _bad(raw, pc.cast(ints, pa.int64()))
        return conv
    return Conversion(_text(raw))


# --- hashing ------------------------------------------------------------------------------


def row_hashes(table: pa.Table) -> np.ndarray:
    """One uint64 per row from its values alone: the same rows hash the same in any chunk."""
    if table.num_rows == 0:
        return np.empty(0, dtype=np.uint64)
    columns: dict[str, object] = {}
    for i, (name, arr) in enumerate(zip(table.column_names, table.columns, strict=True)):
        t = arr.type
        key = f"{i}:{name}"
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            columns[key] = pc.cast(arr, pa.float64()).to_numpy()
        elif pa.types.is_timestamp(t):
            ints = pc.cast(arr, pa.int64()).fill_null(np.iinfo(np.int64).min)
            columns[key] = ints.to_numpy()
        else:
            columns[key] = arr.to_pandas().to_numpy(dtype=object)
    frame = pd.DataFrame(columns, copy=False)
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def schema_header(schema: pa.Schema) -> bytes:
    return json.dumps([[f.name, str(f.type)] for f in schema]).encode()


class ContentHasher:
    """SHA-256 of the column names and types, then of every row hash in order."""

    def __init__(self, schema: pa.Schema):
        self._digest = hashlib.sha256(schema_header(schema))

    def update(self, hashes: np.ndarray) -> None:
        self._digest.update(np.ascontiguousarray(hashes, dtype=np.uint64).tobytes())

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def table_of(frame: pd.DataFrame) -> pa.Table:
    """A (typed) DataFrame as the Arrow table a snapshot stores."""
    return pa.Table.from_pandas(frame, preserve_index=False)
