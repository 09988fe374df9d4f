"""A full disk is an infrastructure error, never a quarantine: one clear `DiskFull` naming the
store, nothing half-written left behind, the landing file left where it was for the next scan.

The disk is really full: a 2 MiB tmpfs is mounted for the test (as root). Where mounting is not
permitted, the same tests inject `OSError(ENOSPC)` at the write call (`io.FileIO.write` of
files under the small folder) instead, as the fixture `small_disk` says in its docstring; no
test is skipped.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctloop.config.settings import Config
from ctloop.data.demo import ID, TARGET, TIMESTAMP, DemoScript, generate_day
from ctloop.ingest.landing import LEDGER, scan_landing
from ctloop.ingest.stage import ingest_path
from ctloop.lake.snapshots import list_quarantined, list_snapshots, quarantine_batch
from ctloop.lake.sources import DiskFull
from ctloop.stores.home import Home

SIZE = 2 << 20


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch):
    """A folder on a 2 MiB file system: a real tmpfs when `mount` is permitted (root), else a
    plain folder whose writes past 2 MiB raise OSError(ENOSPC) (injected at `open`)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(folder)],
            capture_output=True,
        ).returncode
        == 0
    )
    if not mounted:
        _inject_enospc(monkeypatch, folder)
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def _inject_enospc(monkeypatch, folder: Path) -> None:
    """Writes to files under `folder` fail with ENOSPC once they total more than SIZE."""
    used = {"bytes": 0}
    real_open = builtins.open

    class Full(io.FileIO):
        def write(self, data):
            used["bytes"] += len(data)
            if used["bytes"] > SIZE:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
            return super().write(data)

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, str | Path) and str(file).startswith(str(folder)) and "b" in mode:
            if "w" in mode or "a" in mode:
                return io.BufferedWriter(Full(file, mode.replace("b", "")))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


@pytest.fixture
def config() -> Config:
    return Config.model_validate({"dataset": {"target": TARGET, "timestamp": TIMESTAMP, "id": ID}})


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory) -> Path:
    """A valid batch whose snapshot is larger than the small disk."""
    rng = np.random.default_rng(1)
    frame = generate_day(DemoScript(rows_per_day=30_000), 0, rng)
    for i in range(6):
        frame[f"noise{i}"] = rng.normal(size=len(frame))
    path = tmp_path_factory.mktemp("big") / "big.csv"
    frame.to_csv(path, index=False)
    return path


def _leftovers(folder: Path) -> list[str]:
    """Temporary or empty files anywhere under the folder (a full disk must leave neither)."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and (p.name.endswith(".tmp") or p.stat().st_size == 0)
    )


def test_staging_on_a_full_lake_raises_disk_full_and_leaves_nothing(
    tmp_path, small_disk, config, big_csv
):
    home = Home(tmp_path / "home", lake_location=str(small_disk)).ensure()
    with pytest.raises(DiskFull) as caught:
        ingest_path(big_csv, config, home)
    message = str(caught.value)
    assert message.startswith(f"the lake at {small_disk}: disk full")
    assert "\n" not in message
    assert list_quarantined(home) == [] and list_snapshots(home) == []
    assert _leftovers(small_disk) == []
    assert big_csv.exists()


def test_a_full_landing_scan_leaves_the_file_for_the_next_scan(
    tmp_path, small_disk, config, big_csv
):
    home = Home(tmp_path / "home", lake_location=str(small_disk)).ensure()
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "big.csv").write_bytes(big_csv.read_bytes())
    with pytest.raises(DiskFull):
        scan_landing(config, home, landing)
    assert (landing / "big.csv").exists()
    assert not (landing / LEDGER).exists() or not (landing / LEDGER).read_text().strip()
    assert _leftovers(small_disk) == []


def test_a_full_quarantine_raises_disk_full_and_leaves_no_half_record(tmp_path, small_disk):
    home = Home(small_disk / "home").ensure()
    bad = tmp_path / "bad.csv"
    bad.write_bytes(os.urandom(3 << 20))  # a bad data file kept whole: larger than the disk
    reasons = [{"check": "target", "severity": "block", "message": "bad.csv: no target"}]
    with pytest.raises(DiskFull) as caught:
        quarantine_batch(home, bad, reasons)
    assert str(caught.value).startswith(f"the quarantine at {home.quarantine}: disk full")
    assert list(home.quarantine.iterdir()) == []
    assert _leftovers(small_disk) == []


def test_ctloop_ingest_on_a_full_lake_says_so_in_one_line(tmp_path, small_disk, big_csv):
    """The command: exit 2 (an error, not a quarantine), one line naming the store and "disk
    full", no traceback."""
    home = tmp_path / "cli-home"
    config = tmp_path / "ctloop.yaml"
    config.write_text(
        f"dataset: {{target: {TARGET}, timestamp: {TIMESTAMP}, id: {ID}}}\n"
        f"paths: {{lake: {small_disk}}}\n"
    )
    cli = Path(sys.executable).parent / "ctloop"
    done = subprocess.run(
        [str(cli), "ingest", str(big_csv), "--home", str(home), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CTLOOP_HOME": str(home)},
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "disk full" in lines[0] and str(small_disk) in lines[0], lines
    assert "Traceback" not in done.stdout + done.stderr
    assert _leftovers(small_disk) == [] and big_csv.exists()
    assert not (home / "quarantine").exists() or not any((home / "quarantine").iterdir())
