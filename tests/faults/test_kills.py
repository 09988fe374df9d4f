"""SIGKILL at stage boundaries of `ctloop landing` (ingest) and `ctloop train`: the next run
completes, no half-made version or snapshot is visible, no landing file is lost.

Each kill stops the command at a named point with the test hook `CTLOOP_FAULT_PAUSE`
(`ctloop.faults`), then SIGKILLs it there, as an OOM killer or a lost node would. One home is
reused throughout, the kills done in pipeline order. The commands talk to the worker's test
Prefect API (`prefect_harness`), as they would to the server of `ctloop up`: the kills hit
ctloop's stores, and each command saves the start of an ephemeral server of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ctloop.config.settings import CONFIG_FILENAME, dump_config
from ctloop.data.demo import DemoScript, demo_config, generate_day
from ctloop.ingest.landing import DONE, LEDGER, scan_landing
from ctloop.lake.snapshots import list_quarantined, list_snapshots
from ctloop.registry.store import CHAMPION, open_registry
from ctloop.stores.home import Home

pytestmark = pytest.mark.slow

SCRIPT = DemoScript(rows_per_day=150)
CLI = str(Path(sys.executable).parent / "ctloop")


@pytest.fixture(scope="module")
def site(tmp_path_factory, prefect_harness):
    """A home with its config, and a landing folder holding a bad file and four good days."""
    root = tmp_path_factory.mktemp("kills")
    config = demo_config(str(root / "home"), rows_per_day=SCRIPT.rows_per_day)
    config.gates.min_improvement = -1.0  # every retrain is promoted: a kill at promote matters
    config.training.params = {"max_iter": 30}
    home = Home(root / "home").ensure()
    dump_config(config, home.root / CONFIG_FILENAME)
    landing = root / "landing"
    landing.mkdir()
    (landing / "bad.csv").write_bytes(b"\x00not data\x00" * 100)
    past = time.time() - 3600
    os.utime(landing / "bad.csv", (past, past))  # oldest: the scan takes it first
    for day in range(4):
        frame = generate_day(SCRIPT, day, np.random.default_rng(day))
        frame.to_csv(landing / f"day{day}.csv", index=False)
        os.utime(landing / f"day{day}.csv", (past + 60 * (day + 1),) * 2)
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    return {"root": root, "home": home, "config": config, "landing": landing, "api": api}


def _run(site, *args: str, pause: str | None = None) -> subprocess.CompletedProcess | str:
    """Run a command to its end, or (with `pause`) until it reaches that point, then SIGKILL it
    and everything it started; returns the point reached."""
    mark = site["root"] / "paused"
    mark.unlink(missing_ok=True)
    env = {**os.environ, "CTLOOP_HOME": str(site["home"].root), "PREFECT_API_URL": site["api"]}
    env.pop("CTLOOP_FAULT_PAUSE", None)
    if pause:
        env |= {"CTLOOP_FAULT_PAUSE": pause, "CTLOOP_FAULT_MARK": str(mark)}
    command = [CLI, *args, "--home", str(site["home"].root)]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=site["root"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    if not pause:
        out, err = process.communicate(timeout=600)
        return subprocess.CompletedProcess(command, process.returncode, out, err)
    try:
        deadline = time.monotonic() + 600
        while not mark.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert mark.exists(), f"never reached {pause}: {process.communicate()[1][-3000:]}"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        return mark.read_text()
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # what the command started (its servers)
        except ProcessLookupError:
            pass
        process.communicate()


def _temporaries(home: Home) -> list[str]:
    return sorted(p.name for p in home.lake.rglob(".*.tmp")) + sorted(
        p.name for p in home.quarantine.glob(".*")
    )


def test_kills_during_ingest_lose_nothing_and_leave_nothing_visible(site):
    home, landing = site["home"], site["landing"]
    files = sorted(p.name for p in landing.glob("*.csv"))

    # the bad file's quarantine record is made, not yet in place
    assert _run(site, "landing", str(landing), pause="quarantine.copied") == "quarantine.copied"
    assert list_quarantined(home) == []
    # the bad file done; the first day staged, not committed
    assert _run(site, "landing", str(landing), pause="ingest.staged") == "ingest.staged"
    assert len(list_quarantined(home)) == 1 and list_snapshots(home) == []
    # the first day's data in place, its manifest (the commit mark) not written
    assert _run(site, "landing", str(landing), pause="lake.data") == "lake.data"
    assert list_snapshots(home) == []
    assert sorted(p.name for p in landing.glob("*.csv")) == [f for f in files if f != "bad.csv"]

    done = _run(site, "landing", str(landing), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    assert sorted(Path(a["path"]).name for a in answer["accepted"]) == [
        f"day{d}.csv" for d in range(4)
    ]
    assert len(list_snapshots(home)) == 4
    assert sorted(p.name for p in (landing / DONE).iterdir()) == [f"day{d}.csv" for d in range(4)]
    ledger = [json.loads(line) for line in (landing / LEDGER).read_text().splitlines()]
    assert sorted(e["file"] for e in ledger) == files  # each file recorded once
    assert _temporaries(home) == []
    (record,) = list_quarantined(home)
    assert Path(record.path).name == "bad.csv" and record.kept.startswith("first ")


def test_kills_during_train_never_leave_a_half_made_or_wrongly_promoted_version(site):
    if not list_snapshots(site["home"]):  # run alone: the lake the ingest test fills
        scan_landing(site["config"], site["home"], site["landing"])
    registry = open_registry(site["config"])

    assert _run(site, "train", pause="train.logged") == "train.logged"
    assert registry.versions() == [] and registry.by_alias(CHAMPION) is None

    assert _run(site, "train", pause="register.created") == "register.created"
    assert registry.by_alias(CHAMPION) is None  # made, never promoted

    assert _run(site, "train", pause="promote.alias") == "promote.alias"
    assert registry.by_alias(CHAMPION) is None

    done = _run(site, "train", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    assert answer["promoted"] is True
    registry = open_registry(site["config"])
    assert registry.by_alias(CHAMPION).version == answer["version"]
    versions = registry.versions()
    assert all(v.complete for v in versions)
    semvers = [v.semver for v in versions]
    assert len(set(semvers)) == len(semvers), semvers  # never two versions with one semver
    assert answer["semver"] == semvers[-1]
    status = _run(site, "status", "--json")
    assert status.returncode == 0, status.stderr[-3000:]
    assert json.loads(status.stdout)["champion"]["version"] == answer["version"]
