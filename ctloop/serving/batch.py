"""Batch scoring: a file or lake snapshot scored by one version; predictions written atomically."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.config.settings import Config
from ctloop.errors import InputError
from ctloop.lake import snapshots as lake
from ctloop.model.train import prepare_features
from ctloop.registry.store import ModelRef
from ctloop.serving.models import read_dataset_inputs
from ctloop.stores.home import home_of


@dataclass(frozen=True)
class BatchScores:
    """Predictions of one batch and how long the model took on it."""

    frame: pd.DataFrame
    version: int
    semver: str
    model_seconds: float


def read_scoring_input(source: str, config: Config) -> pd.DataFrame:
    """A CSV/Parquet file by path, or a lake snapshot by id.

    Once the lake has a schema, a file is typed to it as ingestion types a batch (kinds, and
    personal data hashed with the lake's salt or dropped), so a file scores exactly as its
    snapshot would and no raw personal value reaches the model or the output.
    """
    home = home_of(config)
    if Path(source).is_file():
        schema = lake.current_schema(home)
        if schema is None:
            return lake.read_batch(source)
        return type_like_ingestion(source, schema, config)
    if lake.has_snapshot(home, source):
        return lake.load_snapshots(home, [source])
    raise InputError(f"{source}: neither a file nor a snapshot in the lake ({home.lake_url})")


def type_like_ingestion(source: str, schema, config: Config) -> pd.DataFrame:
    """A file's rows as the lake would store them (`ctloop.validate.checks.type_chunk`)."""
    import pyarrow as pa

    from ctloop.data.batches import read_chunks
    from ctloop.lake.sources import open_source
    from ctloop.validate.checks import type_chunk

    salt = read_dataset_inputs(config).salt
    size, delimiter = config.ingest.chunk_bytes, config.ingest.delimiter
    with open_source(source) as handle:  # one checked descriptor, as ingestion reads a file
        typed = [
            type_chunk(chunk, schema, salt)[0]
            for chunk in read_chunks(source, size, delimiter, handle=handle)
        ]
    if not typed:
        raise InputError(f"{source}: no rows to score")
    return pa.concat_tables(typed, promote_options="permissive").to_pandas()


def kept_columns(frame: pd.DataFrame, config: Config) -> list[str]:
    """The id and timestamp columns a predictions file keeps: the config's, else the schema's."""
    dataset = config.dataset
    names = [dataset.id, dataset.timestamp]
    if not dataset.id or not dataset.timestamp:
        schema = lake.current_schema(home_of(config))
        kinds = {c.name: c.kind for c in schema.columns.values()} if schema else {}
        names[0] = names[0] or next((c for c, k in kinds.items() if k == "id"), None)
        names[1] = names[1] or next((c for c, k in kinds.items() if k == "datetime"), None)
    return [c for c in dict.fromkeys(names) if c and c in frame.columns]


def score_batch_frame(pipeline, ref: ModelRef, frame: pd.DataFrame, config: Config) -> BatchScores:
    """Score every row with the model's own input preparation (as in training).

    The output keeps the id and timestamp columns when present (the config's, else those the
    lake's schema declares), then `prediction`,
    `probability` (binary: positive class; multiclass: one column per class), `version`.

    Raises:
        InputError: naming the feature columns the frame lacks.
    """
    numeric = [n for n, kind in ref.signature if kind == "numeric"]
    categorical = [n for n, kind in ref.signature if kind == "categorical"]
    missing = [c for c, _ in ref.signature if c not in frame.columns]
    if missing:
        raise InputError(
            f"batch lacks feature column(s) {', '.join(missing)} of version {ref.version}"
        )
    if frame.empty:
        raise InputError("batch has no rows to score")
    booleans = [n for n, kind in ref.signature if kind == "boolean"]
    X = prepare_features(frame, numeric, categorical + booleans)
    keep = kept_columns(frame, config)
    out = frame[keep].reset_index(drop=True).copy()
    start = time.perf_counter()
    if hasattr(pipeline, "predict_proba"):
        proba = _in_chunks(pipeline.predict_proba, X)
        classes = pipeline.classes_
        out["prediction"] = classes[np.argmax(proba, axis=1)]
        if proba.shape[1] == 2:
            out["probability"] = proba[:, 1]
        else:
            for i, label in enumerate(classes):
                out[f"probability_{label}"] = proba[:, i]
    else:
        out["prediction"] = _in_chunks(pipeline.predict, X)
    seconds = time.perf_counter() - start
    out["version"] = ref.version
    return BatchScores(out, ref.version, ref.semver, seconds)


def split_partitions(frame: pd.DataFrame, rows: int) -> list[pd.DataFrame]:
    """Consecutive slices of at most `rows` rows, in order (one, possibly empty, at least)."""
    if rows < 1:
        raise ValueError(f"partition rows must be positive, not {rows}")
    if len(frame) <= rows:
        return [frame]
    return [frame.iloc[start : start + rows] for start in range(0, len(frame), rows)]


def concat_scores(parts: list[BatchScores]) -> BatchScores:
    """Partition scores put back together in the order given (the input's row order).

    Raises:
        ValueError: no parts, or parts scored by different versions.
    """
    if not parts:
        raise ValueError("no scored partitions to put together")
    versions = {p.version for p in parts}
    if len(versions) > 1:
        raise ValueError(f"partitions were scored by different versions {sorted(versions)}")
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    return BatchScores(
        frame, parts[0].version, parts[0].semver, sum(p.model_seconds for p in parts)
    )


def _one_thread() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _in_chunks(predict, X: pd.DataFrame, min_rows: int = 20_000) -> np.ndarray:
    """Score row chunks on one thread per core, each with one OpenMP thread.

    The trees release the GIL, so threads scale; OpenMP's own threads are left out because on a
    busy machine their spinning barriers cost more than they give.
    """
    workers = min(os.cpu_count() or 1, max(1, len(X) // min_rows))
    if workers == 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return np.asarray(predict(X))
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.linspace(0, len(X), workers + 1).astype(int)
    chunks = [X.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    with ThreadPoolExecutor(workers, initializer=_one_thread) as pool:
        parts = list(pool.map(predict, chunks))
    return np.concatenate([np.asarray(p) for p in parts])


def write_predictions(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write Parquet (or CSV for a .csv name) via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        if path.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
