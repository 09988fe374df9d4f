"""Model layer under the real retrain flow: tuning, lineage and rebuild, refusals, semver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctloop.config.settings import dump_config
from ctloop.data.demo import TARGET, DemoScript, demo_config, generate_day
from ctloop.lake import snapshots as lake
from ctloop.registry.store import CHAMPION, open_registry
from ctloop.stores.home import home_of

pytestmark = pytest.mark.slow

SCRIPT = DemoScript(rows_per_day=150)


def _write_day(folder, day, *, seed=0, shuffle_labels=False):
    frame = generate_day(SCRIPT, day, np.random.default_rng(seed + day))
    if shuffle_labels:
        labels = np.random.default_rng(99).permutation(frame[TARGET].to_numpy())
        frame = frame.assign(**{TARGET: labels})
    path = folder / f"day{day:02d}{'_shuffled' if shuffle_labels else ''}.csv"
    frame.to_csv(path, index=False)
    return str(path)


@pytest.fixture
def config(tmp_path):
    return demo_config(str(tmp_path / "home"), rows_per_day=SCRIPT.rows_per_day)


def test_tuned_retrain_records_lineage_that_rebuilds(prefect_harness, config, tmp_path):
    from ctloop.registry.lineage import lineage_of, rebuild_version
    from flows.ingest import ingest
    from flows.retrain import RetrainRequest, retrain

    config = config.model_copy(deep=True)
    config.tuning.enabled = True
    config.tuning.trials = 4
    config.tuning.workers = 2
    config.tuning.folds = 2
    config.tuning.families = ["logistic_regression", "hist_gradient_boosting"]
    config.analysis.sensitive_columns = ["region"]
    ingest([_write_day(tmp_path, d) for d in range(4)], config)

    result = retrain(RetrainRequest(reason="tuned"), config)
    assert result["blessed"] and result["promoted"], result["reasons"]
    tuning = result["tuning"]
    assert tuning["trials"] == 4 and tuning["workers"] == 2
    assert tuning["completed"] + tuning["pruned"] == 4
    assert result["family"] == tuning["best_family"]
    assert result["params"] == tuning["best_params"]

    registry = open_registry(config)
    run = registry.client.get_run(result["run_id"])
    nested = registry.client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{result['run_id']}'"
    )
    assert len(nested) == 4
    assert all("family" in r.data.params for r in nested)
    artifacts = {a.path for a in registry.client.list_artifacts(result["run_id"])}
    assert {"model_card.md", "blessing.json", "lineage.json", "analysis.json"} <= artifacts
    plots = {a.path for a in registry.client.list_artifacts(result["run_id"], "plots")}
    assert {"plots/roc.png", "plots/pr.png", "plots/calibration.png"} <= plots
    assert "system/cpu_utilization_percentage" in run.data.metrics
    assert any(k.startswith("param_importance_") for k in run.data.metrics)
    card = registry.run_text(result["run_id"], "model_card.md")
    assert "## Slices" in card and "region" in card and "## Limits" in card

    # which data, which code, which parameters
    answer = lineage_of(config, result["version"])
    manifests = {m.snapshot: m for m in lake.list_snapshots(home_of(config))}
    assert [d["snapshot"] for d in answer["data"]] == result["snapshots"]
    assert all(d["sha256"] == manifests[d["snapshot"]].sha256 for d in answer["data"])
    assert (
        answer["code"]["git_commit"]
        == registry.version(result["version"]).tags["ctloop.git_commit"]
    )
    assert answer["model"]["params"] == result["params"]

    # rebuilt from the record alone: identical holdout metrics to those logged on the run
    rebuilt = rebuild_version(config, result["version"])
    assert rebuilt.identical, rebuilt.differences
    logged = {k.removeprefix("holdout_"): v for k, v in run.data.metrics.items()}
    for name, value in rebuilt.metrics.items():
        assert value == pytest.approx(logged[name], abs=1e-9), name

    # the same through the command line
    home = home_of(config).root
    dump_config(config, home / "ctloop.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTLOOP_", "PREFECT_"))}
    env["CTLOOP_HOME"] = str(home)
    ctloop = str(Path(sys.executable).parent / "ctloop")
    proc = subprocess.run(
        [ctloop, "lineage", str(result["version"]), "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout)
    assert cli["data"] == answer["data"] and cli["code"] == answer["code"]
    missing = subprocess.run(
        [ctloop, "lineage", "99"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert missing.returncode != 0 and "version 99: no such version" in missing.stderr


def test_shuffled_labels_are_refused_and_semver_follows_the_schema(
    prefect_harness, config, tmp_path
):
    from flows.ingest import ingest
    from flows.retrain import RetrainRequest, retrain

    narrow = config.model_copy(deep=True)
    narrow.dataset.exclude = ["region"]
    narrow.gates.min_improvement = -1.0  # this part is about versions, not about winning
    ingest([_write_day(tmp_path, d, seed=3) for d in range(4)], narrow)
    first = retrain(RetrainRequest(reason="first"), narrow)
    assert first["semver"] == "1.0.0"
    same = retrain(RetrainRequest(reason="same schema"), narrow)
    assert same["semver"] == "1.1.0"
    wide = narrow.model_copy(deep=True)
    wide.dataset.exclude = []
    widened = retrain(RetrainRequest(reason="region is an input now"), wide)
    assert widened["semver"] == "2.0.0", widened["reasons"]
    registry = open_registry(config)
    assert registry.by_alias(CHAMPION).version == widened["version"]

    # a batch with shuffled labels becomes the recent holdout: refused, with the shortfall
    ingest([_write_day(tmp_path, 4, seed=3, shuffle_labels=True)], wide)
    refused = retrain(RetrainRequest(reason="after shuffled labels"), config)
    assert refused["blessed"] is False and refused["promoted"] is False
    assert refused["version"] is None and refused["semver"] is None
    floor = [r for r in refused["reasons"] if r.startswith("roc_auc") and "< floor 0.6" in r]
    assert floor and "short by" in floor[0], refused["reasons"]
    assert registry.by_alias(CHAMPION).version == widened["version"]
    blessing = json.loads(registry.run_text(refused["run_id"], "blessing.json"))
    assert blessing["blessed"] is False and blessing["reasons"] == refused["reasons"]
