"""The estimated-decay trigger through the real flows, on the demo's loan stream (250
applications a day; the champion's holdout: the newest 200 of four days). A covariate shift
into the champion's region of doubt fires `ctloop.performance.estimated_drop` before any label,
records its onset, and the retrain that the labels then let run carries that trigger; drift on
columns the label ignores, with `triggers.drift_needs_estimated_drop`, neither emits
`ctloop.drift.detected` nor retrains, and says why in numbers."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from ctloop.data.demo import TARGET, TIMESTAMP, DemoScript, demo_config, generate_day
from ctloop.loop import triggers
from ctloop.model.train import prepare_features
from ctloop.names import DRIFT_DETECTED, PERFORMANCE_ESTIMATED_DROP
from ctloop.registry.store import CHAMPION, open_registry
from ctloop.stores.home import home_of

pytestmark = pytest.mark.slow
SCRIPT = DemoScript(rows_per_day=250)


@pytest.fixture(scope="module")
def bootstrapped(prefect_harness, tmp_path_factory):
    """Four labelled days and a first champion, built once for the module."""
    from flows.ingest import ingest
    from flows.retrain import RetrainRequest, retrain

    folder = tmp_path_factory.mktemp("estimated")
    config = demo_config(str(folder / "home"), rows_per_day=SCRIPT.rows_per_day)
    config.triggers.drift_min_rows = SCRIPT.rows_per_day  # one labelled day since the onset
    paths = []
    for day in range(4):
        path = folder / f"day{day}.csv"
        generate_day(SCRIPT, day, np.random.default_rng(day)).to_csv(path, index=False)
        paths.append(str(path))
    ingest(paths, config)
    first = retrain(RetrainRequest(trigger="new_data", reason="bootstrap"), config)
    assert first["promoted"], first["reasons"]
    return config


@pytest.fixture
def trained(bootstrapped, tmp_path):
    """Each test its own copy of the trained home (lake, registry, trigger state)."""
    home = tmp_path / "home"
    shutil.copytree(bootstrapped.paths.home, home)
    config = bootstrapped.model_copy(deep=True)
    config.paths.home = str(home)
    return config


@pytest.fixture
def published(monkeypatch):
    """The events the monitor's tasks publish, by name (and still published)."""
    import tasks.monitor as stage

    seen: dict[str, list[dict]] = {}
    real = stage.publish

    def record(config, event, resource, payload):
        seen.setdefault(event, []).append(payload)
        real(config, event, resource, payload)

    monkeypatch.setattr(stage, "publish", record)
    return seen


def _in_doubt(config, rows: int) -> pd.DataFrame:
    """Labelled applications of day 5 where the champion cannot rank: of 3000, the `rows` it
    scores nearest its median score (a shift of the inputs only; the label's law is the same)."""
    registry = open_registry(config)
    champion = registry.by_alias(CHAMPION)
    pool = generate_day(DemoScript(rows_per_day=3000), 5, np.random.default_rng(55))
    numeric = [n for n, kind in champion.signature if kind == "numeric"]
    categorical = [n for n, kind in champion.signature if kind == "categorical"]
    score = registry.load(champion).predict_proba(prepare_features(pool, numeric, categorical))
    near = np.argsort(np.abs(score[:, 1] - np.median(score[:, 1])))[:rows]
    return pool.iloc[np.sort(near)].reset_index(drop=True)


def test_a_harmful_shift_fires_before_the_labels_and_the_retrain_carries_the_trigger(
    trained, published, tmp_path
):
    from flows.ingest import ingest
    from flows.monitor import monitor
    from flows.retrain import RetrainRequest, retrain

    config = trained
    shifted = _in_doubt(config, SCRIPT.rows_per_day)
    features = tmp_path / "day05_features.csv"
    shifted.drop(columns=[TARGET]).to_csv(features, index=False)

    answer = monitor(str(features), config, html_when="never")
    estimate, fired = answer["estimate"], answer["estimated_drop"]
    assert fired["fired"], fired["reason"]
    assert estimate["ci_high"] < estimate["reference"] - config.triggers.performance_drop
    assert f"{estimate['ci_high']:.4f}" in fired["reason"] and fired["reason"] in answer["reasons"]
    [event] = published[PERFORMANCE_ESTIMATED_DROP]
    assert event["reason"] == fired["reason"] and event["ci_high"] == estimate["ci_high"]
    pending = triggers.load_pending(home_of(config))
    onset = str(shifted[TIMESTAMP].min())
    assert pending.trigger == triggers.ESTIMATED_DROP  # before the drift it explains
    assert pd.Timestamp(pending.since) == pd.Timestamp(onset)  # the batch's first row

    # the event's retrain waits for labelled rows since the onset ...
    request = RetrainRequest(trigger="estimated_drop", reason=fired["reason"], check_rules=True)
    waiting = retrain(request, config, return_state=True)
    assert waiting.name == "Skipped", waiting.message
    assert f"0 of {config.triggers.drift_min_rows} labelled rows" in waiting.message
    # ... which come: the same applications, labelled; the realized metric is below the bar too
    labelled = tmp_path / "day05_labelled.csv"
    shifted.to_csv(labelled, index=False)
    ingest([str(labelled)], config)
    result = retrain(request, config)
    assert result["trigger"] == "estimated_drop", result
    run = open_registry(config).client.get_run(result["run_id"])
    assert run.data.tags["ctloop.trigger"] == "estimated_drop"
    reason = run.data.tags["ctloop.reason"]
    assert reason.startswith(f"estimated_drop since {onset[:10]}"), reason
    assert f"{estimate['ci_high']:.4f}" in reason
    assert triggers.load_pending(home_of(config)) is None  # answered


def test_harmless_drift_does_not_retrain_when_it_needs_an_estimated_drop(
    trained, published, tmp_path
):
    from flows.ingest import ingest
    from flows.monitor import monitor

    config = trained
    config.triggers.drift_needs_estimated_drop = True
    config.drift.columns = ["age"]  # drift whenever age moves (the label ignores it)
    day = generate_day(SCRIPT, 5, np.random.default_rng(5))
    day["age"] = (day["age"] + 25).clip(18, 80)  # older applicants, all from the south
    day["region"] = "south"
    features = tmp_path / "day05_features.csv"
    day.drop(columns=[TARGET]).to_csv(features, index=False)

    answer = monitor(str(features), config, html_when="never")
    estimate = answer["estimate"]
    assert answer["drift"] and "age" in answer["drifted_columns"], answer["reasons"]
    assert not answer["estimated_drop"]["fired"]
    [kept] = [r for r in answer["reasons"] if r.startswith("drift does not retrain")]
    assert "does not hurt" in kept
    for number in (estimate["estimate"], estimate["ci_high"], estimate["reference"]):
        assert f"{number:.4f}" in kept, kept
    assert DRIFT_DETECTED not in published and PERFORMANCE_ESTIMATED_DROP not in published
    assert triggers.load_pending(home_of(config)) is None  # nothing for a retrain to answer

    # the labels of those rows arrive: the realized metric is set beside the estimate
    labelled = tmp_path / "day05_labelled.csv"
    day.to_csv(labelled, index=False)
    ingest([str(labelled)], config)
    later = monitor(None, config, html_when="never")
    [settled] = later["settled_estimates"]
    assert settled["estimate"] == estimate["estimate"]
    assert settled["error"] == pytest.approx(settled["estimate"] - settled["realized"])
    assert settled["covered"] == (settled["ci_low"] <= settled["realized"] <= settled["ci_high"])
    registry = open_registry(config)
    experiment = registry.client.get_experiment_by_name(f"{registry.name}-data")
    [series] = registry.client.search_runs(
        [experiment.experiment_id], filter_string="tags.`ctloop.series` = 'estimate-v1'"
    )
    realized = registry.client.get_metric_history(series.info.run_id, "realized_roc_auc")
    assert (settled["step"], settled["realized"]) in [(p.step, p.value) for p in realized]
