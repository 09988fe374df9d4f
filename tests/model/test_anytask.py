"""Any dataset, any task: metrics follow the task, thresholds follow the metric's scale, the
leakage check, small batches, and replay deciding as the live loop does.

Data: scikit-learn's bundled breast cancer (binary), wine (multiclass) and diabetes
(regression), and small generated streams for replay.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets

from ctloop.config.settings import Config, TriggerConfig, load_config
from ctloop.errors import ConfigError, InputError
from ctloop.gates.blessing import bless
from ctloop.lake.snapshots import Manifest, list_snapshots, select_window, write_snapshot
from ctloop.loop import policy, triggers
from ctloop.loop.replay.replayer import Replayer, replay
from ctloop.loop.replay.stream import split_batches
from ctloop.model import metrics as m
from ctloop.model.analyse import analyse_model, model_card
from ctloop.model.evaluate import evaluate_predictions, macro_ovr_auc
from ctloop.model.train import prepare_features, split_holdout, train_candidate
from ctloop.stores.home import Home


def _frame(loader) -> pd.DataFrame:
    bunch = loader(as_frame=True)
    frame = bunch.frame.rename(columns={bunch.target.name: "label"})
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def _by_flags(task: str, **more) -> Config:
    """The config a user gets from `--target label --task TASK` and nothing else."""
    overrides = {"dataset.target": "label", "dataset.task": task, **more}
    return load_config(overrides=overrides, environ={})


# --- the metric module ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "higher"),
    [("roc_auc", True), ("roc_auc_ovr", True), ("r2", True), ("rmse", False), ("mae", False)],
)
def test_direction_decides_what_better_means(metric, higher):
    assert m.higher_is_better(metric) is higher
    good, bad = (0.9, 0.8) if higher else (0.8, 0.9)
    assert m.better(good, bad, metric) and not m.better(bad, good, metric)
    assert m.improvement(good, bad, metric) == pytest.approx(0.1)


def test_thresholds_are_amounts_of_a_unit_metric_and_fractions_of_an_error():
    # ROC AUC: 0.05 is an amount, as old configs meant it
    assert m.relative_improvement(0.80, 0.85, "roc_auc") == pytest.approx(-0.05)
    # rmse in price units: 42.8 worse than 480.3 is 8.9% worse
    assert m.relative_improvement(523.1, 480.3, "rmse") == pytest.approx(-42.8 / 480.3)
    assert m.better(470.0, 480.0, "rmse", margin=0.02)  # 2.1% better
    assert not m.better(475.0, 480.0, "rmse", margin=0.02)  # 1.0% better


@pytest.mark.parametrize(
    ("online", "retrain"),
    [(523.1, True), (495.0, False), (470.0, False)],  # +8.9%, +3.1%, better
)
def test_decay_of_an_error_metric_is_relative(online, retrain):
    rules = TriggerConfig(performance_drop=0.05, performance_min_rows=10)
    decision = triggers.decide_performance(online, 480.3, 500, rules, "rmse")
    assert decision.retrain is retrain, decision.reason
    if retrain:  # the reason carries the numbers: the amount, the share and the limit
        assert "decayed by 42.8 (8.9%) > 5% of 480.3 (24.02)" in decision.reason


def test_a_drop_within_the_holdout_noise_is_not_decay():
    rules = TriggerConfig(performance_drop=0.05, performance_min_rows=10)
    # 8.4% worse, but the holdout's spread (std 1.1 on 200 rows) makes 2 SE = 3.3
    calm = triggers.decide_performance(24.23, 22.36, 250, rules, "rmse", 1.1, 200)
    assert not calm.retrain and "within the noise 2.952" in calm.reason
    decayed = triggers.decide_performance(61.2, 22.36, 250, rules, "rmse", 1.1, 200)
    assert decayed.retrain and "> noise 2.952" in decayed.reason
    off = TriggerConfig(performance_drop=0.05, performance_min_rows=10, performance_noise=0)
    assert triggers.decide_performance(24.23, 22.36, 250, off, "rmse", 1.1, 200).retrain


def test_decay_of_roc_auc_reads_old_configs_unchanged():
    rules = TriggerConfig(performance_drop=0.05, performance_min_rows=10)
    assert triggers.decide_performance(0.79, 0.85, 500, rules, "roc_auc").retrain
    assert not triggers.decide_performance(0.81, 0.85, 500, rules, "roc_auc").retrain


# --- the loss rule: a lasting small drop pays for a retrain (triggers.retrain_cost) ----------


def test_a_small_drop_that_lasts_retrains_once_its_loss_passes_the_retrain_cost():
    rules = TriggerConfig(performance_drop=0.05, performance_min_rows=10, retrain_cost=0.02)
    # 0.01 of ROC AUC below the holdout: far below the 0.05 drop, but summed over the batches
    # served it passes alpha 0.02 after 2 batches of 100 rows
    early = triggers.decide_performance(0.84, 0.85, 150, rules, "roc_auc", batch_rows=100)
    assert not early.retrain
    assert "0.0150 lost over 1.5 batches <= triggers.retrain_cost 0.0200" in early.reason
    late = triggers.decide_performance(0.84, 0.85, 300, rules, "roc_auc", batch_rows=100)
    assert late.retrain, late.reason
    assert "0.0100 lost on each of 3.0 batches served = 0.0300 > triggers.retrain_cost" in (
        late.reason
    )
    # the same rows without a batch size: only the drop rule, which 0.01 does not meet
    assert not triggers.decide_performance(0.84, 0.85, 300, rules, "roc_auc").retrain
    # alpha 0: the loss rule is off
    free = rules.model_copy(update={"retrain_cost": 0.0})
    assert not triggers.decide_performance(0.84, 0.85, 300, free, "roc_auc", batch_rows=100).retrain
    # better than at blessing: nothing lost, however long
    assert not triggers.decide_performance(
        0.86, 0.85, 10**6, rules, "roc_auc", batch_rows=100
    ).retrain


def test_the_loss_rule_reads_an_error_metric_as_a_fraction_and_keeps_the_noise_guard():
    rules = TriggerConfig(performance_drop=0.05, performance_min_rows=10, retrain_cost=0.02)
    # rmse 1% above the holdout's 20.0 (0.2 units): within the 5% drop; 0.01 x 3 batches = 0.03
    decided = triggers.decide_performance(20.2, 20.0, 300, rules, "rmse", batch_rows=100)
    assert decided.retrain and "1.0% lost on each of 3.0 batches served = 3.0%" in decided.reason
    # a holdout spread of std 0.5 on 200 rows makes 2 SE about 1.2: a 0.2 rise is noise
    noisy = triggers.decide_performance(20.2, 20.0, 300, rules, "rmse", 0.5, 200, batch_rows=100)
    assert not noisy.retrain and "but within the noise" in noisy.reason


# --- task-aware defaults --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "primary", "floors"),
    [
        ("binary", "roc_auc", {"roc_auc": 0.6}),
        ("multiclass", "roc_auc_ovr", {"roc_auc_ovr": 0.6}),
        ("regression", "rmse", {"r2": 0.0}),
    ],
)
def test_primary_metric_and_floors_follow_the_task(task, primary, floors):
    config = _by_flags(task)
    assert config.gates.primary_metric == primary
    assert config.gates.min_metrics == floors


def test_explicit_metric_settings_win_over_the_task():
    config = _by_flags("regression", **{"gates.primary_metric": "mae", "gates.min_metrics": {}})
    assert config.gates.primary_metric == "mae" and config.gates.min_metrics == {}


def test_error_metric_blessing_lower_wins_with_a_relative_margin():
    gates = _by_flags("regression", **{"gates.min_improvement": 0.05}).gates
    champion = {"rmse": 50.0, "r2": 0.4}
    assert bless({"rmse": 46.0, "r2": 0.5}, champion, gates).blessed  # 8% better
    refused = bless({"rmse": 49.0, "r2": 0.45}, champion, gates)  # 2% better
    assert not refused.blessed
    assert "lower is better" in refused.reasons[0] and "5% of 50" in refused.reasons[0]
    floor = bless({"rmse": 40.0, "r2": -0.1}, None, gates)
    assert not floor.blessed and "r2 -0.1000 < floor 0" in floor.reasons[0]


@pytest.mark.parametrize(
    ("loader", "task"),
    [
        (datasets.load_breast_cancer, "binary"),
        (datasets.load_wine, "multiclass"),
        (datasets.load_diabetes, "regression"),
    ],
)
def test_each_task_end_to_end_by_flags_alone(loader, task):
    config = _by_flags(task, **{"training.params": {"max_iter": 60}})
    split = split_holdout(_frame(loader), config)
    candidate = train_candidate(split.train, config)
    X = prepare_features(split.holdout, candidate.numeric, candidate.categorical)
    metrics = evaluate_predictions(candidate.pipeline, X, split.holdout["label"], config)
    primary = config.gates.primary_metric
    assert metrics[primary] is not None
    blessing = bless(metrics, None, config.gates)
    assert blessing.blessed, blessing.reasons  # the task's floors are met by a real model
    # a champion that predicts worse is beaten, in the metric's own direction
    worse = {primary: metrics[primary] * (0.9 if m.higher_is_better(primary) else 1.1)}
    assert bless(metrics, worse, config.gates).blessed


# --- leakage ---------------------------------------------------------------------------------


def _analysed(frame: pd.DataFrame):
    config = _by_flags(
        "binary",
        **{
            "training.params": {"max_iter": 60},
            "analysis.plots": False,
            "analysis.permutation_repeats": 1,
        },
    )
    split = split_holdout(frame, config)
    candidate = train_candidate(split.train, config)
    analysis = analyse_model(
        candidate.pipeline,
        split.holdout,
        candidate.numeric,
        candidate.categorical,
        config,
        train=split.train,
    )
    return config, analysis


@pytest.fixture(scope="module")
def leaky():
    """Breast cancer with a column made of the label plus noise."""
    frame = _frame(datasets.load_breast_cancer)
    noise = np.random.default_rng(0).normal(0, 0.15, len(frame))
    return _analysed(frame.assign(leak=frame["label"] + noise))


def test_a_leaking_column_is_named_in_the_blessing_and_the_card(leaky):
    config, analysis = leaky
    assert [f.feature for f in analysis.leakage] == ["leak"]
    blessing = bless(analysis.metrics, None, config.gates, warnings=analysis.warnings)
    assert blessing.blessed  # a warning, not a refusal (gates.leakage: warn)
    assert blessing.reasons[0].startswith("warning: possible target leakage: feature 'leak'")
    assert "--exclude leak" in blessing.reasons[0]
    card = model_card(
        analysis,
        project="p",
        family="hgb",
        params={},
        trained_on="-",
        snapshots=[],
        train_rows=1,
        holdout_rows=1,
        split="random",
        config=config,
        blessing_reasons=list(blessing.reasons),
        blessed=True,
    )
    assert "## Possible target leakage" in card and "feature 'leak'" in card


def test_leakage_can_refuse(leaky):
    config, analysis = leaky
    gates = config.gates.model_copy(update={"leakage": "block"})
    blessing = bless(analysis.metrics, None, gates, warnings=analysis.warnings)
    assert not blessing.blessed
    assert blessing.reasons[0].startswith("refused: possible target leakage: feature 'leak'")


def test_no_leakage_warning_on_clean_data():
    # breast cancer's best real feature alone reaches ROC AUC ~0.975: strong, but not a leak
    _, analysis = _analysed(_frame(datasets.load_breast_cancer))
    assert analysis.metrics["roc_auc"] > 0.95
    assert analysis.leakage == ()


# --- replay: the task's metric, small batches, the live loop's decisions ---------------------


def _regression_stream(
    days: int = 10, per_day: int = 500, flip: int = 4, seed: int = 0
) -> pd.DataFrame:
    """A price-like target in the hundreds whose relation to `x1` flips on day `flip`."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    day = np.repeat(np.arange(days), per_day)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    slope = np.where(day < flip, 80.0, -80.0)
    price = 500 + slope * x1 + 30 * x2 + rng.normal(0, 20, n)
    stamps = pd.Timestamp("2025-01-01") + pd.to_timedelta(day, unit="D")
    return pd.DataFrame({"ts": stamps, "x1": x1, "x2": x2, "label": price})


def test_regression_replay_reports_rmse_by_flags_alone():
    config = _by_flags("regression", **{"dataset.timestamp": "ts"})
    config.training.params = {"max_iter": 40}
    result = replay(_regression_stream(), config, "1D", policies=("never", "ctloop"))
    assert result.metric_name == "rmse"
    for name in ("never", "ctloop"):
        assert result.policies[name].metric_name == "rmse"
        assert result.policies[name].mean_metric is not None
    # after the flip, never-retrain's error is far larger; ctloop retrains and does better,
    # without retraining on every batch
    ctloop, never = result.policies["ctloop"], result.policies["never"]
    assert ctloop.mean_metric < never.mean_metric
    assert 2 <= ctloop.retrains < result.batches - 1


def test_a_metric_the_task_does_not_compute_is_a_config_error():
    with pytest.raises(ConfigError, match="gates.primary_metric: 'roc_auc' is not computed for a"):
        _by_flags("regression", **{"gates.primary_metric": "roc_auc"})
    with pytest.raises(ConfigError, match="gates.min_metrics: 'rmse' is not computed"):
        _by_flags("binary", **{"gates.min_metrics": {"rmse": 3.0}})
    config = _by_flags("regression", **{"dataset.timestamp": "ts"})
    config.gates.primary_metric = "roc_auc"  # changed after loading: replay still says so
    with pytest.raises(InputError, match="gates.primary_metric: 'roc_auc' is not computed"):
        replay(_regression_stream(days=4), config, "1D")


def test_multiclass_auc_is_scored_on_the_classes_a_batch_has():
    classes = np.array(["a", "b", "c"])
    y = np.array(["a", "a", "b", "b"])  # no "c" in this batch
    proba = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]])
    assert macro_ovr_auc(y, proba, classes) == pytest.approx(1.0)
    assert macro_ovr_auc(np.array(["a", "a"]), proba[:2], classes) is None


def _manifests(rows_per_day: list[int]) -> list[Manifest]:
    out = []
    for day, rows in enumerate(rows_per_day):
        stamp = (pd.Timestamp("2025-01-01") + pd.Timedelta(days=day)).isoformat()
        out.append(Manifest(f"s{day}", "", "", rows, [], 1, stamp, stamp, stamp))
    return out


def test_a_slow_stream_window_reaches_back_to_min_rows_but_not_before_since():
    manifests = _manifests([1] * 40)
    assert len(select_window(manifests, window_days=14)) == 14
    assert len(select_window(manifests, window_days=14, min_rows=30)) == 30
    assert len(select_window(manifests, window_days=14, min_rows=100)) == 40
    since = manifests[35].time_min
    assert len(select_window(manifests, window_days=14, since=since, min_rows=30)) == 5
    assert len(select_window(manifests, window_days=14, min_rows=30, max_rows=20)) == 20


def _daily_stream(days: int, seed: int = 0) -> pd.DataFrame:
    """One labelled row a day (a weather-station-like stream), binary."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(days, 3))
    label = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.7, days) > 0).astype(int)
    stamps = pd.date_range("2020-01-01", periods=days, freq="D")
    return pd.DataFrame({"ts": stamps, "a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": label})


def test_one_row_a_day_trains_at_the_defaults_and_is_scored():
    config = _by_flags("binary", **{"dataset.timestamp": "ts"})
    config.training.params = {"max_iter": 30}
    frame = _daily_stream(1060)
    result = replay(frame, config, "1D", policies=("never",))
    never = result.policies["never"]
    first = next(p for p in never.points if p.retrained)
    assert "first model" in first.note
    # one-row batches are scored together until both classes are in
    scored = [p for p in never.points if p.metric is not None]
    assert scored and never.mean_metric > 0.7
    assert any("scored with the next batches" in p.note for p in never.points)
    # the rule's window reaches back past window_days (14 rows) to training.min_rows; the
    # window chosen by evidence is the rule's or all the data (a stable concept)
    batches = split_batches(frame, "ts", "1D")
    rule = config.model_copy(deep=True)
    rule.training.choose_window = False
    assert len(Replayer(rule, batches, 7).window_ids(1059)) == config.training.min_rows == 1000
    assert len(Replayer(config, batches, 7).window_ids(1059)) in (1000, 1060)


def test_replay_and_the_live_loop_window_and_decide_alike(tmp_path):
    """The same stream as replay batches and as lake snapshots: same windows, same decisions."""
    frame = _regression_stream(days=10, per_day=150)
    config = _by_flags("regression", **{"dataset.timestamp": "ts"})
    config.training.window_days = 3
    config.triggers.min_new_rows = 600  # the live default rule is on in replay too
    batches = split_batches(frame, "ts", "1D")
    replayer = Replayer(config, batches, 7)
    home = Home(tmp_path / "home").ensure()
    for i, (_, batch) in enumerate(batches):
        write_snapshot(batch, home, f"day{i}", 1, "ts")
    live = list_snapshots(home)
    rows = {m.snapshot: m.rows for m in live}
    start_of = {m.snapshot: m.time_min for m in live}
    for i in range(len(batches)):
        mine = replayer.window_ids(i)
        theirs = policy.window_ids(live[: i + 1], config)
        assert [replayer.manifests[int(s[1:])].time_min for s in mine] == [
            start_of[s] for s in theirs
        ]
        assert sum(replayer.manifests[int(s[1:])].rows for s in mine) == sum(
            rows[s] for s in theirs
        )
    # a champion trained on the first window; the rules on each later day agree
    champion_replay = tuple(replayer.window_ids(2))
    champion_live = tuple(policy.window_ids(live[:3], config))
    decisions = []
    for i in range(3, len(batches)):
        served = type("Served", (), {"snapshots": champion_replay})()
        state = replayer.state_at(i, served, None, None)
        live_state = policy.LoopState(tuple(live[: i + 1]), champion_live, None, None, None)
        a, b = policy.decide(state, config.triggers), policy.decide(live_state, config.triggers)
        assert (a.retrain, a.trigger, a.reason) == (b.retrain, b.trigger, b.reason)
        decisions.append(a.retrain)
    assert decisions[:3] == [False, False, False] and decisions[3] is True  # 600 new rows
