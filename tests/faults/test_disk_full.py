"""A full disk is an infrastructure error, never a quarantine: one clear `DiskFull` naming the
store, nothing half-written left behind, the landing file left where it was for the next scan.

The disk is really full: a 2 MiB tmpfs is mounted for the test (as root). Where mounting is not
permitted, the same tests inject `OSError(ENOSPC)` at the write call (`io.FileIO.write` of
files under the small folder) instead, as the fixture `small_disk` says in its docstring.
`ctloop status` is tested on a really full tmpfs only (SQLite writes through its own calls, not
Python's): those tests skip with the reason where mounting is not permitted.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
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


# -- `ctloop status` on a full disk: read only, so it still answers --------------------------


@pytest.fixture
def full_tmpfs(tmp_path: Path):
    """A real 4 MiB tmpfs, yielded with a `fill()` that writes zeros until it is full. Skipped
    (with the reason) where mounting is not permitted: SQLite's own writes cannot be made to
    fail by patching Python's `open`."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full SQLite database needs a real small file system: mount needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")

    def fill() -> None:
        with open(folder / "filler", "wb") as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        probe = folder / "probe"
        with pytest.raises(OSError):  # really full: not a byte more
            with open(probe, "wb") as handle:
                handle.write(b"\0" * 4096)
                handle.flush()
                os.fsync(handle.fileno())
        probe.unlink(missing_ok=True)

    try:
        yield folder, fill
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _status(home: Path, *args: str) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).parent / "ctloop"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTLOOP_", "MLFLOW_"))}
    return subprocess.run(
        [str(cli), "status", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=home.parent,
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _cut_short(database: Path, how: str) -> None:
    """An MLflow database whose setup a full disk stopped: 0 bytes (SQLite made the file, never
    wrote a page), or only the first tables of MLflow's first migration."""
    database.parent.mkdir(parents=True)
    database.touch()
    if how == "first tables only":
        import sqlite3

        db = sqlite3.connect(database)
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        db.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT)")
        db.commit()
        db.close()


@pytest.mark.parametrize("how", ["0 bytes", "first tables only"])
def test_status_on_a_full_disk_answers_for_a_registry_never_set_up(full_tmpfs, how):
    """A database MLflow never finished setting up holds no version: status says so and shows
    the rest, without writing (MLflow would create its tables first: `database or disk is full`
    and a traceback before)."""
    folder, fill = full_tmpfs
    home = folder / "home"
    _cut_short(home / "mlflow" / "mlflow.db", how)
    (home / "quarantine").mkdir()
    fill()
    before = _files(folder)
    done = _status(home, "--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr and done.stderr == ""
    data = json.loads(done.stdout)
    assert data["champion"] is None and data["versions"] == []
    assert data["snapshots"] == 0 and data["quarantined"] == 0
    assert _files(folder) == before  # nothing written, nothing created

    text = _status(home)
    assert text.returncode == 0 and "champion: none yet" in text.stdout, text.stderr


def test_status_on_a_full_disk_shows_the_champion(full_tmpfs):
    from ctloop.config.settings import load_config
    from ctloop.names import CHAMPION
    from ctloop.registry.store import open_registry

    folder, fill = full_tmpfs
    home = folder / "home"
    config = load_config(overrides={"paths.home": str(home)}, environ={})
    registry = open_registry(config)
    registry.client.create_registered_model(config.registry_name)
    tags = {"semver": "1.0.0", "ctloop.trigger": "manual"}
    registry.client.create_model_version(config.registry_name, "file:///nowhere/1", tags=tags)
    registry.set_alias(CHAMPION, 1)
    fill()
    before = _files(folder)
    done = _status(home, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["champion"]["version"] == 1 and data["champion"]["semver"] == "1.0.0"
    assert [v["version"] for v in data["versions"]] == [1]
    assert _files(folder) == before


def test_status_that_needs_mlflow_on_a_full_disk_says_so_in_one_line(full_tmpfs):
    """A database the read-only view does not know goes through MLflow, which sets up its
    tables before reading: on a full disk that is one line naming the database, exit 2."""
    import sqlite3

    folder, fill = full_tmpfs
    home = folder / "home"
    database = home / "mlflow" / "mlflow.db"
    database.parent.mkdir(parents=True)
    db = sqlite3.connect(database)
    db.execute("CREATE TABLE model_versions (name TEXT, version INTEGER)")  # no run_id, stage
    db.commit()
    db.close()
    fill()
    done = _status(home)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: the model registry at {database}: disk full"), lines
    assert "Traceback" not in done.stdout + done.stderr
