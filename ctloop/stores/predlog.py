"""The prediction log: every served and shadow prediction, written off the request path.

Rows go to a queue; one writer thread drains it in batches into an SQL store (SQLite under the
home by default, PostgreSQL by URL in the cluster profile). Feedback (true labels by request id)
lands in a second table; joining both gives online metrics per version and new labelled rows.
A client's request id is claimed in a third table whose key is the id, so every server replica
sharing the log sees one claim: of two racing on one id, exactly one inserts it.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

log = logging.getLogger("ctloop.serving")

SERVED = "served"
SHADOW = "shadow"


@dataclass(frozen=True)
class LoggedPrediction:
    """One record's prediction, as the writer stores it."""

    request_id: str
    row: int
    ts: float
    version: int
    target: str
    role: str
    features: dict[str, Any]
    prediction: Any
    score: float | None
    key: str | None = None


def default_log_url(home_root: Path) -> str:
    return f"sqlite:///{(home_root / 'predictions' / 'predictions.db').resolve()}"


def _tables(metadata):
    from sqlalchemy import Column, Float, Index, Integer, String, Table, Text

    predictions = Table(
        "predictions",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("request_id", String(128), nullable=False),
        Column("row", Integer, nullable=False),
        Column("ts", Float, nullable=False),
        Column("version", Integer, nullable=False),
        Column("target", String(32), nullable=False),
        Column("role", String(16), nullable=False),
        Column("features", Text, nullable=False),
        Column("prediction", Text, nullable=False),
        Column("score", Float, nullable=True),
        Column("key", String(256), nullable=True),
        Index("ix_predictions_request", "request_id", "row"),
    )
    feedback = Table(
        "feedback",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("request_id", String(128), nullable=False),
        Column("row", Integer, nullable=False),
        Column("label", Text, nullable=False),
        Column("ts", Float, nullable=False),
        Index("ix_feedback_request", "request_id", "row"),
    )
    claims = Table(
        "request_claims",
        metadata,
        Column("request_id", String(128), primary_key=True),  # one claim per id, all replicas
        Column("ts", Float, nullable=False),
    )
    return predictions, feedback, claims


def _create_tables(metadata, engine, attempts: int = 5) -> None:
    """Create what is missing; replicas starting at once on a new log may race to create a
    table (`already exists`): the loser looks again and finds it made."""
    from sqlalchemy.exc import DBAPIError

    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except DBAPIError as exc:
            if attempt == attempts - 1 or "exist" not in str(exc).lower():
                raise
            time.sleep(0.05 * (attempt + 1))


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


class PredictionLog:
    """A durable, batched log of predictions and feedback in one SQL database."""

    def __init__(
        self,
        url: str,
        batch_rows: int = 1000,
        flush_seconds: float = 0.5,
        max_queue_rows: int = 200_000,
    ):
        from sqlalchemy import MetaData, create_engine, event

        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.engine = create_engine(url, future=True)
        if url.startswith("sqlite"):

            @event.listens_for(self.engine, "connect")
            def _pragmas(conn, _record):  # WAL: readers never block the writer
                cur = conn.cursor()
                cur.execute("PRAGMA busy_timeout=10000")  # first: replicas open it at once
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

        metadata = MetaData()
        self.predictions, self.feedback, self.claims = _tables(metadata)
        _create_tables(metadata, self.engine)
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_queue_rows = max_queue_rows
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._written = 0
        self._dropped = 0
        self._write_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- writing --------------------------------------------------------------------------------

    def start(self) -> PredictionLog:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ctloop-predlog", daemon=True)
            self._thread.start()
        return self

    def append(self, rows: list[LoggedPrediction]) -> bool:
        """Queue rows for the writer (never blocks); False when the queue is full (dropped)."""
        with self._count_lock:
            if self._pending + len(rows) > self.max_queue_rows:
                self._dropped += len(rows)
                return False
            self._pending += len(rows)
        self._queue.put(rows)
        return True

    @property
    def stats(self) -> dict[str, int]:
        return {"pending": self._pending, "written": self._written, "dropped": self._dropped}

    def _drain(self, limit: int) -> list[LoggedPrediction]:
        out: list[LoggedPrediction] = []
        while len(out) < limit:
            try:
                out.extend(self._queue.get_nowait())
            except queue.Empty:
                break
        return out

    def _write(self, rows: list[LoggedPrediction]) -> None:
        if not rows:
            return
        values = [
            {
                "request_id": r.request_id,
                "row": r.row,
                "ts": r.ts,
                "version": r.version,
                "target": r.target,
                "role": r.role,
                "features": _json(r.features),
                "prediction": _json(r.prediction),
                "score": r.score,
                "key": r.key,
            }
            for r in rows
        ]
        with self.engine.begin() as conn:
            conn.execute(self.predictions.insert(), values)
        with self._count_lock:
            self._written += len(rows)
            self._pending -= len(rows)

    def flush(self) -> None:
        """Write everything queued so far (the writer thread or the caller, never both at once)."""
        with self._write_lock:
            while True:
                rows = self._drain(self.batch_rows)
                if not rows:
                    return
                self._write(rows)

    def _run(self) -> None:
        while not self._stop.is_set():
            deadline = time.monotonic() + self.flush_seconds
            while self._pending < self.batch_rows and time.monotonic() < deadline:
                if self._stop.wait(0.02):
                    break
            try:
                self.flush()
            except Exception:  # the store is down: keep serving, retry on the next tick
                log.exception("prediction log: write failed; will retry")
                self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            self.flush()
        finally:
            self.engine.dispose()

    # -- feedback and reads ---------------------------------------------------------------------

    def served_rows(self, request_id: str) -> dict[int, int]:
        """The records a request id has in the log: record index -> version that served it."""
        from sqlalchemy import select

        p = self.predictions
        query = select(p.c.row, p.c.version).where(p.c.request_id == request_id, p.c.role == SERVED)
        with self.engine.connect() as conn:
            return {int(row): int(version) for row, version in conn.execute(query)}

    def claim(self, request_id: str) -> bool:
        """Reserve a request id given by a client for one request; False when it was used.

        Used means claimed before, by this server or any other sharing the log (served, or
        being served now), or served before claims were kept: a request id names one request,
        so one label can only ever join one served record. The claim is one INSERT of the id
        as a primary key, atomic across processes and hosts: of replicas racing on one id,
        exactly one gets True. Release a claim whose request failed (`release`).
        """
        from sqlalchemy import select
        from sqlalchemy.exc import IntegrityError

        p = self.predictions
        served = select(p.c.id).where(p.c.request_id == request_id, p.c.role == SERVED).limit(1)
        try:
            with self.engine.begin() as conn:
                conn.execute(self.claims.insert().values(request_id=request_id, ts=time.time()))
                # a log written by an older ctloop holds served ids without a claim
                return conn.execute(served).first() is None
        except IntegrityError:
            return False

    def release(self, request_id: str) -> None:
        """Give back a claimed request id (its request failed before anything was logged).

        Never raises: when the store cannot be written the id stays used (the safe side)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(self.claims.delete().where(self.claims.c.request_id == request_id))
        except Exception as exc:
            log.warning("prediction log: request id %r stays used: %s", request_id, exc)

    def add_feedback(self, items: Iterable[tuple[str, int, Any]]) -> int:
        """Store true labels as (request id, row, label); the latest label of a row wins."""
        return self.record_feedback(items)[0]

    def record_feedback(self, items: Iterable[tuple[str, int, Any]]) -> tuple[int, int]:
        """Store true labels; returns (stored, updates).

        A label for a row that already has one is an update: it is stored with its time, the
        earlier label is kept (the log is append-only) and the latest wins in `joined`, so a
        row counts once in online metrics however often it is labelled.
        """
        from sqlalchemy import select

        now = time.time()
        items = list(items)
        values = [
            {"request_id": rid, "row": row, "label": _json(label), "ts": now}
            for rid, row, label in items
        ]
        if not values:
            return 0, 0
        f = self.feedback
        ids = sorted({rid for rid, _row, _label in items})
        with self.engine.begin() as conn:
            labelled = set()
            for start in range(0, len(ids), 500):
                query = select(f.c.request_id, f.c.row).where(
                    f.c.request_id.in_(ids[start : start + 500])
                )
                labelled.update((rid, int(row)) for rid, row in conn.execute(query))
            updates = 0
            for rid, row, _label in items:
                updates += (rid, row) in labelled
                labelled.add((rid, row))
            conn.execute(f.insert(), values)
        return len(values), updates

    def read(self, role: str | None = None) -> pd.DataFrame:
        """The logged predictions (features and outputs decoded), oldest first."""
        from sqlalchemy import select

        self.flush()
        query = select(self.predictions).order_by(self.predictions.c.id)
        if role:
            query = query.where(self.predictions.c.role == role)
        with self.engine.connect() as conn:
            frame = pd.DataFrame(conn.execute(query).mappings().all())
        if frame.empty:
            return frame
        frame["features"] = [orjson.loads(v) for v in frame["features"]]
        frame["prediction"] = [orjson.loads(v) for v in frame["prediction"]]
        return frame

    def joined(self) -> pd.DataFrame:
        """Predictions (served and shadow) with a true label: one row per version and record."""
        from sqlalchemy import func, select

        self.flush()
        p, f = self.predictions, self.feedback
        latest = (
            select(f.c.request_id, f.c.row, func.max(f.c.id).label("fid"))
            .group_by(f.c.request_id, f.c.row)
            .subquery()
        )
        query = (
            select(
                p.c.request_id,
                p.c.row,
                p.c.ts,
                p.c.version,
                p.c.target,
                p.c.role,
                p.c.features,
                p.c.prediction,
                p.c.score,
                f.c.label,
            )
            .join(latest, (latest.c.request_id == p.c.request_id) & (latest.c.row == p.c.row))
            .join(f, f.c.id == latest.c.fid)
            .order_by(p.c.id)
        )
        with self.engine.connect() as conn:
            frame = pd.DataFrame(conn.execute(query).mappings().all())
        if frame.empty:
            return frame
        # a request id sent again is one served record, not several: one label counts once
        frame = frame.drop_duplicates(["request_id", "row", "version", "role"], keep="last")
        frame = frame.reset_index(drop=True)
        for col in ("features", "prediction", "label"):
            frame[col] = [orjson.loads(v) for v in frame[col]]
        return frame


def online_metrics(joined: pd.DataFrame, task: str) -> list[dict[str, Any]]:
    """Metrics per (version, role) from the joined log: what each version scored on live traffic."""
    from sklearn import metrics as skm

    out: list[dict[str, Any]] = []
    if joined.empty:
        return out
    for (version, role), group in joined.groupby(["version", "role"], sort=True):
        y_true = group["label"].tolist()
        y_pred = group["prediction"].tolist()
        row: dict[str, Any] = {"version": int(version), "role": role, "labelled": len(group)}
        if task == "regression":
            t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
            row["mae"] = float(np.mean(np.abs(t - p)))
            row["rmse"] = float(math.sqrt(np.mean((t - p) ** 2)))
        else:
            t, p = [str(v) for v in y_true], [str(v) for v in y_pred]
            row["accuracy"] = float(skm.accuracy_score(t, p))
            scores = group["score"]
            if task == "binary" and scores.notna().all() and len(set(t)) == 2:
                positive = _positive_label(group)
                row["roc_auc"] = float(
                    skm.roc_auc_score([v == positive for v in t], scores.astype(float))
                )
        out.append(row)
    return out


def _positive_label(group: pd.DataFrame) -> str:
    """The class whose probability `score` holds: the larger label, as sklearn orders classes."""
    seen = {*group["label"].tolist(), *group["prediction"].tolist()}
    try:
        return str(sorted(seen)[-1])
    except TypeError:  # mixed types: sklearn would refuse them too; compare as text
        return sorted(str(v) for v in seen)[-1]


def labelled_rows(
    joined: pd.DataFrame, target: str, timestamp: str | None, id_col: str | None
) -> pd.DataFrame:
    """Served predictions with their true labels as a landing batch for `ctloop ingest`.

    Features as sent, the label under the target column; the timestamp and id columns are the
    record's own when it carried them, else the prediction time and `request_id:row`.
    """
    served = joined[joined["role"] == SERVED]
    records = []
    for r in served.itertuples(index=False):
        record = dict(r.features)
        if timestamp and record.get(timestamp) is None:
            record[timestamp] = datetime.fromtimestamp(r.ts, UTC).replace(tzinfo=None).isoformat()
        if id_col and record.get(id_col) is None:
            record[id_col] = f"{r.request_id}:{r.row}"
        record[target] = r.label
        records.append(record)
    return pd.DataFrame.from_records(records)
