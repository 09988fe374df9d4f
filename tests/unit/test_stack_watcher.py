"""The landing watcher of `ctloop up`: files the folder's ledger records start no run."""

from __future__ import annotations

from pathlib import Path

from ctloop.config.settings import Config
from ctloop.ingest.landing import process_landing
from deployments.stack import LandingWatcher


def _watcher(folder: Path, started: list[list[str]]) -> LandingWatcher:
    return LandingWatcher(folder, started.append, poll=0.01, patterns=["*.csv"])


def test_files_in_the_ledger_start_nothing_and_a_new_file_does(tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    for name in ("day00_features.csv", "day00_labelled.csv"):
        (folder / name).write_text("a,b\n1,2\n")
    config = Config.model_validate({"ingest": {"done": "mark"}})
    # what the demo does: each file taken through the watcher's own scan, recorded as it goes
    process_landing(
        folder, config, lambda p: {"status": "monitored", "path": str(p), "reasons": []}
    )
    started: list[list[str]] = []
    watcher = _watcher(folder, started)
    assert watcher.scan_once() == [] and watcher.scan_once() == []
    (folder / "new.csv").write_text("a,b\n3,4\n")
    (folder / "notes.txt").write_text("not a pattern")
    assert watcher.scan_once() == []  # first sight: its size must hold still for one poll
    assert watcher.scan_once() == ["new.csv"]
    assert watcher.scan_once() == []  # submitted once


def test_a_file_moved_away_while_listed_is_skipped(tmp_path, monkeypatch):
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / "a.csv").write_text("x\n1\n")
    import ctloop.ingest.landing as landing

    def vanished(*args, **kwargs):
        raise FileNotFoundError("a.csv")

    monkeypatch.setattr(landing, "pending_files", vanished)
    assert _watcher(folder, []).scan_once() == []
