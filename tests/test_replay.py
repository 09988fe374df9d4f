"""Replay: prequential comparison of retraining policies on labelled histories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.data.demo import DemoScript, demo_config, generate_day
from ctloop.errors import InputError
from ctloop.loop.replay.replayer import replay
from ctloop.loop.replay.stream import split_batches

pytestmark = pytest.mark.slow


def history(script: DemoScript) -> pd.DataFrame:
    rng = np.random.default_rng(script.seed)
    return pd.concat([generate_day(script, d, rng) for d in range(script.days)], ignore_index=True)


def config_for(tmp_path, script):
    config = demo_config(str(tmp_path / "home"), script.rows_per_day)
    config.triggers.min_new_rows = None
    return config


def test_split_batches_is_ordered_and_complete():
    script = DemoScript(days=5, rows_per_day=50)
    frame = history(script).sample(frac=1, random_state=0)  # shuffled on purpose
    batches = split_batches(frame, "application_date", "1D")
    assert len(batches) == 5
    assert sum(len(b) for _, b in batches) == len(frame)
    starts = [b["application_date"].min() for _, b in batches]
    assert starts == sorted(starts)
    assert all(b["application_date"].dt.normalize().nunique() == 1 for _, b in batches)
    with pytest.raises(InputError, match="freq"):
        split_batches(frame, "application_date", "fortnightly")
    with pytest.raises(InputError, match="'when'"):
        split_batches(frame, "when", "1D")


def test_no_drift_means_only_the_first_model(tmp_path):
    script = DemoScript(
        days=14, shift_start=99, shift_end=100, concept_drift_day=99, corrupt_day=-1
    )
    result = replay(history(script), config_for(tmp_path, script), "1D", 7, ("never", "ctloop"))
    assert result.policies["ctloop"].retrains == 1, [
        p.note for p in result.policies["ctloop"].points if p.note
    ]
    assert result.policies["never"].retrains == 1


def test_ctloop_adapts_to_drift_and_beats_never(tmp_path):
    script = DemoScript()
    result = replay(history(script), config_for(tmp_path, script), "1D", 7, ("never", "ctloop"))
    never, ours = result.policies["never"], result.policies["ctloop"]
    assert ours.retrains >= 2
    drift_day = script.concept_drift_day

    def after_drift(policy):
        return [p.metric for p in policy.points[drift_day + 3 :] if p.metric is not None]

    assert np.mean(after_drift(ours)) > np.mean(after_drift(never)) + 0.03
    assert ours.mean_metric > never.mean_metric
    retrained = [p for p in ours.points if p.retrained]
    assert any(p.note.startswith(("drift", "performance")) for p in retrained)


def test_replay_command_by_flags_alone(tmp_path):
    script = DemoScript(days=10, rows_per_day=200, shift_start=99, concept_drift_day=99)
    data = tmp_path / "history.csv"
    history(script).to_csv(data, index=False)
    ctloop = str(Path(sys.executable).parent / "ctloop")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTLOOP_")}
    args = [ctloop, "replay", str(data), "--target", "default", "--timestamp", "application_date"]
    proc = subprocess.run(
        [
            *args,
            "--freq",
            "2D",
            "--policies",
            "never,schedule",
            "--schedule-every",
            "1",
            "--label-delay",
            "1",
            "--json",
            "--out",
            str(tmp_path / "out"),
            "--home",
            str(tmp_path / "home"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["batches"] == 5
    assert set(answer["policies"]) == {"never", "schedule"}
    for summary in answer["policies"].values():
        assert set(summary) >= {"metric_name", "mean_metric", "retrains", "seconds", "regret"}
    assert set(answer["oracle"]) >= {"mean_metric", "retrains", "retrain_cost"}
    assert answer["label_delay"] == "1 batch"
    # never's schedule is one the oracle considered: it cannot regret less than the oracle
    assert answer["policies"]["never"]["regret"] >= answer["oracle"]["regret"] - 1e-9
    assert answer["policies"]["schedule"]["retrains"] > answer["policies"]["never"]["retrains"]
    png = Path(answer["plot"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "never" in Path(answer["report"]).read_text()

    bad = subprocess.run(
        [*args, "--freq", "nonsense", "--home", str(tmp_path / "home")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--freq 'nonsense'" in bad.stderr


def test_oracle_and_regret_on_a_public_stream(tmp_path):
    """river's phishing stream (read from the installed wheel), in row order, 10 batches."""
    import river

    from ctloop.config.settings import Config

    frame = pd.read_csv(Path(river.__file__).parent / "datasets" / "phishing.csv.gz")
    frame["when"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(len(frame)) // 125, "D")
    config = Config.model_validate(
        {
            "dataset": {"target": "is_phishing", "task": "binary", "timestamp": "when"},
            "training": {"min_rows": 250, "family": "logistic_regression"},
            "triggers": {"bootstrap_rows": 250, "min_new_rows": None},
            "paths": {"home": str(tmp_path)},
        }
    )
    result = replay(frame, config, "1D", 3, ("never", "every_batch", "schedule"), oracle=True)
    best, every = result.oracle, result.policies["every_batch"]
    assert result.batches == 10 and best.scored_units == 8
    # the oracle's matrix holds every-batch's own prequential scores on its diagonal
    diagonal = [best.scores[u, u + 1] for u in range(best.scored_units)]
    assert diagonal == pytest.approx([p.metric for p in every.points[2:]])
    for alpha in (0.0, 0.02, 1.0):
        oracle, regrets = result.at_cost(alpha)
        assert all(r >= oracle.schedule.regret - 1e-9 for r in regrets.values()), alpha
    # free retrains: the oracle's summed metric is at least every-batch's
    free, _ = result.at_cost(0.0)
    assert free.schedule.total >= every.total_metric - 1e-9
