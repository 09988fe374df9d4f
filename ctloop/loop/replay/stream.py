"""A labelled history as the replay's stream: its batches, when their labels arrive and when
the retrain deployment's schedule fires, all on the data's own clock (naive UTC)."""

from __future__ import annotations

import warnings
from datetime import datetime

import numpy as np
import pandas as pd

from ctloop.data.batches import parse_times
from ctloop.errors import InputError
from ctloop.lake.snapshots import Manifest


def split_batches(frame: pd.DataFrame, timestamp: str, freq: str) -> list[tuple[str, pd.DataFrame]]:
    """Cut a labelled history into consecutive batches of `freq` (a pandas frequency)."""
    if timestamp not in frame.columns:
        raise InputError(f"timestamp column '{timestamp}' is not in the data")
    # one clock for the whole replay: naive UTC
    raw = frame[timestamp]
    if pd.api.types.is_datetime64_any_dtype(raw):
        stamps = pd.to_datetime(raw, utc=True).dt.tz_localize(None)
    elif pd.api.types.is_numeric_dtype(raw):  # as ingest: a number is not a date
        shown = ", ".join(map(str, raw.dropna().head(3).tolist()))
        raise InputError(
            f"timestamp column '{timestamp}' holds numbers ({shown} ...), not dates or "
            "date-times; write it as dates first (e.g. an ordinal day or epoch seconds)"
        )
    else:
        stamps = parse_times(raw)
    check_times(raw, stamps, timestamp)
    try:
        with warnings.catch_warnings():  # a deprecated alias warns before it fails
            warnings.simplefilter("ignore")
            pd.tseries.frequencies.to_offset(freq)
    except ValueError:
        raise InputError(f"--freq {freq!r}: not a pandas frequency (e.g. 1D, 12h, 1W)") from None
    frame = frame.assign(**{timestamp: stamps})
    frame = frame.sort_values(timestamp, kind="stable").reset_index(drop=True)
    groups = frame.groupby(pd.Grouper(key=timestamp, freq=freq), sort=True)
    return [(str(k)[:19], g.reset_index(drop=True)) for k, g in groups if len(g)]


def check_times(raw: pd.Series, stamps: pd.Series, timestamp: str) -> None:
    """Every row is placed by its time: a value that is missing or not a date is an error
    naming how many and the first one (a row is never dropped without a word).

    Raises:
        InputError: the column, the count, the first row (1-based) and its value.
    """
    rows = len(raw)
    if stamps.isna().all():
        raise InputError(f"timestamp column '{timestamp}': no value parses as a date")
    for bad, what in ((stamps.isna() & raw.notna(), "not dates"), (raw.isna(), "missing")):
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            label = raw.index[first]  # a file's row (1-based) when the index counts its rows
            row = int(label) + 1 if isinstance(label, int | np.integer) else first + 1
            value = f", {raw.iloc[first]!r}" if what == "not dates" else ""
            raise InputError(
                f"timestamp column '{timestamp}': {int(bad.sum())} of {rows} values are "
                f"{what} (first: row {row}{value}); replay places every row by its "
                "time: fix or drop those rows"
            )


def cron_fires(cron: str | None, start: str, end: str) -> list[str]:
    """The times a Prefect `Cron(cron)` schedule (UTC) fires in [start, end], as naive UTC ISO
    strings (the replay's clock); none without a cron. Prefect's own scheduler computes them."""
    if not cron:
        return []
    from datetime import UTC, timedelta

    from prefect.server.schemas.schedules import CronSchedule
    from prefect.utilities.asyncutils import run_coro_as_sync

    schedule = CronSchedule(cron=cron, timezone="UTC")
    lo = datetime.fromisoformat(start).replace(tzinfo=UTC)
    hi = datetime.fromisoformat(end).replace(tzinfo=UTC)
    fires: list[str] = []
    while lo <= hi:  # Prefect returns at most 1000 dates a call
        dates = run_coro_as_sync(schedule.get_dates(n=1000, start=lo, end=hi))
        if not dates:
            break
        fires += [d.astimezone(UTC).replace(tzinfo=None).isoformat() for d in dates]
        lo = dates[-1] + timedelta(seconds=1)
    return fires


def parse_label_delay(value: int | str | None) -> int | pd.Timedelta:
    """`--label-delay`: a whole number of batches (`3`) or a duration (`2D`, `12h`, `1W`)."""
    if value is None or value == "":
        return 0
    if isinstance(value, int) or str(value).strip().isdigit():
        return int(value)
    try:
        delay = pd.Timedelta(str(value).strip())
    except ValueError:
        delay = None
    if delay is None or pd.isna(delay) or delay < pd.Timedelta(0):
        raise InputError(
            f"--label-delay {value!r}: not a number of batches (3) or a duration (2D, 12h, 1W)"
        )
    return delay


def label_arrivals(manifests: list[Manifest], delay: int | pd.Timedelta) -> list[int]:
    """For each batch, the first batch after which its labels are known (len: never).

    A number `N`: with the batch `N` later. A duration: with the first batch whose newest row
    is at least `delay` after this batch's newest row, so that every row's label arrives no
    earlier than its own time + delay.
    """
    n = len(manifests)
    if isinstance(delay, int):
        return [min(j + delay, n) for j in range(n)]
    ends = [pd.Timestamp(m.time_max) for m in manifests]
    arrivals, i = [], 0
    for j in range(n):
        i = max(i, j)
        while i < n and ends[i] < ends[j] + delay:
            i += 1
        arrivals.append(i)
    return arrivals


def batch_manifest(index: int, batch: pd.DataFrame, timestamp: str) -> Manifest:
    """Batch `index` as the live lake would list it: its rows, columns and time span."""
    lo, hi = batch[timestamp].min(), batch[timestamp].max()
    return Manifest(
        snapshot=f"b{index:05d}",
        sha256="",
        source=f"batch {index}",
        rows=len(batch),
        columns=list(batch.columns),
        schema_version=1,
        arrived_at=hi.isoformat(),
        time_min=lo.isoformat(),
        time_max=hi.isoformat(),
    )
