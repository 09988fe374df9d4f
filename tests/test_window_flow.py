"""The live retrain trains on the window chosen by evidence (`training.choose_window`), on river's
phishing stream read from the installed wheel: a stable concept, where all the data beats the
rule's two newest days."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.config.settings import Config
from ctloop.names import TAG_SNAPSHOTS, TAG_WINDOW
from ctloop.registry.store import open_registry

pytestmark = pytest.mark.slow

DAYS, ROWS = 8, 125


@pytest.fixture
def stream(tmp_path) -> list[str]:
    """8 daily CSV files of 125 phishing rows each, in the wheel's row order."""
    import river

    frame = pd.read_csv(Path(river.__file__).parent / "datasets" / "phishing.csv.gz")
    frame = frame.head(DAYS * ROWS)
    frame["when"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(len(frame)) // ROWS, "D")
    paths = []
    for day, part in frame.groupby(frame["when"].dt.day):
        path = tmp_path / f"day{day:02d}.csv"
        part.to_csv(path, index=False)
        paths.append(str(path))
    return paths


def _config(home: Path, choose: bool) -> Config:
    return Config.model_validate(
        {
            "dataset": {"target": "is_phishing", "task": "binary", "timestamp": "when"},
            "training": {
                "window_days": 2,
                "min_rows": None,
                "family": "logistic_regression",
                "choose_window": choose,
            },
            "paths": {"home": str(home)},
        }
    )


def test_a_retrain_trains_on_the_window_that_scores_best(prefect_harness, stream, tmp_path):
    from flows.ingest import ingest
    from flows.retrain import RetrainRequest, retrain

    chosen = _config(tmp_path / "chosen", choose=True)
    ingest(stream, chosen)
    result = retrain(RetrainRequest(reason="window"), chosen)
    assert result["blessed"], result["reasons"]
    tags = open_registry(chosen).client.get_run(result["run_id"]).data.tags
    assert tags[TAG_WINDOW].startswith("all window: roc_auc on the newest 50 rows"), tags
    scores = dict(part.rsplit(" ", 1) for part in tags[TAG_WINDOW].split(": ")[-1].split(", "))
    assert float(scores["all"]) > float(scores["rule"])
    assert len(tags[TAG_SNAPSHOTS].split(",")) == DAYS

    # off: the rule's window, the two newest days
    rule = _config(tmp_path / "rule", choose=False)
    ingest(stream, rule)
    result = retrain(RetrainRequest(reason="rule"), rule)
    tags = open_registry(rule).client.get_run(result["run_id"]).data.tags
    assert len(tags[TAG_SNAPSHOTS].split(",")) == 2
    assert "choose_window off" in tags[TAG_WINDOW]
