"""Live model versions: loading from the registry, scoring a batch, and the warm-up check."""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ctloop.serving.inputs import DatasetInputs, FeatureSchema, check_records, to_frame


class WarmupFailed(Exception):
    """A version failed infra validation on warm-up rows; it is never swapped in."""

    def __init__(self, version: int, reason: str):
        super().__init__(f"version {version} failed warm-up: {reason}")
        self.version = version
        self.reason = reason


@dataclass(frozen=True)
class Scores:
    """Outputs of one model call: labels (or values) and, for classifiers, probabilities."""

    predictions: list[Any]
    probabilities: list[Any] | None

    def slice(self, start: int, stop: int) -> Scores:
        probs = self.probabilities[start:stop] if self.probabilities is not None else None
        return Scores(self.predictions[start:stop], probs)


@dataclass
class LoadedModel:
    """One fitted pipeline with its registry identity and input schema."""

    version: int
    semver: str
    pipeline: Any
    schema: FeatureSchema
    example: list[dict[str, Any]] = field(default_factory=list)
    loaded_at: float = field(default_factory=time.time)
    warmup_ms: float | None = None

    @property
    def classes(self) -> list[Any] | None:
        classes = getattr(self.pipeline, "classes_", None)
        return None if classes is None else classes.tolist()

    def score_frame(self, frame: pd.DataFrame) -> Scores:
        """Score a model input frame: one `predict_proba` call for classifiers."""
        if hasattr(self.pipeline, "predict_proba"):
            proba = np.asarray(self.pipeline.predict_proba(frame))
            classes = self.pipeline.classes_
            labels = classes[np.argmax(proba, axis=1)].tolist()
            if proba.shape[1] == 2:
                return Scores(labels, proba[:, 1].tolist())
            names = [str(c) for c in classes.tolist()]
            return Scores(labels, [dict(zip(names, row, strict=True)) for row in proba.tolist()])
        values = np.asarray(self.pipeline.predict(frame)).tolist()
        return Scores(values, None)

    def score_columns(self, columns: dict[str, list[Any]]) -> Scores:
        return self.score_frame(to_frame(columns, self.schema))

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "semver": self.semver,
            "features": [[n, "numeric"] for n in self.schema.numeric]
            + [[n, "categorical"] for n in self.schema.categorical]
            + [[n, "boolean"] for n in self.schema.booleans],
            "loaded_at": self.loaded_at,
            "warmup_ms": self.warmup_ms,
        }


def warmup_rows(model: LoadedModel, n: int) -> list[dict[str, Any]]:
    """Rows a version must score before it serves: its logged input example, plus edge cases.

    Edge cases are what live traffic will send: missing values everywhere, unseen categories,
    zeros and large numbers.
    """
    rows = [dict(r) for r in model.example]
    base = rows[0] if rows else {}
    edge = [
        {n: None for n in model.schema.features},
        {
            **{n: 0.0 for n in model.schema.numeric},
            **{n: "__unseen__" for n in model.schema.categorical},
            **{n: True for n in model.schema.booleans},
        },
        {
            **{n: 1e6 for n in model.schema.numeric},
            **{n: base.get(n) for n in model.schema.categorical},
            **{n: False for n in model.schema.booleans},
        },
    ]
    rows.extend(edge)
    while len(rows) < n:
        rows.extend(rows[: n - len(rows)])
    return rows[: max(n, 1)]


def warm_up(model: LoadedModel, n: int = 32) -> LoadedModel:
    """Infra validation: score warm-up rows one by one and as a batch; outputs must be sane.

    Raises:
        WarmupFailed: the version raised, or returned the wrong count or non-finite outputs.
    """
    from threadpoolctl import threadpool_limits

    rows = warmup_rows(model, n)
    start = time.perf_counter()
    try:
        with threadpool_limits(1):  # as the serving threads score
            records = check_records(rows, model.schema, "warmup")
            batch = model.score_columns(records.columns)
            single = model.score_columns(check_records(rows[:1], model.schema, "warmup").columns)
    except Exception as exc:  # any failure of the model is a failed validation
        raise WarmupFailed(model.version, f"{type(exc).__name__}: {exc}") from exc
    elapsed = (time.perf_counter() - start) * 1000
    if len(batch.predictions) != len(rows) or len(single.predictions) != 1:
        raise WarmupFailed(
            model.version, f"{len(batch.predictions)} outputs for {len(rows)} warm-up rows"
        )
    values = batch.probabilities if batch.probabilities is not None else batch.predictions
    flat = [v for row in values for v in (row.values() if isinstance(row, dict) else [row])]
    bad = [v for v in flat if not isinstance(v, int | float | str | bool) or _nonfinite(v)]
    if bad:
        raise WarmupFailed(model.version, f"non-finite output {bad[0]!r} on warm-up rows")
    if batch.predictions[0] != single.predictions[0]:
        raise WarmupFailed(model.version, "batch and single-row answers differ")
    model.warmup_ms = round(elapsed, 2)
    return model


def _nonfinite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def load_version(
    registry,
    ref,
    passthrough: list[str] | tuple[str, ...] = (),
    dataset: DatasetInputs | None = None,
) -> LoadedModel:
    """Download a registered version once, load its pipeline and its logged input example.

    `dataset`: what the config and the lake's schema declare (id, booleans, personal data).
    """
    import os

    from mlflow.models import Model

    from ctloop.registry.store import load_model_dir

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    if not ref.signature:
        raise WarmupFailed(ref.version, "no ctloop.signature tag: its inputs are unknown")
    schema = FeatureSchema.from_signature(ref.signature, passthrough, dataset)
    with tempfile.TemporaryDirectory(prefix="ctloop-model-") as tmp:
        local = registry.download(ref, tmp)
        # ctloop's own trusted-type list, not the one stored in the model; pickles refused
        pipeline = load_model_dir(local, getattr(registry, "allow_pickle", False))
        example: list[dict[str, Any]] = []
        try:
            frame = Model.load(local).load_input_example(local)
        except Exception:  # an example is optional; the edge rows still run
            frame = None
        if isinstance(frame, pd.DataFrame):
            frame = frame.reindex(columns=list(schema.features))
            frame = frame.astype(object).where(frame.notna(), None)
            example = frame.to_dict(orient="records")
            if schema.hashed:  # the example holds the lake's hashes: they are not raw input
                for row in example:
                    for name in schema.hashed:
                        if name in row:
                            row[name] = "__example__"
    return LoadedModel(ref.version, ref.semver, pipeline, schema, example)


def read_dataset_inputs(config) -> DatasetInputs:
    """What the config and the lake's newest schema declare for the server's inputs.

    Reads the schema (and the salt, when a column is hashed) once; a home without a lake yet
    gives the config's id, timestamp and excluded columns only.
    """
    from ctloop.data.privacy import load_salt
    from ctloop.lake.snapshots import current_schema
    from ctloop.stores.home import home_of
    from ctloop.stores.storage import open_lake

    home = home_of(config)
    try:
        schema = current_schema(home)
    except FileNotFoundError:
        schema = None
    hashed = (
        schema is not None
        and any(c.handling == "hash" for c in schema.columns.values())
        or any(h == "hash" for h in config.personal_data.columns.values())
    )
    salt = load_salt(config.personal_data, open_lake(home).root) if hashed else None
    return DatasetInputs.of(config.dataset, schema, config.personal_data, salt)
