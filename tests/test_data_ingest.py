"""The data layer without Prefect: streamed ingestion, snapshots under concurrency and a real
kill, bad batches quarantined with reasons, personal data, the landing folder, lineage."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.data.demo import DemoScript, corrupt, demo_config, generate_day
from ctloop.data.schema import infer_schema, load_latest_schema
from ctloop.ingest.landing import LEDGER, scan_landing
from ctloop.ingest.stage import ingest_path, stage_file, stage_frame
from ctloop.lake import snapshots as lake
from ctloop.stores.home import Home

SCRIPT = DemoScript(rows_per_day=400)


def day(d: int, seed: int = 0) -> pd.DataFrame:
    return generate_day(SCRIPT, d, np.random.default_rng(seed + d))


@pytest.fixture
def config(tmp_path):
    return demo_config(str(tmp_path / "home"), rows_per_day=SCRIPT.rows_per_day)


@pytest.fixture
def home(config):
    return Home(Path(config.paths.home)).ensure()


def write_csv(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    frame.to_csv(path, index=False)
    return path


def lake_state(home: Home) -> dict[str, bytes]:
    """Every committed file of the lake with its bytes (to prove nothing accepted changes)."""
    files = list(home.snapshots.glob("*.parquet")) + list(home.manifests.glob("*.json"))
    return {p.name: p.read_bytes() for p in files}


# --- snapshots: content addressed, chunk-size independent --------------------------------


def test_one_file_ingested_twice_is_one_snapshot(config, home, tmp_path):
    path = write_csv(tmp_path / "in", "d0.csv", day(0))
    first = ingest_path(path, config, home)
    second = ingest_path(path, config, home)
    assert first.accepted and second.accepted
    assert first.write.new is True and second.write.new is False
    assert first.write.manifest.snapshot == second.write.manifest.snapshot
    assert len(lake.list_snapshots(home)) == 1
    m = first.write.manifest
    assert (m.rows, m.format, m.schema_version) == (400, "csv", 1)
    assert m.time_min.startswith("2026-01-05") and m.time_max.startswith("2026-01-05")


@pytest.mark.parametrize("chunk_bytes", [1 << 10, 1 << 13, 1 << 24])
def test_content_hash_does_not_depend_on_chunk_size(tmp_path, chunk_bytes):
    frames = [day(d) for d in range(2)]
    paths = [write_csv(tmp_path / "in", f"d{d}.csv", f) for d, f in enumerate(frames)]

    def ids(chunk: int, name: str) -> tuple[list[str], list[int]]:
        config = demo_config(str(tmp_path / name))
        config.ingest.chunk_bytes = chunk
        home = Home(tmp_path / name).ensure()
        outs = [ingest_path(p, config, home) for p in paths]
        return [o.write.manifest.snapshot for o in outs], [
            o.write.manifest.row_groups for o in outs
        ]

    small, small_groups = ids(chunk_bytes, f"h{chunk_bytes}")
    whole, whole_groups = ids(1 << 26, "whole")
    assert small == whole
    if chunk_bytes < 1 << 13:
        assert min(small_groups) > 5 and whole_groups == [1, 1]  # it really was chunked


def test_streamed_schema_equals_the_whole_frame_schema(config, home, tmp_path):
    path = write_csv(tmp_path / "in", "d0.csv", day(0))
    config.ingest.chunk_bytes = 4096
    assert ingest_path(path, config, home).accepted
    assert load_latest_schema(home.schema_dir) == infer_schema(pd.read_csv(path), config.dataset)


def test_a_dataframe_and_its_csv_are_the_same_snapshot(config, home, tmp_path):
    frame = day(1)
    staged = stage_frame(frame, config, home, "python")
    assert staged.passed
    from ctloop.ingest.stage import commit

    written, _ = commit(staged, config, home)
    path = write_csv(tmp_path / "in", "d1.csv", frame)
    again = ingest_path(path, config, home)
    assert again.write.manifest.snapshot == written.manifest.snapshot
    assert again.write.new is False


def test_snapshot_values_are_typed_to_the_schema(config, home, tmp_path):
    path = write_csv(tmp_path / "in", "d0.csv", day(0))
    m = ingest_path(path, config, home).write.manifest
    stored = lake.load_snapshots(home, [m.snapshot])
    assert pd.api.types.is_datetime64_any_dtype(stored["application_date"])
    assert stored["income"].dtype == float and stored["default"].dtype == np.int64
    assert stored["region"].map(type).eq(str).all()
    pd.testing.assert_series_equal(stored["income"], day(0)["income"], check_names=False)


# --- concurrency and a real kill ------------------------------------------------------------


def _ingest_many(home_root: str, paths: list[str], out: str) -> None:
    config = demo_config(home_root)
    home = Home(Path(home_root))
    results = [ingest_path(p, config, home).as_dict() for p in paths]
    Path(out).write_text(json.dumps([(r["status"], r.get("snapshot")) for r in results]))


def test_fifty_files_from_four_processes_give_fifty_snapshots(config, home, tmp_path):
    frames = [
        generate_day(DemoScript(rows_per_day=60), d % 28, np.random.default_rng(d))
        for d in range(50)
    ]
    paths = [str(write_csv(tmp_path / "in", f"f{i:02d}.csv", f)) for i, f in enumerate(frames)]
    ctx = mp.get_context("spawn")
    procs = []
    for w in range(4):
        mine = paths[w::4]
        # every worker also re-ingests a file another worker owns: same content, same snapshot
        mine = mine + [paths[(w * 13 + 1) % 50]]
        p = ctx.Process(target=_ingest_many, args=(config.paths.home, mine, str(tmp_path / f"{w}")))
        p.start()
        procs.append(p)
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    results = [r for w in range(4) for r in json.loads((tmp_path / f"{w}").read_text())]
    assert all(status == "accepted" for status, _ in results)
    manifests = lake.list_snapshots(home)
    assert len(manifests) == 50
    assert {m.snapshot for m in manifests} == {s for _, s in results}
    assert len(list(home.snapshots.glob("*.parquet"))) == 50
    assert not list(home.snapshots.glob(".*")) and not list(home.manifests.glob(".*"))
    schemas = list(home.schema_dir.glob("schema-v*.json"))
    assert [p.name for p in schemas] == ["schema-v1.json"]
    # none partial: every snapshot reads back with the rows its manifest states
    for m in manifests:
        assert len(lake.load_snapshots(home, [m.snapshot])) == m.rows == 60


def _slow_writer(home_root: str, path: str, marker: str) -> None:
    config = demo_config(home_root)
    config.ingest.chunk_bytes = 2048

    def hook(groups: int) -> None:
        if groups == 3:
            Path(marker).write_text(str(os.getpid()))
            time.sleep(60)  # the parent kills us here, mid-write

    ingest_path(path, config, Home(Path(home_root)), on_row_group=hook)


def test_a_writer_killed_mid_write_leaves_nothing_and_a_rerun_completes(config, home, tmp_path):
    path = write_csv(tmp_path / "in", "d0.csv", day(0))
    marker = tmp_path / "writing"
    ctx = mp.get_context("spawn")
    child = ctx.Process(target=_slow_writer, args=(config.paths.home, str(path), str(marker)))
    child.start()
    deadline = time.monotonic() + 120
    while not marker.exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the writer never reached its third row group"
    staged = list(home.snapshots.glob(".*.tmp"))
    assert staged  # a partial file exists, under a temporary name
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert lake.list_snapshots(home) == []
    assert list(home.snapshots.glob("*.parquet")) == []

    again = ingest_path(path, config, home)
    assert again.accepted and again.write.new is True
    assert len(lake.list_snapshots(home)) == 1
    assert not list(home.snapshots.glob(".*.tmp"))  # the dead writer's file was swept
    assert len(lake.load_snapshots(home, [again.write.manifest.snapshot])) == 400


# --- bad batches: quarantined or warned, with the column named, accepted data unchanged ----


def _garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(3).bytes(4096))


BAD = {
    "empty": (lambda p: p.write_bytes(b""), "unreadable", None, "file is empty"),
    "wrong_delimiter": (
        lambda p: day(5).to_csv(p, index=False, sep=";"),
        "missing_target",
        "default",
        "wrong delimiter",
    ),
    "binary": (_garbage, "unreadable", None, "binary content"),
    "missing_target": (
        lambda p: day(5).drop(columns=["default"]).to_csv(p, index=False),
        "missing_target",
        "default",
        "'default'",
    ),
    "text_in_numeric": (
        lambda p: (
            day(5)
            .astype({"age": object})
            .assign(age=lambda f: f["age"].where(f.index % 3 != 1, "old"))
            .to_csv(p, index=False)
        ),
        "type_error",
        "age",
        "first at row 2: 'old'",
    ),
    "all_null_column": (
        lambda p: day(5).assign(employment_years=np.nan).to_csv(p, index=False),
        "missing_values",
        "employment_years",
        "100% missing",
    ),
    "unseen_categories": (
        lambda p: (
            day(5)
            .assign(purpose=[f"p{i}" for i in range(SCRIPT.rows_per_day)])
            .to_csv(p, index=False)
        ),
        "unseen_categories",
        "purpose",
        "unseen categories",
    ),
    "corrupt_demo": (
        lambda p: corrupt(day(5), np.random.default_rng(1)).to_csv(p, index=False),
        "type_error",
        "credit_score",
        "'UNKNOWN'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_batch_is_quarantined_naming_the_column(config, home, tmp_path, case):
    make, check, column, needle = BAD[case]
    for d in range(2):
        assert ingest_path(write_csv(tmp_path / "ok", f"d{d}.csv", day(d)), config, home).accepted
    before = lake_state(home)
    path = tmp_path / "in" / f"{case}.csv"
    path.parent.mkdir(parents=True)
    make(path)
    outcome = ingest_path(path, config, home)
    assert not outcome.accepted
    reasons = outcome.quarantine.reasons
    found = [r for r in reasons if r["check"] == check and r["severity"] == "block"]
    assert found, reasons
    assert found[0]["column"] == column
    assert needle in found[0]["message"]
    assert "Traceback" not in json.dumps(reasons)
    assert lake_state(home) == before
    assert not list(home.snapshots.glob(".*.tmp"))
    saved = json.loads((Path(outcome.quarantine.folder) / "reasons.json").read_text())
    assert saved["reasons"] == reasons


@pytest.mark.parametrize(
    ("case", "check", "column"),
    [
        ("label_shift", "label_shift", "default"),
        ("duplicates", "duplicates", None),
    ],
)
def test_warned_batches_are_accepted_with_the_warning(config, home, tmp_path, case, check, column):
    base = day(0).assign(default=np.arange(400) % 2)  # a 50/50 reference
    assert ingest_path(write_csv(tmp_path / "ok", "d0.csv", base), config, home).accepted
    frame = day(3)
    if case == "label_shift":
        frame = frame.assign(default=(np.arange(400) % 10 < 3).astype(int))  # 70/30
    else:
        frame = pd.concat([frame.iloc[:40]] * 10, ignore_index=True)  # 10x duplicated
    outcome = ingest_path(write_csv(tmp_path / "in", f"{case}.csv", frame), config, home)
    assert outcome.accepted
    warned = [w for w in outcome.report.warnings if w.check == check]
    assert warned and warned[0].column == column
    assert check in [w["check"] for w in outcome.as_dict()["warnings"]]
    assert lake.read_manifest(home.manifests / f"{outcome.write.manifest.snapshot}.json").warnings


def test_a_warning_can_be_made_blocking(config, home, tmp_path):
    config.validation.severity = {"duplicates": "block"}
    assert ingest_path(write_csv(tmp_path / "ok", "d0.csv", day(0)), config, home).accepted
    frame = pd.concat([day(1).iloc[:40]] * 10, ignore_index=True)
    outcome = ingest_path(write_csv(tmp_path / "in", "dup.csv", frame), config, home)
    assert not outcome.accepted
    assert outcome.quarantine.reasons[0]["check"] == "duplicates"


def test_big_file_is_streamed_and_a_late_bad_value_is_found(config, home, tmp_path):
    frame = pd.concat([day(d) for d in range(6)], ignore_index=True)
    assert ingest_path(write_csv(tmp_path / "ok", "d0.csv", day(0)), config, home).accepted
    frame = frame.astype({"credit_score": object})
    frame.loc[2300, "credit_score"] = "n/a-ish"
    config.ingest.chunk_bytes = 4096
    staged = stage_file(write_csv(tmp_path / "in", "late.csv", frame), config, home)
    assert staged.writer.row_groups > 20
    issue = [i for i in staged.report.blocking if i.check == "type_error"][0]
    assert "first at row 2301: 'n/a-ish'" in issue.message


# --- personal data ---------------------------------------------------------------------------


def with_personal(frame: pd.DataFrame) -> pd.DataFrame:
    n = len(frame)
    return frame.assign(
        contact=[f"user{i}@example.com" for i in range(n)],
        phone_number=[f"+44 20 7946 {i:04d}" for i in range(n)],
        card=["4111 1111 1111 1111"] * n,
    )


@pytest.mark.parametrize("action", ["hash", "drop", "keep"])
def test_personal_data_is_handled_before_the_snapshot(config, home, tmp_path, action):
    config.personal_data.action = action
    config.personal_data.salt = "pepper"
    frame = with_personal(day(0))
    outcome = ingest_path(write_csv(tmp_path / "in", "p.csv", frame), config, home)
    assert outcome.accepted
    schema = load_latest_schema(home.schema_dir)
    assert {c: schema.columns[c].personal for c in ("contact", "phone_number", "card")} == {
        "contact": "email",
        "phone_number": "phone",
        "card": "card",
    }
    assert schema.columns["contact"].categories == []  # no personal values in the schema file
    assert "user1@example.com" not in (home.schema_dir / "schema-v1.json").read_text()
    stored = lake.load_snapshots(home, [outcome.write.manifest.snapshot])
    raw_bytes = b"".join(p.read_bytes() for p in home.snapshots.glob("*.parquet"))
    if action == "drop":
        assert "contact" not in stored.columns and b"example.com" not in raw_bytes
    elif action == "hash":
        assert stored["contact"].str.fullmatch(r"[0-9a-f]{16}").all()
        assert stored["contact"].nunique() == len(frame)  # still joinable, not readable
        assert b"example.com" not in raw_bytes
    else:
        assert stored["contact"].tolist() == frame["contact"].tolist()
    assert outcome.write.manifest.personal_data["contact"] == action
    # the decision is applied to every later batch, too
    later = ingest_path(write_csv(tmp_path / "in", "p2.csv", with_personal(day(1))), config, home)
    assert later.accepted
    assert set(later.write.manifest.personal_data.values()) == {action}


def test_salted_hashes_differ_by_salt(tmp_path):
    import pyarrow as pa

    from ctloop.data.privacy import detect_personal, hash_values

    values = pa.array(["a@b.co", None])
    one, two = hash_values(values, b"s1"), hash_values(values, b"s2")
    assert one[0].as_py() != two[0].as_py() and one[1].as_py() is None
    assert detect_personal("notes", ["just text", "more text"]) is None
    assert detect_personal("ssn", []) == "national_id"
    assert detect_personal("x", ["123-45-6789"] * 5) == "national_id"


# --- the landing folder ---------------------------------------------------------------------


@pytest.mark.parametrize("done", ["move", "mark"])
def test_landing_files_are_ingested_exactly_once(config, home, tmp_path, done):
    config.ingest.done = done
    landing = tmp_path / "landing"
    config.ingest.landing = landing
    write_csv(landing, "d0.csv", day(0))
    write_csv(landing, "d1.csv", day(1))
    write_csv(landing, "bad.csv", corrupt(day(2), np.random.default_rng(0)))
    (landing / ".upload.csv.part").write_text("x")
    first = scan_landing(config, home)
    assert sorted(Path(a["path"]).name for a in first["accepted"]) == ["d0.csv", "d1.csv"]
    assert [Path(q["path"]).name for q in first["quarantined"]] == ["bad.csv"]
    second = scan_landing(config, home)
    assert second == {"accepted": [], "quarantined": []}
    assert len(lake.list_snapshots(home)) == 2
    assert len(lake.list_quarantined(home)) == 1
    ledger = [json.loads(line) for line in (landing / LEDGER).read_text().splitlines()]
    assert sorted(e["file"] for e in ledger) == ["bad.csv", "d0.csv", "d1.csv"]
    if done == "move":
        assert sorted(p.name for p in (landing / ".done").iterdir()) == ["d0.csv", "d1.csv"]
        assert [p.name for p in (landing / ".quarantined").iterdir()] == ["bad.csv"]
    else:
        assert (landing / "d0.csv").exists()
    # a new file arrives: only it is ingested
    write_csv(landing, "d3.csv", day(3))
    third = scan_landing(config, home)
    assert [Path(a["path"]).name for a in third["accepted"]] == ["d3.csv"]


# --- lineage -------------------------------------------------------------------------------


def test_describe_window_for_mlflow(config, home, tmp_path):
    ids = [
        ingest_path(
            write_csv(tmp_path / "in", f"d{d}.csv", day(d)), config, home
        ).write.manifest.snapshot
        for d in range(3)
    ]
    described = lake.describe_window(home, ids)
    assert described["snapshots"] == ids and described["rows"] == 1200
    assert [m["snapshot"] for m in described["manifests"]] == ids
    assert described["time_min"].startswith("2026-01-05")
    assert described["time_max"].startswith("2026-01-07")
    assert described["source"].startswith("file://")
    assert described["digest"] != lake.describe_window(home, ids[:2])["digest"]
    assert described["digest"] == lake.describe_window(home, list(ids))["digest"]
    dataset, profile = lake.mlflow_dataset(home, ids)
    assert dataset.digest == described["digest"] and profile["rows"] == 1200
    with pytest.raises(Exception, match="ffffffffffffffff"):
        lake.describe_window(home, ["ffffffffffffffff"])
