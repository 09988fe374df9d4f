"""Fan-out through Prefect task runners: tuning shares, per-slice evaluation, score partitions.

The same wiring (`flows/fanout.py`) runs on the embedded runners (threads, a process pool) and,
in the cluster profile, on a real two-worker `distributed.LocalCluster` (no PostgreSQL: the
Optuna study is a journal file both local workers reach).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from prefect import flow

from ctloop.config.settings import Config, Profile
from ctloop.data.demo import ID, TARGET, TIMESTAMP, DemoScript, generate_day
from ctloop.model import analyse as analysis
from ctloop.model.train import split_holdout, train_candidate
from ctloop.registry.store import ModelRef
from ctloop.serving import batch


def loan_config(tmp_path, **sections) -> Config:
    data: dict = {
        "dataset": {"target": TARGET, "timestamp": TIMESTAMP, "id": ID},
        "training": {"family": "logistic_regression", "system_metrics": False},
        "analysis": {"sensitive_columns": ["region"], "min_slice_rows": 15},
        "tuning": {
            "enabled": True,
            "trials": 6,
            "workers": 2,
            "folds": 2,
            "families": ["logistic_regression"],
            "storage": f"journal://{tmp_path / 'optuna' / 'journal.log'}",
        },
        "paths": {"home": str(tmp_path / "home")},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return Config.model_validate(data)


@pytest.fixture(scope="module")
def loans() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    script = DemoScript(rows_per_day=200)
    return pd.concat([generate_day(script, d, rng) for d in range(4)], ignore_index=True)


@pytest.fixture(scope="module")
def fitted(loans, tmp_path_factory):
    config = loan_config(tmp_path_factory.mktemp("fitted"))
    split = split_holdout(loans, config)
    candidate = train_candidate(split.train, config)
    ref = ModelRef(
        name="loans",
        version=3,
        semver="1.2.0",
        run_id="run",
        tags={"ctloop.signature": json.dumps(candidate.signature)},
    )
    return split, candidate, ref


# -- the flows under test: the fan-out helpers inside one flow run each -------------------------


@flow(name="fanout-tune")
def tune_flow(train: pd.DataFrame, config: Config):
    from flows.fanout import tune_study

    return tune_study(train, config, None, "test")


@flow(name="fanout-slices")
def slices_flow(model, numeric, categorical, holdout, columns, config):
    from flows.fanout import evaluate_slices

    return evaluate_slices(model, numeric, categorical, holdout, columns, config)


@flow(name="fanout-score")
def score_flow(pipeline, ref, frame, config):
    from flows.fanout import score_partitions

    return score_partitions(pipeline, ref, frame, config)


def _task_runs(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return sorted(r.name.rsplit("-", 1)[0] for r in runs)


def _study_trials(config: Config, study_name: str):
    import optuna

    from ctloop.model.tune import open_storage

    return optuna.load_study(study_name=study_name, storage=open_storage(config.tuning.storage))


# -- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "size", "expected"),
    [(10, 4, [4, 4, 2]), (8, 4, [4, 4]), (3, 4, [3]), (0, 4, [0]), (5, 1, [1] * 5)],
)
def test_partitions_keep_every_row_in_order(rows, size, expected):
    frame = pd.DataFrame({"x": range(rows)})
    parts = batch.split_partitions(frame, size)
    assert [len(p) for p in parts] == expected
    assert pd.concat(parts)["x"].tolist() == list(range(rows))


def test_partition_rows_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        batch.split_partitions(pd.DataFrame({"x": [1]}), 0)


def test_scores_of_different_versions_are_not_put_together():
    one = batch.BatchScores(pd.DataFrame({"prediction": [1]}), 1, "1.0.0", 0.1)
    two = batch.BatchScores(pd.DataFrame({"prediction": [0]}), 2, "2.0.0", 0.1)
    with pytest.raises(ValueError, match="different versions"):
        batch.concat_scores([one, two])


def test_trial_shares_cover_the_budget():
    from ctloop.model.tune import split_trials

    assert split_trials(7, 3) == (3, 2, 2)
    assert split_trials(2, 4) == (1, 1)
    assert split_trials(5, 1) == (5,)


def test_slice_metrics_per_column_add_up_to_all_columns(fitted, tmp_path):
    split, c, _ = fitted
    config = loan_config(tmp_path)
    columns = analysis.slice_columns(split.holdout, c.categorical, config)
    assert len(columns) >= 2
    whole = analysis.slice_metrics(
        c.pipeline, split.holdout, c.numeric, c.categorical, columns, config
    )
    parts = [
        analysis.slice_column_metrics(
            c.pipeline, split.holdout, c.numeric, c.categorical, col, config
        )
        for col in reversed(columns)
    ]
    merged = analysis.merge_slices(parts[::-1])
    assert merged == whole and list(merged) == columns


# -- embedded runners (threads, a process pool) under a Prefect API -----------------------------


def test_slices_fan_out_to_one_task_per_column(prefect_harness, fitted, tmp_path):
    split, c, _ = fitted
    config = loan_config(tmp_path)
    columns = analysis.slice_columns(split.holdout, c.categorical, config)
    expected = analysis.slice_metrics(
        c.pipeline, split.holdout, c.numeric, c.categorical, columns, config
    )
    state = slices_flow(
        c.pipeline, c.numeric, c.categorical, split.holdout, columns, config, return_state=True
    )
    result = state.result()
    assert result == expected and list(result) == columns
    assert any(len(per) > 1 for per in result.values())
    assert _task_runs(state.state_details.flow_run_id) == ["slice-metrics"] * len(columns)


def test_score_partitions_keep_predictions_and_order(prefect_harness, fitted, tmp_path):
    split, c, ref = fitted
    frame = split.holdout.sample(frac=1.0, random_state=3)  # an order that is not the index's
    whole = batch.score_batch_frame(c.pipeline, ref, frame, loan_config(tmp_path))
    config = loan_config(tmp_path, serving={"score_partition_rows": 37})
    state = score_flow(c.pipeline, ref, frame, config, return_state=True)
    parts = state.result()
    pd.testing.assert_frame_equal(parts.frame, whole.frame)
    assert parts.frame[ID].tolist() == frame[ID].tolist()
    assert (parts.version, parts.semver) == (3, "1.2.0")
    n = -(-len(frame) // 37)
    assert n > 2
    assert _task_runs(state.state_details.flow_run_id) == ["score-rows"] * n


def test_one_partition_is_one_task(prefect_harness, fitted, tmp_path):
    split, c, ref = fitted
    config = loan_config(tmp_path)  # the default partition size is larger than the holdout
    state = score_flow(c.pipeline, ref, split.holdout, config, return_state=True)
    assert len(state.result().frame) == len(split.holdout)
    assert _task_runs(state.state_details.flow_run_id) == ["score-rows"]


@pytest.mark.slow
def test_tuning_shares_run_in_two_processes_into_one_study(prefect_harness, loans, tmp_path):
    config = loan_config(tmp_path)
    split = split_holdout(loans, config)
    state = tune_flow(split.train, config, return_state=True)
    result = state.result()
    assert result.workers == 2 and len(result.trials) == 6
    trials = _study_trials(config, result.study_name).trials
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2 and all(w.startswith("pid:") for w in workers), workers
    assert f"pid:{__import__('os').getpid()}" not in workers  # not in this process
    names = _task_runs(state.state_details.flow_run_id)
    assert names == ["prepare-study", "read-study", "tune-trials-local"]


def test_one_tuning_share_runs_in_this_process(prefect_harness, loans, tmp_path):
    config = loan_config(tmp_path, tuning={"workers": 1, "trials": 2})
    split = split_holdout(loans, config)
    result = tune_flow(split.train, config)
    trials = _study_trials(config, result.study_name).trials
    assert {t.user_attrs["worker"] for t in trials} == {f"pid:{__import__('os').getpid()}"}


# -- the cluster profile: a real two-worker Dask cluster ----------------------------------------


@pytest.fixture(scope="module")
def dask_cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
    ) as cluster:
        yield cluster


@pytest.mark.cluster
def test_fan_out_on_dask_workers(prefect_harness, dask_cluster, fitted, loans, tmp_path):
    from distributed import Client, get_task_stream

    split, c, ref = fitted
    config = loan_config(tmp_path, serving={"score_partition_rows": 50})
    config.cluster.dask_address = dask_cluster.scheduler_address
    config.profile = Profile.CLUSTER
    assert config.tuning.storage.startswith("journal://")  # not replaced by PostgreSQL
    train = split_holdout(loans, config).train
    columns = analysis.slice_columns(split.holdout, c.categorical, config)
    frame = split.holdout.sample(frac=1.0, random_state=5)
    partitions = -(-len(frame) // 50)
    with Client(dask_cluster.scheduler_address) as client:
        workers = {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
        assert len(workers) == 2
        with get_task_stream(client) as stream:
            tuned = tune_flow(train, config)
            sliced = slices_flow(
                c.pipeline, c.numeric, c.categorical, split.holdout, columns, config
            )
            scored = score_flow(c.pipeline, ref, frame, config)
    # every fanned-out task ran on the cluster, and both workers took some
    assert len(stream.data) == 2 + len(columns) + partitions
    assert len({t["worker"] for t in stream.data}) == 2

    # tuning: one share per worker, every trial in the one study
    trials = _study_trials(config, tuned.study_name).trials
    assert len(trials) == config.tuning.trials == len(tuned.trials)
    assert all(t.state.is_finished() for t in trials)
    assert {t.user_attrs["worker"] for t in trials} == {f"dask:{w}" for w in workers}

    # slices: the same numbers as in this process
    expected = analysis.slice_metrics(
        c.pipeline, split.holdout, c.numeric, c.categorical, columns, config
    )
    assert sliced == expected and list(sliced) == columns

    # scoring: the same predictions in the same order as one unpartitioned call
    whole = batch.score_batch_frame(c.pipeline, ref, frame, config)
    pd.testing.assert_frame_equal(scored.frame, whole.frame)
