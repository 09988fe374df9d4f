"""The first commands on public files by flags alone: river's chick weights and Trump approval
streams (read from the installed wheel): the task follows the target, bad rows are named."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from clitools import harness_api, one_error_line, run


def river_csv(name: str) -> Path:
    import river

    return Path(river.__file__).parent / "datasets" / name


@pytest.fixture(scope="module")
def trump(tmp_path_factory) -> Path:
    """Daily approval polls with a date column (the wheel's ordinal day numbers as dates)."""
    frame = pd.read_csv(river_csv("trump_approval.csv.gz"))
    frame["date"] = [dt.date.fromordinal(int(d)).isoformat() for d in frame.pop("ordinal_date")]
    path = tmp_path_factory.mktemp("trump") / "trump.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_a_first_ingest_guesses_the_task_and_the_home_keeps_it(tmp_path, prefect_harness):
    home = tmp_path / "home"
    chicks = river_csv("chick-weights.csv")
    api = harness_api()
    proc = run(
        ["ingest", str(chicks), "--target", "weight", "--id", "chick"], tmp_path, home, api=api
    )
    assert proc.returncode == 0, proc.stderr
    assert "task: regression, guessed from 'weight' (" in proc.stdout
    assert yaml.safe_load((home / "ctloop.yaml").read_text())["dataset"]["task"] == "regression"
    # the next command reads the kept task: the regression metric, no flag
    from ctloop.config.settings import load_config

    config = load_config(home / "ctloop.yaml")
    assert config.dataset.task == "regression" and config.gates.primary_metric == "rmse"
    # a later ingest into the same lake does not guess again
    again = run(["ingest", str(chicks), "--json"], tmp_path, home, api=api)
    assert again.returncode == 0, again.stderr
    assert "guessed" not in again.stdout


@pytest.mark.slow
def test_replay_without_task_follows_a_regression_target(trump, tmp_path):
    flags = ["--target", "five_thirty_eight", "--timestamp", "date", "--freq", "30D", "--json"]
    env_home = tmp_path / "home"
    (tmp_path / "ctloop.yaml").write_text("triggers:\n  bootstrap_rows: 300\n")
    proc = run(
        ["replay", str(trump), *flags, "--policies", "never,every_batch"], tmp_path, env_home
    )
    assert proc.returncode == 0, proc.stderr
    assert "task: regression, guessed from 'five_thirty_eight'" in proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["metric_name"] == "rmse"
    assert answer["policies"]["every_batch"]["mean_metric"] > 0


def test_replay_names_timestamps_that_are_not_dates(trump, tmp_path):
    frame = pd.read_csv(trump)
    frame.loc[4::2, "date"] = "not a date"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    flags = ["--target", "five_thirty_eight", "--task", "regression", "--timestamp", "date"]
    proc = run(["replay", str(bad), *flags], tmp_path, tmp_path / "home")
    one_error_line(proc, "bad.csv", f"{len(frame[4::2])} of {len(frame)} values are not dates")
    one_error_line(proc, "(first: row 5, 'not a date')")


def test_replay_of_a_history_the_first_model_uses_up_says_so(trump, tmp_path):
    """1001 rows against bootstrap_rows 1000: no batch is left to score (was: a table of n/a
    and a NaN in the JSON)."""
    flags = ["--target", "five_thirty_eight", "--task", "regression", "--timestamp", "date"]
    proc = run(["replay", str(trump), *flags, "--freq", "30D", "--json"], tmp_path, tmp_path / "h")
    one_error_line(proc, "triggers.bootstrap_rows 1000", "cannot score a policy")
