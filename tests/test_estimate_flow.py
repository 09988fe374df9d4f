"""`ctloop estimate` on a version the real flows trained (scikit-learn's breast-cancer data):
the estimator is fitted on the version's rebuilt holdout, cached, and answers on the command
line for a features file without labels; a bad file is one line of error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn import datasets

from ctloop.config.settings import Config, dump_config
from ctloop.registry.store import open_registry
from ctloop.stores.home import home_of

pytestmark = pytest.mark.slow

CTLOOP = str(Path(sys.executable).parent / "ctloop")


@pytest.fixture(scope="module")
def trained(prefect_harness, tmp_path_factory):
    """Version 1, trained on 400 tumours by the ingest and retrain flows; 169 more left over."""
    from flows.ingest import ingest
    from flows.retrain import RetrainRequest, retrain

    root = tmp_path_factory.mktemp("estimate")
    bunch = datasets.load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "label"}).sample(frac=1.0, random_state=0)
    frame.iloc[:400].to_csv(root / "tumours.csv", index=False)
    frame.iloc[400:].drop(columns="label").to_csv(root / "features.csv", index=False)
    config = Config.model_validate(
        {
            "paths": {"home": str(root / "home")},
            "dataset": {"target": "label", "task": "binary"},
            "training": {"family": "hist_gradient_boosting", "params": {"max_iter": 40}},
            "analysis": {"plots": False, "permutation_repeats": 1},
        }
    )
    ingest([str(root / "tumours.csv")], config)
    result = retrain(RetrainRequest(reason="estimate test"), config)
    assert result["promoted"], result["reasons"]
    return root, config, result


def test_the_estimator_is_fitted_on_the_versions_own_holdout_and_cached(trained, monkeypatch):
    from ctloop.registry import estimator as est

    _root, config, result = trained
    registry = open_registry(config)
    ref = est.resolve_version(registry, None)
    assert ref.version == result["version"]
    pipeline = registry.load(ref)
    estimator = est.estimator_of(config, ref, pipeline)
    run = registry.client.get_run(result["run_id"]).data.metrics
    # the same holdout rows the retrain scored, and its metrics as the reference
    assert estimator.holdout_rows == run["holdout_rows"] == 80
    assert estimator.reference["roc_auc"] == run["holdout_roc_auc"]
    assert estimator.calibrator.classes == [0, 1]
    cache = home_of(config).root / "estimators" / f"{registry.name}-v{ref.version}.json"
    assert json.loads(cache.read_text())["run_id"] == result["run_id"]

    def no_rebuild(*_args):
        raise AssertionError("the cached estimator should have been used")

    monkeypatch.setattr(est, "rebuild_holdout", no_rebuild)
    assert est.estimator_of(config, ref, pipeline) == estimator


def test_estimate_command_answers_json_and_names_a_bad_file(trained):
    root, config, result = trained
    home = home_of(config).root
    dump_config(config, home / "ctloop.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTLOOP_", "PREFECT_"))}
    env.update(CTLOOP_HOME=str(home), OMP_NUM_THREADS="1")

    def ctloop(*args):
        return subprocess.run(
            [CTLOOP, *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
        )

    proc = ctloop("estimate", "features.csv", "--chunk-rows", "50", "--version", "v1", "--json")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert {"metric", "reference", "estimate", "ci_low", "ci_high", "chunks"} <= set(answer)
    assert answer["metric"] == "roc_auc" and answer["version"] == result["version"]
    assert answer["reference"] == pytest.approx(result["metrics"]["roc_auc"])
    assert [(c["start"], c["end"], c["rows"]) for c in answer["chunks"]] == [
        (0, 49, 50),
        (50, 99, 50),
        (100, 149, 50),
        (150, 168, 19),
    ]
    for part in [answer, *answer["chunks"]]:
        low, mid, high = part["ci_low"], part["estimate"], part["ci_high"]
        assert 0.5 < low <= mid + 1e-12 and mid <= high + 1e-12 and high <= 1
    assert "realized" not in answer  # no labels in the file

    bunch = datasets.load_breast_cancer(as_frame=True)
    bunch.frame.drop(columns=["target", "mean radius"]).head(30).to_csv(
        root / "short.csv", index=False
    )
    bad = ctloop("estimate", "short.csv")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "mean radius" in errors[0], bad.stderr


def test_monitor_estimates_the_champion_on_every_features_batch_as_a_line(trained):
    from flows.monitor import monitor

    root, config, result = trained
    first = monitor(str(root / "features.csv"), config, html_when="never")
    estimate = first["estimate"]
    assert estimate["metric"] == "roc_auc" and estimate["version"] == result["version"]
    assert estimate["ci_low"] <= estimate["estimate"] <= estimate["ci_high"]
    assert estimate["rows"] == 169 and "realized" not in estimate  # a features file: no labels
    monitor(str(root / "features.csv"), config, html_when="never")
    registry = open_registry(config)
    experiment = registry.client.get_experiment_by_name(f"{registry.name}-data")
    [series] = registry.client.search_runs(
        [experiment.experiment_id], filter_string="tags.`ctloop.series` = 'estimate-v1'"
    )
    history = registry.client.get_metric_history(series.info.run_id, "estimated_roc_auc")
    assert [p.step for p in history] == [0, 1]  # one run, one point per check: a line
    assert history[0].value == pytest.approx(estimate["estimate"])
