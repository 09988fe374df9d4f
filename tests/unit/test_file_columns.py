"""`file_columns`: a file's column names from its header alone (the landing folder asks it
whether a file holds the target)."""

from __future__ import annotations

import pandas as pd
import pytest

from ctloop.data.batches import file_columns
from ctloop.errors import InputError


def test_columns_of_a_csv_and_a_parquet_file(tmp_path):
    frame = pd.DataFrame({"income": [1.0, 2.0], "region": ["a", "b"]})
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_parquet(tmp_path / "a.parquet")
    assert file_columns(tmp_path / "a.csv") == ["income", "region"]
    assert file_columns(tmp_path / "a.parquet") == ["income", "region"]
    (tmp_path / "b.csv").write_text("income;region\n1;a\n")
    assert file_columns(tmp_path / "b.csv", ";") == ["income", "region"]


def test_a_bad_header_is_an_input_error_naming_the_file(tmp_path):
    (tmp_path / "dup.csv").write_text("x,x\n1,2\n")
    with pytest.raises(InputError, match="dup.csv: duplicate column names"):
        file_columns(tmp_path / "dup.csv")
    with pytest.raises(InputError, match="missing.csv: file not found"):
        file_columns(tmp_path / "missing.csv")
