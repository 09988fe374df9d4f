"""The ingest flows under a Prefect test harness: gate, quarantine with Evidently's report,
warnings shown, and the landing folder flow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctloop.data.demo import TARGET, DemoScript, corrupt, demo_config, generate_day
from ctloop.lake import snapshots as lake
from ctloop.stores.home import home_of

pytestmark = pytest.mark.slow

SCRIPT = DemoScript(rows_per_day=300)


def write_day(folder: Path, d: int, broken: bool = False) -> str:
    frame = generate_day(SCRIPT, d, np.random.default_rng(d))
    if broken:
        frame = corrupt(frame, np.random.default_rng(5))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"day{d:02d}{'_bad' if broken else ''}.csv"
    frame.to_csv(path, index=False)
    return str(path)


def test_ingest_flow_gates_and_quarantines_with_evidently_report(prefect_harness, tmp_path):
    from flows.ingest import ingest

    config = demo_config(str(tmp_path / "home"), rows_per_day=SCRIPT.rows_per_day)
    home = home_of(config)
    good = ingest([write_day(tmp_path / "in", d) for d in range(3)], config)
    assert [a["rows"] for a in good["accepted"]] == [300] * 3 and good["quarantined"] == []
    before = {p.name: p.read_bytes() for p in home.manifests.glob("*.json")}

    # a shifted, concept-drift day is accepted with a data-drift warning (shown, not silent)
    drifted = ingest([write_day(tmp_path / "in", 20)], config)
    warnings = drifted["accepted"][0]["warnings"]
    assert any(w["check"] == "data_drift" and "region" in w["column"] for w in warnings)

    bad = ingest([write_day(tmp_path / "in", 4, broken=True)], config)
    assert bad["accepted"] == []
    reasons = bad["quarantined"][0]["reasons"]
    assert {(r["check"], r["column"]) for r in reasons if r["severity"] == "block"} >= {
        ("type_error", "credit_score"),
        ("missing_values", "income"),
    }
    record = lake.list_quarantined(home)[-1]
    folder = Path(record.folder)
    assert (folder / "report.html").stat().st_size > 10_000  # Evidently's HTML
    assert "report.html" in (folder / "README.md").read_text()
    after = {p.name: p.read_bytes() for p in home.manifests.glob("*.json")}
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 1


def test_ingest_landing_flow(prefect_harness, tmp_path):
    from flows.ingest import ingest_landing

    config = demo_config(str(tmp_path / "home"), rows_per_day=SCRIPT.rows_per_day)
    landing = tmp_path / "landing"
    write_day(landing, 0)
    write_day(landing, 1, broken=True)
    first = ingest_landing(str(landing), config)
    assert len(first["accepted"]) == 1 and len(first["quarantined"]) == 1
    assert first["monitored"] == []
    nothing = {"accepted": [], "quarantined": [], "monitored": []}
    assert ingest_landing(str(landing), config) == nothing
    assert sorted(p.name for p in (landing / ".done").iterdir()) == ["day00.csv"]


def _features_only(folder: Path, d: int, drop: tuple[str, ...] = ()) -> Path:
    frame = generate_day(SCRIPT, d, np.random.default_rng(d)).drop(columns=[TARGET, *drop])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"day{d:02d}_features{'_short' if drop else ''}.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_features_file_in_the_landing_folder_is_monitored_not_quarantined(
    prefect_harness, tmp_path
):
    """README: a file without the target holding the schema's features goes to the monitor
    (ledger `monitored`, `.done/`); one that lacks a feature too, or lands before the first
    accepted batch (no schema to tell features from a misspelt target), is quarantined."""
    import json

    from flows.ingest import ingest_landing

    config = demo_config(str(tmp_path / "home"), rows_per_day=SCRIPT.rows_per_day)
    home = home_of(config)
    landing = tmp_path / "landing"
    early = _features_only(landing, 0)
    first = ingest_landing(str(landing), config)
    assert first["monitored"] == [] and [q["path"] for q in first["quarantined"]] == [str(early)]
    assert "target column 'default' is missing" in first["quarantined"][0]["reasons"][0]["message"]

    write_day(landing, 1)
    features = _features_only(landing, 2)
    short = _features_only(landing, 3, drop=("income",))
    second = ingest_landing(str(landing), config)
    assert [a["rows"] for a in second["accepted"]] == [300]
    assert [m["path"] for m in second["monitored"]] == [str(features)]
    assert second["monitored"][0]["reasons"] == ["no champion yet: nothing to compare against"]
    assert [q["path"] for q in second["quarantined"]] == [str(short)]
    assert len(lake.list_snapshots(home)) == 1 and len(lake.list_quarantined(home)) == 2
    done = sorted(p.name for p in (landing / ".done").iterdir())
    assert done == ["day01.csv", "day02_features.csv"]
    ledger = [json.loads(line) for line in (landing / ".ctloop-ingested.jsonl").open()]
    assert {e["file"]: e["status"] for e in ledger}["day02_features.csv"] == "monitored"


def test_quarantined_batches_complete_the_flow_without_error_logs(
    prefect_harness, tmp_path, caplog
):
    """A numeric column of text (Evidently's empty-column error), a 0-byte and a binary file:
    each is quarantined with its reason, the flow run ends Completed, nothing logs an ERROR."""
    import logging

    from flows.ingest import ingest

    config = demo_config(str(tmp_path / "home"), rows_per_day=SCRIPT.rows_per_day)
    config.validation.evidently_report = "on_block"
    first = ingest([write_day(tmp_path / "in", 0)], config)
    assert len(first["accepted"]) == 1
    text = generate_day(SCRIPT, 1, np.random.default_rng(1)).assign(credit_score="unknown")
    text.to_csv(tmp_path / "in" / "text.csv", index=False)
    (tmp_path / "in" / "empty.csv").write_bytes(b"")
    (tmp_path / "in" / "binary.csv").write_bytes(bytes(range(256)) * 16)
    before = {p.name: p.read_bytes() for p in home_of(config).lake.rglob("*") if p.is_file()}
    paths = [str(tmp_path / "in" / n) for n in ("text.csv", "empty.csv", "binary.csv")]
    with caplog.at_level(logging.INFO):
        state = ingest(paths, config, return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["accepted"] == [] and len(result["quarantined"]) == 3
    first_reasons = [q["reasons"][0] for q in result["quarantined"]]
    assert first_reasons[0]["column"] == "credit_score"
    assert "file is empty" in first_reasons[1]["message"]
    assert "binary" in first_reasons[2]["message"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert "Traceback" not in caplog.text and "NoneType: None" not in caplog.text
    after = {p.name: p.read_bytes() for p in home_of(config).lake.rglob("*") if p.is_file()}
    assert after == before
