"""The first hour of a new user, through the `ctloop` command on real (bundled) data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import harness_api, one_error_line, run


@pytest.fixture
def cancer_csvs(tmp_path):
    """scikit-learn's bundled breast cancer data as two CSV files with an id column."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "benign"})
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame.insert(0, "patient", range(len(frame)))
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    frame.iloc[:400].to_csv(first, index=False)
    frame.iloc[400:].to_csv(second, index=False)
    return first, second


@pytest.mark.slow
def test_dataset_flags_of_the_first_ingest_are_kept(tmp_path, cancer_csvs, prefect_harness):
    """The README's sequence: `ingest --target ...` then `train --json` without flags.

    The first two commands start their own ephemeral Prefect server, as on a new machine; the
    later ones use the test API (one server start-up each is what they would add, nothing more).
    """
    first, second = cancer_csvs
    home = tmp_path / "home"
    ok = run(["ingest", str(first), "--target", "benign", "--id", "patient"], tmp_path, home)
    assert ok.returncode == 0, ok.stderr
    kept = (home / "ctloop.yaml").read_text()
    assert "target: benign" in kept and "id: patient" in kept

    trained = run(["train", "--json"], tmp_path, home)
    assert trained.returncode == 0, trained.stderr
    answer = json.loads(trained.stdout)
    assert answer["version"] == 1 and answer["blessed"] is True

    api = harness_api()
    again = run(["ingest", str(second), "--json"], tmp_path, home, api=api)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["accepted"][0]["rows"] == 169

    clash = run(["ingest", str(second), "--target", "mean_radius"], tmp_path, home, api=api)
    assert clash.returncode == 2
    line = one_error_line(clash)
    for needle in ("dataset.target", "'benign'", "'mean_radius'", "--target", "ctloop.yaml"):
        assert needle in line, line
    status = json.loads(run(["status", "--json"], tmp_path, home).stdout)
    assert status["snapshots"] == 2 and status["quarantined"] == 0
    text = run(["status"], tmp_path, home).stdout
    assert "champion: version 1 (1.0.0)" in text and "v1  1.0.0  trigger manual" in text

    # a version as a person writes it: v1, its semver, its alias
    for written in ("v1", "1.0.0", "champion"):
        lineage = run(["lineage", written, "--json"], tmp_path, home)
        assert lineage.returncode == 0, lineage.stderr
        assert json.loads(lineage.stdout)["version"] == 1


ROOT = Path(__file__).resolve().parents[1]


def test_init_writes_a_commented_config_from_a_sample(tmp_path, monkeypatch, cancer_csvs):
    from typer.testing import CliRunner

    from ctloop.cli.main import app
    from ctloop.config.settings import Task, load_config

    monkeypatch.chdir(tmp_path)
    first, _ = cancer_csvs
    runner = CliRunner()
    made = runner.invoke(app, ["init", str(first), "--target", "benign", "--id", "patient"])
    assert made.exit_code == 0, made.output
    text = (tmp_path / "ctloop.yaml").read_text()
    config = load_config(tmp_path / "ctloop.yaml", environ={})
    assert config.dataset.target == "benign" and config.dataset.id == "patient"
    assert config.dataset.task == Task.BINARY  # guessed from the two labels
    assert "#   mean_radius" in text and "numeric" in text and "target" in text

    again = runner.invoke(app, ["init", str(first), "--target", "benign"])
    assert again.exit_code == 2 and "already exists" in again.output and "--force" in again.output
    assert (tmp_path / "ctloop.yaml").read_text() == text

    wrong = runner.invoke(app, ["init", str(first), "--target", "nope", "--force"])
    assert wrong.exit_code == 2 and "'nope' (--target)" in wrong.output

    # a regression target: the task is guessed and the gates are the regression defaults
    from sklearn.datasets import load_diabetes

    diabetes = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(diabetes, index=False)
    made = runner.invoke(app, ["init", str(diabetes), "--target", "target", "-o", "d.yaml"])
    assert made.exit_code == 0, made.output
    regression = load_config(tmp_path / "d.yaml", environ={})
    assert regression.dataset.task == Task.REGRESSION
    assert regression.gates.primary_metric == "rmse" and regression.gates.min_metrics == {"r2": 0}


def test_the_example_config_loads():
    from ctloop.config.settings import load_config

    config = load_config(ROOT / "examples" / "ctloop.yaml", environ={})
    assert config.project == "loans"
    assert (config.dataset.target, config.dataset.timestamp) == ("default", "application_date")
    assert config.dataset.id == "application_id"
