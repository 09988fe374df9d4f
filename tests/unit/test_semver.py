"""Registry pure parts: semantic versions, ModelRef properties, the skops trusted-type list."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ctloop.config.settings import ModelFamily
from ctloop.errors import CtloopError
from ctloop.model.train import train_candidate
from ctloop.registry.store import TRUSTED_TYPES, ModelRef, next_semver, trusted_types_of

SIGNATURE = [["age", "numeric"], ["income", "numeric"], ["region", "categorical"]]


def ref(semver: str, signature=SIGNATURE, **tags) -> ModelRef:
    all_tags = {"ctloop.signature": json.dumps(signature), **tags}
    return ModelRef("loans", 4, semver, "run123", all_tags)


def test_first_model_is_1_0_0():
    assert next_semver(None, SIGNATURE) == "1.0.0"


@pytest.mark.parametrize(
    ("previous", "expected"), [("1.0.0", "1.1.0"), ("2.7.3", "2.8.0"), ("1.9.0", "1.10.0")]
)
def test_same_signature_is_a_minor_bump(previous, expected):
    assert next_semver(ref(previous), SIGNATURE) == expected


def test_signature_given_as_tuples_is_the_same_signature():
    as_tuples = [tuple(x) for x in SIGNATURE]
    assert next_semver(ref("1.2.0"), as_tuples) == "1.3.0"


@pytest.mark.parametrize(
    "changed",
    [
        SIGNATURE[:-1],  # a column dropped
        SIGNATURE + [["purpose", "categorical"]],  # a column added
        [["age", "categorical"], *SIGNATURE[1:]],  # a kind changed
        [SIGNATURE[1], SIGNATURE[0], SIGNATURE[2]],  # the input order changed
    ],
)
def test_changed_signature_is_a_major_bump(changed):
    assert next_semver(ref("1.4.0"), changed) == "2.0.0"
    assert next_semver(ref("3.1.2"), changed) == "4.0.0"


def test_previous_without_signature_tag_is_a_major_bump():
    bare = ModelRef("loans", 1, "1.0.0", "r", {})
    assert bare.signature == []
    assert next_semver(bare, SIGNATURE) == "2.0.0"


def test_model_ref_properties():
    r = ref(
        "1.2.0",
        **{
            "ctloop.snapshots": "aaa,bbb,,ccc",
            "ctloop.trained_on": "2026-01-05..2026-01-14",
            "ctloop.trigger": "drift",
            "ctloop.reason": "drift since 2026-01-23",
        },
    )
    assert r.uri == "models:/loans/4"
    assert r.snapshots == ["aaa", "bbb", "ccc"]
    assert r.signature == SIGNATURE
    assert r.trained_on == "2026-01-05..2026-01-14"
    summary = r.summary()
    assert summary["version"] == 4 and summary["semver"] == "1.2.0"
    assert summary["trigger"] == "drift" and summary["reason"] == "drift since 2026-01-23"
    assert summary["snapshots"] == ["aaa", "bbb", "ccc"]
    assert summary["run_id"] == "run123"
    empty = ModelRef("m", 1, "1.0.0", "r")
    assert empty.snapshots == [] and empty.trained_on == "" and empty.summary()["trigger"] is None


@pytest.fixture(scope="module")
def small_loans() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n),
            "income": rng.lognormal(10.8, 0.4, n),
            "region": rng.choice(["north", "south", "east"], n).astype(object),
        }
    )
    frame["default"] = ((frame["age"] < 35) ^ (rng.random(n) < 0.2)).astype(int)
    return frame


@pytest.mark.parametrize("family", list(ModelFamily))
def test_trusted_types_accept_each_family(small_loans, make_config, family):
    params = {"max_iter": 10} if family == ModelFamily.HIST_GRADIENT_BOOSTING else {}
    if family == ModelFamily.RANDOM_FOREST:
        params = {"n_estimators": 5}
    config = make_config(
        dataset={"timestamp": None, "id": None},
        training={"family": family.value, "params": params},
    )
    pipeline = train_candidate(small_loans, config).pipeline
    needed = trusted_types_of(pipeline)
    assert needed == sorted(needed)
    assert set(needed) <= TRUSTED_TYPES
    if family == ModelFamily.HIST_GRADIENT_BOOSTING:
        assert "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor" in needed
    if family == ModelFamily.RANDOM_FOREST:
        assert "sklearn.tree._tree.Tree" in needed


def _custom_step(X):
    return X


def test_trusted_types_refuse_anything_else(small_loans):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    pipeline = Pipeline(
        [("custom", FunctionTransformer(_custom_step)), ("model", LogisticRegression())]
    ).fit(small_loans[["age", "income"]], small_loans["default"])
    with pytest.raises(CtloopError, match="_custom_step"):
        trusted_types_of(pipeline)
