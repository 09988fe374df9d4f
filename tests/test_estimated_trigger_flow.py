"""The estimated-decay trigger through the real flows (scikit-learn's breast-cancer data, dated
100 tumours a day): a shift the champion cannot handle fires `ctloop.performance.estimated_drop`
before any label, and the retrain that follows the labels carries that trigger; drift that the
estimate says is harmless does not retrain when `triggers.drift_needs_estimated_drop` is on."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets

from ctloop.config.settings import Config
from ctloop.loop import triggers
from ctloop.names import DRIFT_DETECTED, PERFORMANCE_ESTIMATED_DROP
from ctloop.registry.store import open_registry
from ctloop.stores.home import home_of

pytestmark = pytest.mark.slow
START = pd.Timestamp("2026-03-02")


def _dated(frame: pd.DataFrame, first_day: int) -> pd.DataFrame:
    days = first_day + np.arange(len(frame)) // 100
    stamps = (
        START
        + pd.to_timedelta(days, unit="D")
        + pd.to_timedelta(np.arange(len(frame)) % 100, unit="min")
    )
    return frame.assign(seen_at=stamps.astype(str))


@pytest.fixture(scope="module")
def tumours(prefect_harness, tmp_path_factory):
    """Version 1, trained on 400 dated tumours (days 0-3); the other 169 are left for the tests."""
    from flows.ingest import ingest
    from flows.retrain import RetrainRequest, retrain

    root = tmp_path_factory.mktemp("estimated")
    bunch = datasets.load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "label"}).sample(frac=1.0, random_state=0)
    _dated(frame.iloc[:400], 0).to_csv(root / "first.csv", index=False)
    config = Config.model_validate(
        {
            "paths": {"home": str(root / "home")},
            "dataset": {"target": "label", "task": "binary", "timestamp": "seen_at"},
            "training": {"family": "hist_gradient_boosting", "params": {"max_iter": 40}},
            "analysis": {"plots": False, "permutation_repeats": 1},
            "triggers": {"bootstrap_rows": 100, "drift_min_rows": 100, "min_new_rows": None},
        }
    )
    ingest([str(root / "first.csv")], config)
    first = retrain(RetrainRequest(reason="estimated-drop test"), config)
    assert first["promoted"], first["reasons"]
    return root, config, frame.iloc[400:].reset_index(drop=True)


@pytest.fixture
def home(tumours, tmp_path):
    """Each test its own copy of the trained home."""
    _root, config, rest = tumours
    shutil.copytree(config.paths.home, tmp_path / "home")
    config = config.model_copy(deep=True)
    config.paths.home = str(tmp_path / "home")
    return config, rest


@pytest.fixture
def published(monkeypatch):
    """The events the monitor's tasks publish, by name."""
    import tasks.monitor as stage

    seen: dict[str, list[dict]] = {}
    real = stage.publish

    def record(config, event, resource, payload):
        seen.setdefault(event, []).append(payload)
        real(config, event, resource, payload)

    monkeypatch.setattr(stage, "publish", record)
    return seen


def test_a_harmful_shift_fires_before_the_labels_and_the_retrain_carries_the_trigger(
    home, published, tmp_path
):
    from flows.ingest import ingest
    from flows.monitor import monitor
    from flows.retrain import RetrainRequest, retrain

    config, rest = home
    features = [c for c in rest.columns if c != "label"]
    # new tumours between a benign and a malignant one, where the champion is unsure: of 2000
    # blends, the 100 it scores nearest 0.5 (a shift into its region of doubt)
    rng = np.random.default_rng(0)
    benign, malignant = rest[rest.label == 1][features], rest[rest.label == 0][features]
    weight = rng.random((2000, 1))
    blends = pd.DataFrame(
        weight * benign.sample(2000, replace=True, random_state=1).to_numpy()
        + (1 - weight) * malignant.sample(2000, replace=True, random_state=2).to_numpy(),
        columns=features,
    )
    registry = open_registry(config)
    champion = registry.by_alias("champion")
    proba = registry.load(champion).predict_proba(blends[features])[:, 1]
    mixed = blends.iloc[np.argsort(np.abs(proba - 0.5))[:100]].reset_index(drop=True)
    shifted = _dated(mixed, 10)
    shifted.to_csv(tmp_path / "day10_features.csv", index=False)

    answer = monitor(str(tmp_path / "day10_features.csv"), config, html_when="never")
    estimate, fired = answer["estimate"], answer["estimated_drop"]
    assert fired["fired"], fired["reason"]
    assert estimate["ci_high"] < estimate["reference"] - config.triggers.performance_drop
    assert f"{estimate['ci_high']:.4f}" in fired["reason"] and fired["reason"] in answer["reasons"]
    [event] = published[PERFORMANCE_ESTIMATED_DROP]
    assert event["reason"] == fired["reason"] and event["ci_high"] == estimate["ci_high"]
    pending = triggers.load_pending(home_of(config))
    assert pending.trigger == triggers.ESTIMATED_DROP
    assert pending.since.startswith("2026-03-12")  # the batch's first timestamp: its onset

    # the event's retrain waits for labelled rows since the onset ...
    request = RetrainRequest(trigger="estimated_drop", reason=fired["reason"], check_rules=True)
    waiting = retrain(request, config, return_state=True)
    assert waiting.name == "Skipped" and "0 of 100 labelled rows" in waiting.message
    # ... which come: the same kind of tumours, labelled
    labelled = _dated(rest, 10)
    labelled.to_csv(tmp_path / "day10_labelled.csv", index=False)
    ingest([str(tmp_path / "day10_labelled.csv")], config)
    result = retrain(request, config)
    assert result["trigger"] == "estimated_drop", result
    version = open_registry(config).version(result["version"])
    assert version.tags["ctloop.trigger"] == "estimated_drop"
    assert "estimated_drop since 2026-03-12" in version.tags["ctloop.reason"]
    assert f"{estimate['ci_high']:.4f}" in version.tags["ctloop.reason"]
    assert triggers.load_pending(home_of(config)) is None  # answered


def test_harmless_drift_does_not_retrain_when_it_needs_an_estimated_drop(home, published, tmp_path):
    from flows.monitor import monitor

    config, rest = home
    config.triggers.drift_needs_estimated_drop = True
    # the largest tumours: their inputs moved far from the training window, but the model is
    # sure about them
    big = rest.sort_values("mean area").iloc[-100:].drop(columns="label")
    _dated(big, 10).to_csv(tmp_path / "day10_features.csv", index=False)
    answer = monitor(str(tmp_path / "day10_features.csv"), config, html_when="never")
    assert answer["drift"], answer["reasons"]
    assert not answer["estimated_drop"]["fired"]
    [kept] = [r for r in answer["reasons"] if r.startswith("drift does not retrain")]
    assert "does not hurt" in kept and f"{answer['estimate']['ci_high']:.4f}" in kept
    assert DRIFT_DETECTED not in published and PERFORMANCE_ESTIMATED_DROP not in published
    assert triggers.load_pending(home_of(config)) is None

    # the labels of those rows arrive: the realized metric is set beside the estimate
    labelled = _dated(rest.sort_values("mean area").iloc[-100:], 10)
    labelled.to_csv(tmp_path / "day10_labelled.csv", index=False)
    from flows.ingest import ingest

    ingest([str(tmp_path / "day10_labelled.csv")], config)
    later = monitor(None, config, html_when="never")
    [settled] = later["settled_estimates"]
    assert settled["estimate"] == answer["estimate"]["estimate"]
    assert settled["error"] == pytest.approx(settled["estimate"] - settled["realized"])
    registry = open_registry(config)
    experiment = registry.client.get_experiment_by_name(f"{registry.name}-data")
    [series] = registry.client.search_runs(
        [experiment.experiment_id], filter_string="tags.`ctloop.series` = 'estimate-v1'"
    )
    realized = registry.client.get_metric_history(series.info.run_id, "realized_roc_auc")
    assert (settled["step"], settled["realized"]) in [(p.step, p.value) for p in realized]
    # the labelled snapshot itself is estimated with its labels: realized and error at once
    assert later["estimate"]["chunks"][0]["error"] == pytest.approx(
        later["estimate"]["estimate"] - later["estimate"]["realized"]
    )
