"""Request inputs: JSON bodies, MLflow payload formats, and records checked against a schema."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd

from ctloop.data.schema import BOOLEAN_KIND, FALSE_VALUES, TRUE_VALUES

MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


class RequestError(Exception):
    """A request that cannot be answered: a 4xx with a message naming the field."""

    def __init__(self, message: str, status: int = 422, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


def parse_json(body: bytes) -> Any:
    """Decode a JSON body; NaN and Infinity survive here so the record check can name the field."""
    if not body or not body.strip():
        raise RequestError("empty body: send a JSON object", 400)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # non-standard JSON (NaN, Infinity, 1e400, huge ints): let the stdlib decide
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise RequestError(f"body is not UTF-8: {exc.reason}", 400) from None
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if hasattr(exc, "lineno") else ""
        reason = getattr(exc, "msg", str(exc))
        raise RequestError(f"malformed JSON{where}: {reason}", 400) from None


BOOLEAN = BOOLEAN_KIND
# the spellings a batch's boolean column takes, compared trimmed and lower-cased; JSON
# true/false and the numbers 0 and 1 too
_BOOLEAN_TEXT = {**dict.fromkeys(TRUE_VALUES, True), **dict.fromkeys(FALSE_VALUES, False)}


def parse_boolean(value: Any, where: str) -> bool | None:
    """A boolean field's value: JSON true/false, 0 or 1, the strings true/false/yes/no/1/0 in
    any case, or null.

    (The server's own parser, for JSON values; batches use ctloop.data.schema's.)

    Raises:
        RequestError: 422 naming the field for anything else.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOLEAN_TEXT:
        return _BOOLEAN_TEXT[value.strip().lower()]
    raise RequestError(
        f"{where}: expected true, false or null (or the strings true/false/yes/no/1/0), "
        f"got {describe(value)}",
        field=where,
    )


def boolean_spellings(categories: list[str]) -> tuple[str, str] | None:
    """(false, true) when a categorical column's categories are the two spellings of a boolean
    (a `True`/`False` text column of an older schema): JSON booleans then map onto them."""
    known = {c: _BOOLEAN_TEXT.get(c.strip().lower()) for c in categories}
    falses = [c for c, v in known.items() if v is False]
    trues = [c for c, v in known.items() if v is True]
    if len(falses) == 1 and len(trues) == 1 and len(categories) == 2:
        return falses[0], trues[0]
    return None


@dataclass(frozen=True)
class DatasetInputs:
    """What the dataset declares beyond a model's signature, read from the config and the lake's
    schema: the id column, passthrough columns (id, timestamp, excluded, personal data that is
    not a feature), boolean columns, and the personal-data handling with its salt.
    """

    id_column: str | None = None
    passthrough: tuple[str, ...] = ()
    booleans: tuple[str, ...] = ()
    spellings: dict[str, tuple[str, str]] = field(default_factory=dict)
    handling: dict[str, str] = field(default_factory=dict)  # column -> hash or drop
    salt: bytes | None = None

    @classmethod
    def of(cls, dataset, schema=None, personal=None, salt: bytes | None = None) -> DatasetInputs:
        """From a `DatasetConfig`, the lake's `Schema` (or None) and `PersonalDataConfig`.

        Raises:
            ValueError: a column is hashed but no salt was given.
        """
        columns = dict(schema.columns) if schema is not None else {}
        id_column = dataset.id or next((c for c, s in columns.items() if s.kind == "id"), None)
        declared = [dataset.id, dataset.timestamp, *dataset.exclude]
        declared += [c for c, s in columns.items() if s.kind in ("id", "datetime")]
        handling = {c: s.handling for c, s in columns.items() if s.handling in ("hash", "drop")}
        if personal is not None:
            handling.update({c: h for c, h in personal.columns.items() if h in ("hash", "drop")})
        declared += list(handling)
        target = dataset.target or (schema.target if schema is not None else None)
        passthrough = tuple(dict.fromkeys(c for c in declared if c and c != target))
        booleans = tuple(c for c, s in columns.items() if s.kind == BOOLEAN)
        spellings = {}
        for name, col in columns.items():
            pair = boolean_spellings(list(col.categories)) if col.kind == "categorical" else None
            if pair and name not in handling:
                spellings[name] = pair
        if any(h == "hash" for h in handling.values()) and salt is None:
            raise ValueError("personal data is hashed but the lake's salt is missing")
        return cls(id_column, passthrough, booleans, spellings, handling, salt)


@dataclass(frozen=True)
class FeatureSchema:
    """The inputs of one model version: numeric, categorical and boolean features, plus
    passthrough columns.

    Passthrough columns (the dataset's id, timestamp and excluded columns, and personal data
    that is not a feature) may be sent with a record; they are logged with the prediction but
    never scored. Any other unknown field is an error, as is a missing feature. `null` is a
    missing value (the pipeline imputes it). Personal data is handled as ingestion handles it
    before the model or the log sees it: hashed (with the lake's salt) or dropped.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    passthrough: tuple[str, ...] = ()
    booleans: tuple[str, ...] = ()
    spellings: dict[str, tuple[str, str]] = field(default_factory=dict)
    hashed: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    id_column: str | None = None
    salt: bytes | None = None

    @classmethod
    def from_signature(
        cls,
        signature: list[list[str]],
        passthrough: list[str] | tuple[str, ...] = (),
        dataset: DatasetInputs | None = None,
    ) -> FeatureSchema:
        """A version's inputs from its recorded signature (and what the dataset declares).

        A column is boolean when its signature kind is `boolean`, or when it is categorical in
        the signature and `boolean` in the lake's schema (the pipeline saw `True`/`False`).
        """
        dataset = dataset or DatasetInputs()
        lake_booleans = set(dataset.booleans)
        booleans = tuple(
            name
            for name, kind in signature
            if kind == BOOLEAN or (kind == "categorical" and name in lake_booleans)
        )
        numeric = tuple(name for name, kind in signature if kind == "numeric")
        categorical = tuple(
            name for name, kind in signature if kind == "categorical" and name not in booleans
        )
        features = set(numeric) | set(categorical) | set(booleans)
        declared = tuple(dict.fromkeys([*passthrough, *dataset.passthrough]))
        handling = dataset.handling
        return cls(
            numeric,
            categorical,
            tuple(p for p in declared if p not in features),
            booleans,
            {n: p for n, p in dataset.spellings.items() if n in categorical},
            tuple(c for c, h in handling.items() if h == "hash" and c not in booleans),
            tuple(c for c, h in handling.items() if h == "drop" and c not in features),
            dataset.id_column if dataset.id_column not in features else None,
            dataset.salt,
        )

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical + self.booleans

    def record_json_schema(self) -> dict[str, Any]:
        """JSON Schema of one record (used in the OpenAPI document)."""
        properties: dict[str, Any] = {n: {"type": ["number", "null"]} for n in self.numeric}
        properties.update({n: {"type": ["string", "null"]} for n in self.categorical})
        flag = {
            "anyOf": [
                {"type": ["boolean", "null"]},
                {"enum": [0, 1, *sorted(TRUE_VALUES), *sorted(FALSE_VALUES), "True", "False"]},
            ]
        }
        properties.update({n: flag for n in self.booleans})
        properties.update({n: {"type": ["string", "boolean", "null"]} for n in self.spellings})
        properties.update({n: {"type": ["string", "number", "null"]} for n in self.passthrough})
        return {
            "type": "object",
            "properties": properties,
            "required": list(self.features),
            "additionalProperties": False,
        }


@dataclass(frozen=True)
class Records:
    """Checked records in columns: features for the model, passthrough values for the log.

    Personal data is already hashed (or dropped) in both; `ids` are the ids as sent, for the
    answer only (None without a declared id column).
    """

    columns: dict[str, list[Any]]
    extras: list[dict[str, Any]]
    n: int
    ids: list[Any] | None = None

    def rows(self, schema: FeatureSchema) -> list[dict[str, Any]]:
        """One dict per record (features then passthrough) for the prediction log."""
        names = schema.features
        cols = [self.columns[n] for n in names]
        out = []
        for i in range(self.n):
            row = {name: col[i] for name, col in zip(names, cols, strict=True)}
            row.update(self.extras[i])
            out.append(row)
        return out


def shown(name: Any) -> str:
    """A field name as a message shows it: quoted when it is empty, blank or unprintable."""
    text = str(name)
    return text if text.strip() and text.isprintable() and text == text.strip() else repr(text)


def describe(value: Any) -> str:
    """A value's JSON kind and its text, cut short: `string 'abc'`, `boolean False`."""
    kind = {
        bool: "boolean",
        str: "string",
        int: "number",
        float: "number",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text[:40] + '...' if len(text) > 40 else text}"


def _number(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(
            f"{where}: expected a number or null, got {describe(value)}", field=where
        )
    try:
        number = float(value)
    except OverflowError:
        raise RequestError(f"{where}: number out of range", field=where) from None
    if not math.isfinite(number):
        raise RequestError(
            f"{where}: {number} is not allowed (send null for a missing value)", field=where
        )
    if type(value) is int and -(2**53) < value < 2**53:
        return value  # kept exact for the prediction log; the model frame is float anyway
    return number


def _category(value: Any, where: str) -> Any:
    if value is None:
        return np.nan
    if isinstance(value, str):
        return value
    raise RequestError(f"{where}: expected a string or null, got {describe(value)}", field=where)


def _spelled(value: Any, where: str, spelling: tuple[str, str]) -> Any:
    """A categorical field holding boolean text: JSON booleans (and boolean strings) become
    the category's own spelling; other strings pass as they are (an unseen category)."""
    if isinstance(value, bool):
        return spelling[value]
    if isinstance(value, str) and value.strip().lower() in _BOOLEAN_TEXT:
        return spelling[_BOOLEAN_TEXT[value.strip().lower()]]
    return _category(value, where)


def _boolean(value: Any, where: str) -> Any:
    """A boolean as the pipeline reads it: its text `True`/`False` (`prepare_features` encodes
    a stored boolean column so), NaN when missing."""
    parsed = parse_boolean(value, where)
    return np.nan if parsed is None else str(parsed)


def check_records(
    records: Any, schema: FeatureSchema, where: str = "records", max_records: int | None = None
) -> Records:
    """Check a list of records (or one record) against a model's schema.

    Raises:
        RequestError: 422 naming the record and field (`records[3].income: ...`).
    """
    if isinstance(records, dict):
        records = [records]
        single = True
    else:
        single = False
    if not isinstance(records, list):
        raise RequestError(
            f"{where}: expected a list of records (objects), got {describe(records)}", field=where
        )
    if not records:
        raise RequestError(f"{where}: empty, send at least one record", field=where)
    if max_records is not None and len(records) > max_records:
        raise RequestError(
            f"{where}: {len(records)} records, at most {max_records} per request", 413, where
        )
    features = set(schema.features)
    allowed = features | set(schema.passthrough)
    numeric = {n: [] for n in schema.numeric}
    categorical = {n: [] for n in schema.categorical if n not in schema.spellings}
    spelled = {n: [] for n in schema.spellings}
    booleans = {n: [] for n in schema.booleans}
    id_column = schema.id_column
    ids: list[Any] | None = [] if id_column else None
    extras: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        at = where if single else f"{where}[{i}]"
        if not isinstance(record, dict):
            raise RequestError(f"{at}: expected an object, got {describe(record)}", field=at)
        if len(record) != len(features) or not features.issubset(record):
            missing = [n for n in schema.features if n not in record]
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                field = f"{at}.{missing[0]}"
                raise RequestError(f"{field}: missing field{more}", field=field)
            unknown = [k for k in record if k not in allowed]
            if unknown:
                field = f"{at}.{shown(unknown[0])}"
                raise RequestError(
                    f"{field}: unknown field (expected: {', '.join(schema.features)})",
                    field=field,
                )
        for name, col in numeric.items():
            col.append(_number(record[name], f"{at}.{name}"))
        for name, col in categorical.items():
            col.append(_category(record[name], f"{at}.{name}"))
        for name, col in spelled.items():
            col.append(_spelled(record[name], f"{at}.{name}", schema.spellings[name]))
        for name, col in booleans.items():
            col.append(_boolean(record[name], f"{at}.{name}"))
        extra = {}
        if len(record) > len(features):
            for key in schema.passthrough:
                if key in record:
                    value = record[key]
                    if isinstance(value, dict | list):
                        raise RequestError(
                            f"{at}.{key}: expected a scalar, got {describe(value)}",
                            field=f"{at}.{key}",
                        )
                    extra[key] = value
        if ids is not None:
            ids.append(extra.get(id_column))
        extras.append(extra)
    columns = {**numeric, **categorical, **spelled, **booleans}
    if schema.hashed or schema.dropped:
        _handle_personal(columns, extras, schema)
    return Records(columns, extras, len(records), ids)


def _handle_personal(
    columns: dict[str, list[Any]], extras: list[dict[str, Any]], schema: FeatureSchema
) -> None:
    """Hash (with the lake's salt) or drop personal data in place, as ingestion does."""
    from ctloop.data.privacy import hash_value

    salt = schema.salt or b""
    for name in schema.hashed:
        if name in columns:
            columns[name] = [
                v if isinstance(v, float) else hash_value(v, salt) for v in columns[name]
            ]
    for extra in extras:
        for name in schema.dropped:
            extra.pop(name, None)
        for name in schema.hashed:
            if name in extra:
                extra[name] = hash_value(extra[name], salt)


def to_frame(columns: dict[str, list[Any]], schema: FeatureSchema) -> pd.DataFrame:
    """The model's input frame (as `ctloop.model.train.prepare_features` builds it), fast."""
    data: dict[str, Any] = {}
    for name in schema.numeric:
        data[name] = np.asarray(columns[name], dtype=float)
    for name in schema.categorical + schema.booleans:
        data[name] = np.asarray(columns[name], dtype=object)
    return pd.DataFrame(data, columns=list(schema.features), copy=False)


def concat_columns(parts: list[dict[str, list[Any]]], names: tuple[str, ...]) -> dict[str, list]:
    """Join the columns of several requests into one batch."""
    if len(parts) == 1:
        return parts[0]
    return {n: [v for part in parts for v in part[n]] for n in names}


def _records_from_columns(columns: Any, where: str) -> list[dict[str, Any]]:
    if not all(isinstance(v, list) for v in columns.values()):
        return [columns]  # one record given as {column: value}
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise RequestError(f"{where}: columns have different lengths {sorted(lengths)}", 400, where)
    n = lengths.pop() if lengths else 0
    names = list(columns)
    return [{name: columns[name][i] for name in names} for i in range(n)]


def mlflow_records(payload: Any) -> tuple[list[Any], str]:
    """Records of an MLflow scoring payload, and the key they came under.

    Accepts `dataframe_split` ({columns, data[, index]}), `dataframe_records` (list of objects),
    `instances` and `inputs` (list of objects, or {column: [values]}), as `mlflow models serve`.
    """
    if not isinstance(payload, dict):
        raise RequestError(
            "expected a JSON object with one of the keys " + ", ".join(MLFLOW_FORMATS), 400
        )
    keys = [k for k in MLFLOW_FORMATS if k in payload]
    unknown = [k for k in payload if k not in MLFLOW_FORMATS and k != "params"]
    if len(keys) != 1:
        found = ", ".join(payload) or "none"
        raise RequestError(
            f"expected exactly one of the keys {', '.join(MLFLOW_FORMATS)}; got: {found}", 400
        )
    if unknown:
        raise RequestError(f"{shown(unknown[0])}: unknown key", 400, shown(unknown[0]))
    key = keys[0]
    data = payload[key]
    if key == "dataframe_split":
        if not isinstance(data, dict):
            raise RequestError(f"{key}: expected an object with columns and data", 400, key)
        columns, rows = data.get("columns"), data.get("data")
        extra = [shown(k) for k in data if k not in ("columns", "data", "index")]
        if extra:
            raise RequestError(f"{key}.{extra[0]}: unknown key", 400, f"{key}.{extra[0]}")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise RequestError(f"{key}.columns: expected a list of names", 400, f"{key}.columns")
        if len(set(columns)) != len(columns):
            raise RequestError(f"{key}.columns: duplicate names", 400, f"{key}.columns")
        if not isinstance(rows, list):
            raise RequestError(f"{key}.data: expected a list of rows", 400, f"{key}.data")
        records = []
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(columns):
                raise RequestError(
                    f"{key}.data[{i}]: expected a list of {len(columns)} values",
                    400,
                    f"{key}.data[{i}]",
                )
            records.append(dict(zip(columns, row, strict=True)))
        return records, key
    if key == "dataframe_records":
        if not isinstance(data, list):
            raise RequestError(f"{key}: expected a list of records", 400, key)
        return data, key
    if isinstance(data, dict):
        return _records_from_columns(data, key), key
    if isinstance(data, list):
        return data, key
    raise RequestError(f"{key}: expected a list of records or an object of columns", 400, key)


def csv_records(body: bytes) -> list[dict[str, Any]]:
    """Records of a CSV body (header row, then one record a line), as MLflow accepts."""
    try:
        frame = pd.read_csv(io.BytesIO(body))
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise RequestError(f"malformed CSV: {str(exc).splitlines()[0]}", 400) from None
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict(orient="records")
