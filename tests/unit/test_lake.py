"""The lake: reading delivered files, content-addressed snapshots, windows and quarantine."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ctloop.errors import InputError, NotEnoughData
from ctloop.lake.snapshots import (
    Manifest,
    content_hash,
    list_quarantined,
    list_snapshots,
    load_snapshots,
    quarantine_batch,
    read_batch,
    select_window,
    write_snapshot,
)


def small_frame(day: int = 0, rows: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed + day)
    start = datetime(2026, 1, 5, 8) + timedelta(days=day)
    return pd.DataFrame(
        {
            "id": [f"r{day}-{i}" for i in range(rows)],
            "ts": [start + timedelta(minutes=10 * i) for i in range(rows)],
            "x": rng.normal(size=rows),
            "c": rng.choice(["a", "b"], rows).astype(object),
            "y": rng.integers(0, 2, rows),
        }
    )


# --- read_batch ---------------------------------------------------------------------------


def test_read_csv_and_parquet(tmp_path):
    frame = small_frame()
    frame.to_csv(tmp_path / "b.csv", index=False)
    frame.to_parquet(tmp_path / "b.parquet", index=False)
    from_csv = read_batch(tmp_path / "b.csv")
    assert list(from_csv.columns) == list(frame.columns)
    assert len(from_csv) == len(frame)
    # CSV is read as delivered: no casting of the timestamp
    assert from_csv["ts"].dtype == object
    pd.testing.assert_frame_equal(read_batch(str(tmp_path / "b.parquet")), frame)


def _garbage(path):
    path.write_bytes(np.random.default_rng(3).bytes(4096))


def _binary_after_header(path):
    path.write_bytes(b"a,b\n1,2\n\x00\x00\x00,\xff\xfe\n")


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("missing.csv", None, "file not found"),
        ("empty.csv", lambda p: p.write_bytes(b""), "file is empty"),
        ("blank.csv", lambda p: p.write_text("\n\n"), "no columns"),
        ("garbage.csv", _garbage, "binary content"),
        ("tail.csv", _binary_after_header, "binary content"),
        ("broken.parquet", lambda p: p.write_text("a,b\n1,2\n"), "cannot be parsed"),
        ("data.xlsx", lambda p: p.write_text("a,b\n1,2\n"), "unsupported file type '.xlsx'"),
        ("noext", lambda p: p.write_text("a,b\n1,2\n"), "unsupported file type ''"),
    ],
)
def test_read_batch_errors_name_the_path(tmp_path, name, make, expected):
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(InputError) as info:
        read_batch(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_read_batch_refuses_a_folder(tmp_path):
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    with pytest.raises(InputError, match="is a folder"):
        read_batch(folder)


# --- content hash and snapshots -----------------------------------------------------------


def test_content_hash_is_stable_for_equal_content():
    a, b = small_frame(), small_frame()
    assert a is not b
    assert content_hash(a) == content_hash(b)
    # the index is not content
    assert content_hash(a) == content_hash(a.set_axis(range(100, 100 + len(a))))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda f: f.assign(x=f["x"].where(f.index != 7, f["x"] + 1e-9)), id="one-value"
        ),
        pytest.param(lambda f: f.assign(c=f["c"].where(f.index != 0, "z")), id="one-category"),
        pytest.param(lambda f: f.rename(columns={"x": "x2"}), id="column-name"),
        pytest.param(lambda f: f.assign(y=f["y"].astype(float)), id="dtype"),
        pytest.param(lambda f: f.iloc[::-1], id="row-order"),
        pytest.param(lambda f: f.iloc[:-1], id="one-row-less"),
    ],
)
def test_content_hash_changes_with_content(change):
    frame = small_frame()
    assert content_hash(change(frame.copy())) != content_hash(frame)


def test_write_snapshot_is_idempotent(home):
    frame = small_frame()
    first = write_snapshot(frame, home, "day0.csv", 1, timestamp="ts")
    second = write_snapshot(frame.copy(), home, "again.csv", 1, timestamp="ts")
    assert first.new is True
    assert second.new is False
    assert second.manifest.snapshot == first.manifest.snapshot
    # the second write does not overwrite the first manifest
    assert second.manifest.source == "day0.csv"
    assert len(list(home.manifests.glob("*.json"))) == 1
    assert len(list(home.snapshots.glob("*.parquet"))) == 1
    assert not list(home.snapshots.glob(".*.tmp")) and not list(home.manifests.glob(".*.tmp"))


def test_manifest_describes_the_snapshot(home):
    frame = small_frame(day=3, rows=12)
    m = write_snapshot(frame, home, "src.csv", 2, timestamp="ts", warnings=4).manifest
    assert m.sha256 == content_hash(frame)
    assert m.snapshot == m.sha256[:16]
    assert m.rows == 12
    assert m.columns == ["id", "ts", "x", "c", "y"]
    assert m.schema_version == 2
    assert m.warnings == 4
    assert pd.Timestamp(m.time_min) == frame["ts"].min()
    assert pd.Timestamp(m.time_max) == frame["ts"].max()
    on_disk = json.loads((home.manifests / f"{m.snapshot}.json").read_text())
    assert on_disk["rows"] == 12 and on_disk["snapshot"] == m.snapshot


def test_manifest_without_timestamp_has_no_time_range(home):
    m = write_snapshot(small_frame(), home, "s", 1, timestamp=None).manifest
    assert m.time_min is None and m.time_max is None
    m2 = write_snapshot(small_frame(day=1), home, "s", 1, timestamp="not_a_column").manifest
    assert m2.time_max is None


def test_load_snapshots_round_trip(home):
    frames = [small_frame(day=d) for d in range(3)]
    ids = [
        write_snapshot(f, home, f"d{i}", 1, "ts").manifest.snapshot for i, f in enumerate(frames)
    ]
    loaded = load_snapshots(home, [ids[2], ids[0]])
    expected = pd.concat([frames[2], frames[0]], ignore_index=True)
    pd.testing.assert_frame_equal(loaded, expected)


def test_load_snapshots_errors(home):
    with pytest.raises(NotEnoughData):
        load_snapshots(home, [])
    with pytest.raises(InputError, match="deadbeefdeadbeef"):
        load_snapshots(home, ["deadbeefdeadbeef"])


def test_manifest_is_the_commit_mark(home):
    """A Parquet file whose manifest never landed (a crash in between) is not a snapshot."""
    frame = small_frame()
    written = write_snapshot(frame, home, "s", 1, "ts")
    manifest_path = home.manifests / f"{written.manifest.snapshot}.json"
    manifest_path.unlink()
    assert (home.snapshots / f"{written.manifest.snapshot}.parquet").exists()
    assert list_snapshots(home) == []
    # a retry completes the snapshot under the same id
    retried = write_snapshot(frame, home, "s", 1, "ts")
    assert retried.new is True
    assert retried.manifest.snapshot == written.manifest.snapshot
    assert [m.snapshot for m in list_snapshots(home)] == [written.manifest.snapshot]


def test_list_snapshots_orders_by_data_time(home, tmp_path):
    from ctloop.stores.home import Home

    assert list_snapshots(Home(tmp_path / "never-created")) == []
    order = [2, 0, 3, 1]
    ids = {
        d: write_snapshot(small_frame(day=d), home, f"d{d}", 1, "ts").manifest.snapshot
        for d in order
    }
    assert [m.snapshot for m in list_snapshots(home)] == [ids[d] for d in range(4)]


# --- select_window ------------------------------------------------------------------------


def daily_manifests(days: int = 10, rows: int = 100) -> list[Manifest]:
    out = []
    for d in range(days):
        day = datetime(2026, 1, 1) + timedelta(days=d)
        out.append(
            Manifest(
                snapshot=f"s{d:02d}",
                sha256="0" * 64,
                source=f"day{d}.csv",
                rows=rows,
                columns=["ts"],
                schema_version=1,
                arrived_at=f"2026-02-{d + 1:02d}T00:00:00+00:00",
                time_min=(day + timedelta(hours=8)).isoformat(),
                time_max=(day + timedelta(hours=20)).isoformat(),
            )
        )
    return out


def test_select_window_without_bounds_takes_everything():
    manifests = daily_manifests()
    assert select_window(manifests) == [m.snapshot for m in manifests]
    assert select_window([], window_days=3, since="2026-01-01", max_rows=10) == []


@pytest.mark.parametrize(("window_days", "expected"), [(1, 1), (2, 2), (2.5, 3), (7, 7), (100, 10)])
def test_select_window_by_days_keeps_the_newest(window_days, expected):
    manifests = daily_manifests()
    ids = select_window(manifests, window_days=window_days)
    assert ids == [m.snapshot for m in manifests[-expected:]]


@pytest.mark.parametrize(
    ("since", "first"),
    [("2026-01-04", 3), ("2026-01-04T20:00:00", 3), ("2026-01-04T21:00:00", 4), ("2025-12-01", 0)],
)
def test_select_window_since(since, first):
    manifests = daily_manifests()
    assert select_window(manifests, since=since) == [m.snapshot for m in manifests[first:]]


@pytest.mark.parametrize("max_rows", [1, 100, 150, 250, 1000, 5000])
def test_select_window_max_rows_takes_newest_until_enough(max_rows):
    manifests = daily_manifests(rows=100)
    ids = select_window(manifests, max_rows=max_rows)
    chosen = [m for m in manifests if m.snapshot in ids]
    # the newest snapshots, contiguous, in data order
    assert ids == [m.snapshot for m in manifests[len(manifests) - len(ids) :]]
    total = sum(m.rows for m in chosen)
    if total < max_rows:
        assert len(ids) == len(manifests)  # not enough in the lake: all of it
    else:
        # minimal: dropping the oldest chosen snapshot would fall short
        assert total - chosen[0].rows < max_rows


def test_select_window_bounds_combine():
    manifests = daily_manifests()
    # since keeps days 5..9, 3 days keeps 7..9, 150 rows keeps 8..9
    assert select_window(manifests, window_days=3, since="2026-01-06", max_rows=150) == [
        "s08",
        "s09",
    ]
    # since after everything leaves nothing
    assert select_window(manifests, window_days=3, since="2027-01-01") == []


def test_select_window_on_real_snapshots(home):
    for d in range(5):
        write_snapshot(small_frame(day=d), home, f"d{d}", 1, "ts")
    manifests = list_snapshots(home)
    ids = select_window(manifests, window_days=2)
    loaded = load_snapshots(home, ids)
    newest = loaded["ts"].max()
    assert loaded["ts"].min() > newest - pd.Timedelta(days=2) - pd.Timedelta(hours=12)
    assert set(loaded["id"].str[:2]) == {"r3", "r4"}


# --- quarantine ---------------------------------------------------------------------------


def test_quarantine_keeps_the_file_untouched(home, tmp_path):
    source = tmp_path / "landing" / "day11_labelled.csv"
    source.parent.mkdir()
    original = np.random.default_rng(5).bytes(777)
    source.write_bytes(original)
    reasons = [
        {"check": "type_error", "severity": "block", "column": "credit_score", "message": "text"},
        {"check": "missing_values", "severity": "block", "column": "income", "message": "45%"},
    ]
    record = quarantine_batch(home, source, reasons)
    folder = home.quarantine / record.folder.split("/")[-1]
    assert folder.is_dir() and str(folder) == record.folder
    assert (folder / source.name).read_bytes() == original
    assert source.read_bytes() == original  # the source is copied, not moved or changed
    saved = json.loads((folder / "reasons.json").read_text())
    assert saved["reasons"] == reasons
    assert saved["path"] == str(source)
    readme = (folder / "README.md").read_text()
    assert source.name in readme
    assert "| type_error | block | credit_score | text |" in readme
    assert "| missing_values | block | income | 45% |" in readme


def test_list_quarantined(home, tmp_path):
    assert list_quarantined(home) == []
    paths = []
    for i in range(3):
        p = tmp_path / f"bad{i}.csv"
        p.write_text("x\n1\n")
        paths.append(p)
        quarantine_batch(home, p, [{"check": "empty", "severity": "block", "message": f"m{i}"}])
    records = list_quarantined(home)
    assert [r.path for r in records] == [str(p) for p in paths]
    assert [r.reasons[0]["message"] for r in records] == ["m0", "m1", "m2"]


def test_quarantine_of_a_vanished_file_still_records_why(home, tmp_path):
    source = tmp_path / "gone.csv"
    record = quarantine_batch(home, source, [{"check": "unreadable", "message": "file not found"}])
    assert list_quarantined(home) == [record]
    assert not (home.quarantine / record.folder.split("/")[-1] / "gone.csv").exists()
