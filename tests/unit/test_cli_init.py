"""`ctloop init [SAMPLE]`: the config it writes and what it prints, on small samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from ctloop.cli.main import app
from ctloop.config.settings import Config, load_config

ROWS = 60
# the README's "Any task" defaults, the product's when gates.primary_metric/min_metrics are unset
README_GATES = {
    "binary": ("roc_auc", {"roc_auc": 0.6}),
    "multiclass": ("roc_auc_ovr", {"roc_auc_ovr": 0.6}),
    "regression": ("rmse", {"r2": 0.0}),
}
LABELS = {
    "binary": np.arange(ROWS) % 2,
    "multiclass": np.array(["low", "mid", "high"])[np.arange(ROWS) % 3],
    "regression": np.linspace(0.5, 9.5, ROWS),
}


def _sample(path, target="label", labels=None, **columns):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=ROWS), **columns})
    frame[target] = LABELS["binary"] if labels is None else labels
    frame.to_csv(path, index=False)
    return path


def _init(tmp_path, monkeypatch, *args):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["init", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("given", [False, True], ids=["guessed", "given"])
@pytest.mark.parametrize("task", sorted(README_GATES))
def test_the_gates_written_are_the_task_defaults(tmp_path, monkeypatch, task, given):
    sample = _sample(tmp_path / "sample.csv", labels=LABELS[task])
    flags = ["--task", task] if given else []
    _init(tmp_path, monkeypatch, sample, "--target", "label", *flags)

    written = yaml.safe_load((tmp_path / "ctloop.yaml").read_text())
    assert written["dataset"]["task"] == task
    gates = written["gates"]
    # what the product resolves for the task when the gates are left unset (a single source)
    unset = Config.model_validate({"dataset": {"target": "label", "task": task}}).gates
    assert (gates["primary_metric"], gates["min_metrics"]) == (
        unset.primary_metric,
        unset.min_metrics,
    )
    assert (gates["primary_metric"], gates["min_metrics"]) == README_GATES[task]
    loaded = load_config(tmp_path / "ctloop.yaml", environ={})
    assert loaded.gates.primary_metric == README_GATES[task][0]


def test_init_without_a_sample_writes_the_defaults_of_the_given_task(tmp_path, monkeypatch):
    _init(tmp_path, monkeypatch, "--task", "regression")
    gates = yaml.safe_load((tmp_path / "ctloop.yaml").read_text())["gates"]
    assert (gates["primary_metric"], gates["min_metrics"]) == README_GATES["regression"]


def test_names_in_square_brackets_are_printed_and_written_whole(tmp_path, monkeypatch):
    target, excluded = "Water flow [l/s]", "pump [id]"
    sample = _sample(
        tmp_path / "flow [v2].csv",
        target=target,
        labels=LABELS["regression"],
        **{excluded: np.arange(ROWS)},
    )
    result = _init(tmp_path, monkeypatch, sample, "--target", target, "--exclude", excluded)

    assert f"target {target}, task regression" in result.output
    assert "3 columns of flow [v2].csv" in result.output
    config = load_config(tmp_path / "ctloop.yaml", environ={})
    assert config.dataset.target == target and config.dataset.exclude == [excluded]


@pytest.mark.parametrize(
    "days",
    [np.arange(ROWS) % 22, 736389 + np.arange(ROWS)],
    ids=["day_numbers", "ordinal_dates"],
)
def test_a_timestamp_of_numbers_is_warned_about_and_the_file_still_written(
    tmp_path, monkeypatch, days
):
    sample = _sample(tmp_path / "sample.csv", day=days)
    result = _init(tmp_path, monkeypatch, sample, "--target", "label", "--timestamp", "day")

    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.output
    line = warnings[0]
    assert "--timestamp 'day'" in line and f"{ROWS} of {ROWS} sample values are not dates" in line
    assert "needs dates or date-times" in line
    config = load_config(tmp_path / "ctloop.yaml", environ={})
    assert config.dataset.timestamp == "day"


def test_the_timestamp_warning_counts_what_ingest_refuses(tmp_path, monkeypatch):
    from ctloop.lake.snapshots import read_batch
    from ctloop.validate.checks import validate_batch

    days = pd.date_range("2024-01-01", periods=ROWS, freq="D").strftime("%Y-%m-%d").to_list()
    days[5], days[7] = "soon", "[later]"
    sample = _sample(tmp_path / "sample.csv", day=days)
    result = _init(tmp_path, monkeypatch, sample, "--target", "label", "--timestamp", "day")

    assert f"2 of {ROWS} sample values are not dates (first at row 6: 'soon')" in result.output
    config = load_config(tmp_path / "ctloop.yaml", environ={})
    report = validate_batch(read_batch(sample), None, config)
    assert [i.message for i in report.issues if i.check == "type_error"] == [
        "column 'day': 2 of 60 values are not dates (first at row 6: 'soon')"
    ]


def test_a_timestamp_of_dates_gives_no_warning(tmp_path, monkeypatch):
    days = pd.date_range("2024-01-01", periods=ROWS, freq="6h").strftime("%Y-%m-%dT%H:%M:%S")
    sample = _sample(tmp_path / "sample.csv", day=days)
    result = _init(tmp_path, monkeypatch, sample, "--target", "label", "--timestamp", "day")
    assert "warning" not in result.output
