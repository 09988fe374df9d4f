"""Hostile files: symlinks out of the folder, FIFOs, devices, sockets, binary blobs, long and odd
names. Each is refused or quarantined with one bounded reason; nothing outside the folder is
read, copied or quoted, and nothing hangs."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.config.settings import Config
from ctloop.data.demo import ID, TARGET, TIMESTAMP, DemoScript, generate_day
from ctloop.ingest.landing import LEDGER, QUARANTINED, scan_landing
from ctloop.ingest.stage import ingest_path
from ctloop.lake.snapshots import list_quarantined, list_snapshots
from ctloop.lake.sources import MAX_REASON_CHARS, SAMPLE_BYTES, refusal, safe_name
from ctloop.stores.home import Home

SECRET = "ctloop-secret-line-that-must-never-be-quoted"


@pytest.fixture
def config() -> Config:
    return Config.model_validate({"dataset": {"target": TARGET, "timestamp": TIMESTAMP, "id": ID}})


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture(scope="module")
def day_frame() -> pd.DataFrame:
    return generate_day(DemoScript(rows_per_day=200), 0, np.random.default_rng(0))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A private file outside the ingest folder (as /etc/passwd would be), CSV-shaped."""
    secret = tmp_path / "private" / "passwd"
    secret.parent.mkdir()
    secret.write_text(f"{SECRET}:x:0:0\nroot:x:0:0:root:/root:/bin/bash\n")
    return secret


def _ingest_in_thread(path: Path, config: Config, home: Home):
    """Ingest in a thread: a reader that opened a FIFO would block forever, not fail."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(out=ingest_path(path, config, home)))
    thread.daemon = True
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), f"ingest of {path.name} hung (it opened a special file)"
    return box["out"]


def _everything_written(home: Home) -> str:
    return "\n".join(p.read_text(errors="replace") for p in home.root.rglob("*") if p.is_file())


@pytest.mark.parametrize("target", ["/etc/passwd", "private"])
def test_a_symlink_out_of_its_folder_is_refused_and_never_read(
    tmp_path, config, home, outside, target
):
    landing = tmp_path / "landing"
    landing.mkdir()
    link = landing / "passwd.csv"
    link.symlink_to(target if target.startswith("/") else outside)
    outcome = ingest_path(link, config, home).as_dict()
    assert outcome["status"] == "quarantined"
    (reason,) = outcome["reasons"]
    assert "symbolic link to a file outside" in reason["message"]
    assert "\n" not in reason["message"] and str(link) in reason["message"]
    (record,) = list_quarantined(home)
    assert record.kept == "nothing"
    assert sorted(p.name for p in Path(record.folder).iterdir()) == ["README.md", "reasons.json"]
    written = _everything_written(home)
    assert SECRET not in written and "root:x:0:0" not in written


def test_a_symlink_inside_its_folder_is_followed(tmp_path, config, home, day_frame):
    landing = tmp_path / "landing"
    landing.mkdir()
    day_frame.to_csv(landing / "day0.csv", index=False)
    (landing / "latest.csv").symlink_to("day0.csv")
    assert refusal(landing / "latest.csv") is None
    assert ingest_path(landing / "latest.csv", config, home).accepted


def _special(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.csv"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))  # a socket file stays after the socket closes
        server.close()
    elif kind == "link-to-fifo":
        os.mkfifo(folder / "pipe")
        path.symlink_to("pipe")
    return path


@pytest.mark.parametrize("kind", ["fifo", "socket", "link-to-fifo"])
def test_special_files_are_refused_without_being_opened(tmp_path, config, home, kind):
    folder = tmp_path / "in"
    folder.mkdir()
    path = _special(kind, folder)
    outcome = _ingest_in_thread(path, config, home).as_dict()
    assert outcome["status"] == "quarantined"
    assert "not a regular file (refused, not opened)" in outcome["reasons"][0]["message"]
    assert list_quarantined(home)[0].kept == "nothing"


def test_a_device_is_refused(config, home):
    outcome = _ingest_in_thread(Path("/dev/zero"), config, home).as_dict()
    assert outcome["status"] == "quarantined"
    assert outcome["reasons"][0]["message"] == (
        "/dev/zero: a device, not a regular file (refused, not opened)"
    )


def test_the_quarantine_keeps_only_a_sample_of_a_file_that_is_not_data(tmp_path, config, home):
    blob = tmp_path / "blob.csv"
    blob.write_bytes(b"\x00\x01binary" * (300_000 // 8))
    outcome = ingest_path(blob, config, home).as_dict()
    assert outcome["status"] == "quarantined"
    (record,) = list_quarantined(home)
    kept = Path(record.folder) / "blob.csv.sample"
    assert kept.read_bytes() == blob.read_bytes()[:SAMPLE_BYTES]
    assert not (Path(record.folder) / "blob.csv").exists()
    assert record.kept == f"first {SAMPLE_BYTES} of {blob.stat().st_size} bytes"


def test_a_bad_data_file_is_kept_whole(tmp_path, config, home, day_frame):
    path = tmp_path / "no-target.csv"
    day_frame.drop(columns=[TARGET]).to_csv(path, index=False)
    assert ingest_path(path, config, home).as_dict()["status"] == "quarantined"
    (record,) = list_quarantined(home)
    assert (Path(record.folder) / path.name).read_bytes() == path.read_bytes()
    assert record.kept == "file" and record.size == path.stat().st_size


def test_reasons_quote_only_a_bounded_excerpt(tmp_path, config, home):
    long_header = tmp_path / "wide.csv"
    names = [f"{SECRET}_{i}_" + "x" * 2000 for i in range(10)]
    long_header.write_text(",".join(names) + "\n" + ",".join("1" * 10) + "\n")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n" + ",".join([SECRET * 40] * 5) + "\n")
    for path in (long_header, ragged):
        outcome = ingest_path(path, config, home).as_dict()
        assert outcome["status"] == "quarantined"
        for reason in outcome["reasons"]:
            assert len(reason["message"]) <= MAX_REASON_CHARS
    for record in list_quarantined(home):
        stored = (Path(record.folder) / "reasons.json").read_text()
        assert stored.count(SECRET) <= 1 and len(stored) < 4 * MAX_REASON_CHARS


def test_a_244_character_name_is_accepted_and_quarantined_safely(tmp_path, config, home, day_frame):
    long = tmp_path / ("d" * 240 + ".csv")
    day_frame.to_csv(long, index=False)
    assert ingest_path(long, config, home).accepted
    bad = tmp_path / ("q" * 240 + ".csv")
    day_frame.drop(columns=[TARGET]).to_csv(bad, index=False)
    assert ingest_path(bad, config, home).as_dict()["status"] == "quarantined"
    (record,) = list_quarantined(home)
    assert record.name == bad.name and len(record.stored_as) <= 120
    assert record.stored_as.endswith(".csv") and "~" in record.stored_as
    assert (Path(record.folder) / record.stored_as).read_bytes() == bad.read_bytes()


@pytest.mark.parametrize(
    "name", ["with space.csv", "ünïcødé-名前.csv", "-leading-dash.csv", "new\nline.csv"]
)
def test_odd_names_are_kept_safe_and_recorded(tmp_path, config, home, day_frame, name):
    path = tmp_path / name
    day_frame.drop(columns=[TARGET]).to_csv(path, index=False)
    assert ingest_path(path, config, home).as_dict()["status"] == "quarantined"
    (record,) = list_quarantined(home)
    assert record.name == name
    assert "\n" not in record.stored_as and not record.stored_as.startswith("-")
    assert (Path(record.folder) / record.stored_as).is_file()
    assert "\n" not in Path(record.folder).name
    summary = (Path(record.folder) / "README.md").read_text().splitlines()
    assert summary[0] == f"# Quarantined: {record.stored_as}"


def test_safe_names_are_unique_and_bounded():
    long_a, long_b = "a" * 300 + "1.csv", "a" * 300 + "2.csv"
    assert safe_name(long_a) != safe_name(long_b)
    assert all(len(safe_name(n).encode()) <= 120 for n in (long_a, "é" * 200 + ".csv"))
    assert safe_name("plain.csv") == "plain.csv"


def test_the_landing_folder_refuses_links_and_special_files(
    tmp_path, config, home, outside, day_frame
):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "passwd.csv").symlink_to(outside)
    os.mkfifo(landing / "pipe.csv")
    (landing / "gone.csv").symlink_to(landing / "missing.csv")
    day_frame.to_csv(landing / ("d" * 240 + ".csv"), index=False)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(out=scan_landing(config, home, landing)))
    thread.daemon = True
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the landing scan hung on a special file"
    result = box["out"]
    assert len(result["accepted"]) == 1
    refused = {Path(q["path"]).name: q["reasons"][0]["message"] for q in result["quarantined"]}
    assert set(refused) == {"passwd.csv", "pipe.csv", "gone.csv"}
    assert "outside" in refused["passwd.csv"] and "FIFO" in refused["pipe.csv"]
    assert "to nothing" in refused["gone.csv"]
    assert sorted(p.name for p in (landing / QUARANTINED).iterdir()) == sorted(refused)
    ledger = [json.loads(line) for line in (landing / LEDGER).read_text().splitlines()]
    assert len(ledger) == 4
    assert SECRET not in _everything_written(home)
    assert len(list_snapshots(home)) == 1
    assert scan_landing(config, home, landing) == {"accepted": [], "quarantined": []}


def test_reading_a_batch_for_monitor_or_scoring_refuses_the_same_files(tmp_path, outside):
    from ctloop.errors import InputError
    from ctloop.lake.snapshots import read_batch

    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "pipe.csv")
    (folder / "passwd.csv").symlink_to(outside)
    for name, says in (("pipe.csv", "FIFO"), ("passwd.csv", "outside")):
        with pytest.raises(InputError, match=says):
            read_batch(folder / name)


# -- a file swapped between the check and the read (TOCTOU) ---------------------------------


def _swap_after_check(monkeypatch, path: Path, swap) -> list:
    """Run the real check (`refusal`) on `path`, then swap the file, once, before ctloop opens
    it: what a hostile writer racing the check would do. Patched wherever ctloop calls the
    check from. Returns the check's answers on `path` (the race was run when it holds one)."""
    import ctloop.lake.sources as sources

    real = sources.refusal
    answers: list = []

    def checked_then_swapped(p, *args, **kwargs):
        answer = real(p, *args, **kwargs)
        if Path(p) == path and not answers:
            answers.append(answer)
            swap(path)
        return answer

    for name, module in list(sys.modules.items()):
        if name.startswith("ctloop") and getattr(module, "refusal", None) is real:
            monkeypatch.setattr(module, "refusal", checked_then_swapped)
    return answers


@pytest.fixture
def outside_batch(tmp_path: Path, day_frame) -> Path:
    """A valid batch outside the ingest folder, every text value a secret: read, it would be
    accepted (or quarantined with its lines)."""
    secret = day_frame.copy()
    for column in secret.select_dtypes("object").columns:
        secret[column] = SECRET
    path = tmp_path / "private" / "batch.csv"
    path.parent.mkdir(exist_ok=True)
    secret.to_csv(path, index=False)
    return path


def _to_link(target: Path):
    def swap(path: Path) -> None:
        path.unlink()
        path.symlink_to(target)

    return swap


def _to_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def test_a_file_swapped_for_a_link_out_of_its_folder_after_the_check_is_not_read(
    tmp_path, monkeypatch, config, home, day_frame, outside_batch
):
    landing = tmp_path / "landing"
    landing.mkdir()
    path = landing / "day.csv"
    day_frame.to_csv(path, index=False)
    answers = _swap_after_check(monkeypatch, path, _to_link(outside_batch))
    outcome = _ingest_in_thread(path, config, home).as_dict()
    assert answers == [None] and path.is_symlink()  # checked as a regular file, then swapped
    assert outcome["status"] == "quarantined", outcome
    (reason,) = outcome["reasons"]
    assert reason["message"] == (
        f"{path}: a symbolic link to a file outside {landing} (refused, not read)"
    )
    assert list_snapshots(home) == []
    (record,) = list_quarantined(home)
    assert record.kept == "nothing"
    assert SECRET not in _everything_written(home)


def test_a_file_swapped_for_a_fifo_after_the_check_is_refused_without_hanging(
    tmp_path, monkeypatch, config, home, day_frame
):
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "day.csv"
    day_frame.to_csv(path, index=False)
    answers = _swap_after_check(monkeypatch, path, _to_fifo)
    outcome = _ingest_in_thread(path, config, home).as_dict()
    assert answers == [None] and stat.S_ISFIFO(os.lstat(path).st_mode)
    assert outcome["status"] == "quarantined", outcome
    assert outcome["reasons"][0]["message"] == (
        f"{path}: a named pipe (FIFO), not a regular file (refused, not read)"
    )
    assert list_snapshots(home) == [] and list_quarantined(home)[0].kept == "nothing"


def _folder_to_link(target: Path):
    """Swap the folder holding the file for a link to `target`'s folder (same file name)."""

    def swap(path: Path) -> None:
        path.parent.rename(path.parent.with_name("moved-away"))
        path.parent.symlink_to(target.parent)

    return swap


@pytest.mark.parametrize("swap", ["link", "fifo", "folder"])
def test_reading_a_batch_refuses_a_file_swapped_after_the_check(
    tmp_path, monkeypatch, day_frame, outside_batch, swap
):
    """`ctloop monitor`, `score`, `replay` and `init` read through `read_batch`. "folder": the
    file's folder is swapped for a link out (the file's own name is no link: only the open
    descriptor shows where it leads)."""
    from ctloop.errors import InputError
    from ctloop.lake.snapshots import read_batch

    folder = tmp_path / "in" / "sub"
    folder.mkdir(parents=True)
    path = folder / outside_batch.name
    day_frame.to_csv(path, index=False)
    swaps = {
        "link": _to_link(outside_batch),
        "fifo": _to_fifo,
        "folder": _folder_to_link(outside_batch),
    }
    answers = _swap_after_check(monkeypatch, path, swaps[swap])
    box: dict = {}

    def read() -> None:
        try:
            box["frame"] = read_batch(path)
        except InputError as exc:
            box["error"] = str(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "read_batch hung on a FIFO swapped in after the check"
    assert answers == [None]
    assert "frame" not in box, "the swapped-in file was read"
    assert box["error"].startswith(f"{path}: ") and box["error"].endswith("(refused, not read)")
