"""The `boolean` kind: its spellings, inference from a first batch, typing, and the model input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ctloop.config.settings import Config
from ctloop.data.batches import frame_to_raw, to_booleans
from ctloop.data.schema import BOOLEAN_KIND, NUMERIC, parse_boolean
from ctloop.validate.checks import profile_frame


def test_parse_boolean_spellings():
    values = ["True", "false", " YES ", "no", 1, 0, "1", True, np.False_, None, np.nan, "maybe", 2]
    parsed = parse_boolean(values)
    assert str(parsed.dtype) == "boolean"
    assert parsed.tolist()[:9] == [True, False, True, False, True, False, True, True, False]
    assert parsed.iloc[9:].isna().all()  # missing, and not a boolean at all


def test_arrow_booleans_count_what_is_not_one():
    conv = to_booleans(pa.array(["true", "No", None, "perhaps", "0"]))
    assert conv.values.to_pylist() == [True, False, None, None, False]
    assert (conv.bad, conv.first_bad, conv.first_bad_value) == (1, 3, "perhaps")


@pytest.mark.parametrize(
    "values, kind",
    [
        (["True", "False", "TRUE", "true"], BOOLEAN_KIND),
        (["yes", "no", "YES", "no"], BOOLEAN_KIND),
        ([True, False, True, False], BOOLEAN_KIND),  # pandas bool dtype
        (["0", "1", "1", "0"], NUMERIC),  # 0/1 stays numeric
        (["True", "0", "False", "1"], "categorical"),
    ],
)
def test_first_batch_infers_boolean(values, kind):
    config = Config.model_validate({"dataset": {"target": "y"}})
    frame = pd.DataFrame({"flag": values, "y": [0, 1, 0, 1]})
    profile, typed = profile_frame(frame, None, config)
    assert profile.inferred_schema().columns["flag"].kind == kind
    assert profile.report("b").passed
    if kind == BOOLEAN_KIND:
        assert pa.types.is_boolean(typed.schema.field("flag").type)


def test_boolean_column_of_a_dataframe_stays_boolean():
    raw = frame_to_raw(pd.DataFrame({"f": pd.array([True, None, False], dtype="boolean")}))
    assert raw.column("f").to_pylist() == [True, None, False]


def test_a_boolean_column_with_missing_values_trains_like_its_text():
    """Stored booleans reach the model as "True"/"False" (what a client sends)."""
    from ctloop.model.train import build_pipeline, prepare_features

    config = Config.model_validate({"dataset": {"target": "y"}})
    rng = np.random.default_rng(0)
    flags = pd.Series(rng.random(200) < 0.5, dtype=object).where(rng.random(200) > 0.1, None)
    frame = pd.DataFrame({"x": rng.normal(size=200), "flag": flags})
    y = (flags.fillna(False).astype(bool)).astype(int)
    pipeline = build_pipeline(["x"], ["flag"], config).fit(
        prepare_features(frame, ["x"], ["flag"]), y
    )
    served = prepare_features(
        pd.DataFrame({"x": [0.0, 0.0], "flag": ["True", "False"]}), ["x"], ["flag"]
    )
    assert pipeline.predict(served).tolist() == [1, 0]


def test_a_monitored_batch_is_coerced_to_booleans_like_the_lake():
    from ctloop.data.schema import ColumnSchema, Schema
    from ctloop.validate.checks import coerce_to_schema

    schema = Schema(1, "y", "binary", {"f": ColumnSchema("f", BOOLEAN_KIND)})
    frame = pd.DataFrame({"f": ["True", "no", None, True, "1"]})
    assert coerce_to_schema(frame, schema)["f"].tolist() == [True, False, None, True, True]
