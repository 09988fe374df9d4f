"""System tests of the `ctloop` command: the answers scripts rely on, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from clitools import harness_api, one_error_line, run

from ctloop.data.demo import DemoScript, generate_day


def test_bad_config_is_one_line_naming_the_field(tmp_path):
    (tmp_path / "ctloop.yaml").write_text("training:\n  holdout_fraction: 3\n")
    proc = run(["status"], tmp_path, tmp_path / "home")
    assert proc.returncode == 2
    one_error_line(proc, "ctloop.yaml", "training.holdout_fraction")


def test_unknown_setting_is_named(tmp_path):
    (tmp_path / "ctloop.yaml").write_text("gates:\n  min_improvment: 0.1\n")
    proc = run(["status"], tmp_path, tmp_path / "home")
    one_error_line(proc, "gates.min_improvment")


def test_missing_file_is_one_line(tmp_path):
    proc = run(["ingest", "nope.csv", "--target", "y"], tmp_path, tmp_path / "home")
    assert proc.returncode == 2
    one_error_line(proc, "nope.csv", "not found")


def test_status_of_an_empty_home(tmp_path):
    proc = run(["status", "--json"], tmp_path, tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["champion"] is None and data["challenger"] is None
    assert data["snapshots"] == 0 and data["quarantined"] == 0


@pytest.mark.slow
def test_ingest_without_target_is_quarantined_and_accepted_data_kept(tmp_path, prefect_harness):
    frame = generate_day(DemoScript(rows_per_day=100), 0, np.random.default_rng(0))
    good = tmp_path / "good.csv"
    frame.to_csv(good, index=False)
    unlabelled = tmp_path / "unlabelled.csv"
    frame.drop(columns=["default"]).to_csv(unlabelled, index=False)
    home = tmp_path / "home"
    flags = ["--target", "default", "--timestamp", "application_date", "--id", "application_id"]
    api = harness_api()  # a running Prefect API, as under `ctloop up`

    ok = run(["ingest", str(good), "--json", *flags], tmp_path, home, api=api)
    assert ok.returncode == 0, ok.stderr
    accepted = json.loads(ok.stdout)["accepted"]
    assert accepted[0]["rows"] == 100 and accepted[0]["new"] is True

    bad = run(["ingest", str(unlabelled), "--json", *flags], tmp_path, home, api=api)
    assert bad.returncode == 1
    answer = json.loads(bad.stdout)
    assert answer["accepted"] == []
    reasons = answer["quarantined"][0]["reasons"]
    assert any(r["check"] == "missing_target" and "'default'" in r["message"] for r in reasons)

    human = run(["ingest", str(unlabelled), *flags], tmp_path, home, api=api)
    assert human.returncode == 1
    one_error_line(human, "unlabelled.csv", "target column 'default' is missing")

    status = json.loads(run(["status", "--json"], tmp_path, home).stdout)
    assert status["snapshots"] == 1 and status["quarantined"] == 2
    snapshot = accepted[0]["snapshot"]
    assert (home / "lake" / "snapshots" / f"{snapshot}.parquet").exists()


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """The README's demo, smaller batches, 2 trials a study and the shortest stream that has
    every episode (24 days): a drift retrain is champion, one batch quarantined."""
    home = tmp_path / "demo-home"
    args = ["demo", "--json", "--days", "24", "--rows-per-day", "300", "--trials", "2"]
    proc = run(args, tmp_path, home, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    champion = data["champion"]
    assert champion["version"] >= 2
    assert champion["trigger"] == "drift"
    assert data["quarantined"] == 1
    reasons = data["quarantine"][0]["reasons"]
    assert {r["column"] for r in reasons} >= {"credit_score", "income"}
    outcomes = [e["outcome"] for e in data["events"]]
    assert any(o.startswith("drift detected") for o in outcomes)
    assert any("promoted" in o and "(drift)" in o for o in outcomes)

    status = json.loads(run(["status", "--json"], tmp_path, home).stdout)
    assert status["champion"]["version"] == champion["version"]
    assert status["quarantined"] == 1

    # the landing folder is left processed: `ctloop up` on this home ingests nothing again
    from ctloop.ingest.landing import LEDGER, pending_files

    landing = home / "landing"
    assert pending_files(landing, ["*.csv"]) == []
    ledger = [json.loads(x) for x in (landing / LEDGER).read_text().splitlines()]
    assert len(ledger) == len(data["events"]) - sum("retrain" in o for o in outcomes)
    assert {e["status"] for e in ledger} == {"accepted", "quarantined", "monitored"}
    # each retrain tuned a few trials: there is a study to look at
    assert (home / "optuna" / "journal.log").stat().st_size > 0


def test_demo_export_writes_the_labelled_stream_and_keeps_the_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "keep.txt").write_text("x")
    args = ["demo", "--export", "out/stream.csv", "--days", "24", "--rows-per-day", "30"]
    proc = run(args, tmp_path, home)
    assert proc.returncode == 0, proc.stderr
    assert "ctloop replay out/stream.csv --target default" in proc.stdout
    stream = pd.read_csv(tmp_path / "out" / "stream.csv")
    assert len(stream) == 23 * 30 and "default" in stream.columns
    assert (home / "keep.txt").exists()


def test_ingest_of_a_bad_batch_is_one_line_and_exit_1(tmp_path, prefect_harness):
    day = generate_day(DemoScript(rows_per_day=200), 0, np.random.default_rng(0))
    day.to_csv(tmp_path / "good.csv", index=False)
    day.assign(credit_score="unknown").to_csv(tmp_path / "text.csv", index=False)
    (tmp_path / "empty.csv").write_bytes(b"")
    args = ["ingest", "good.csv", "text.csv", "empty.csv", "--target", "default"]
    proc = run(
        [*args, "--timestamp", "application_date"], tmp_path, tmp_path / "home", api=harness_api()
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "NoneType" not in proc.stderr
    assert "accepted good.csv: 200 rows" in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: text.csv: quarantined: column 'credit_score': 200 of 200 values are not "
        "numbers (first at row 1: 'unknown')",
        "error: empty.csv: quarantined: file is empty",
    ], proc.stderr
