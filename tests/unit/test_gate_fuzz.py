"""The batch gate, fuzzed: a real batch, mutated alone and in combination, never crashes ingest.

The valid batch is scikit-learn's bundled breast-cancer data (six measurements and the
diagnosis) with a categorical, a boolean and a timestamp column added. Each mutation damages a
column (all text, all missing, infinite values, ...) or the file (truncated, latin-1, wrong
delimiter, ...). For every mutated file, the pure core of ingestion (`ingest_path`: stage, check,
gate, then commit or quarantine) must not raise; the lake's bytes change only when the batch is
accepted; every reason names its column or the file; accepted data reads back equal to the
file's values typed to the schema.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctloop.config.settings import Config
from ctloop.data.batches import NULLS
from ctloop.data.schema import BOOLEAN_KIND, DATETIME, NUMERIC, load_latest_schema, parse_boolean
from ctloop.ingest.stage import Outcome, ingest_path
from ctloop.lake import snapshots as lake
from ctloop.stores.home import Home

settings.register_profile(
    "ctloop-gate",
    derandomize=True,
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PROFILE = settings.get_profile("ctloop-gate")

TARGET, TIMESTAMP = "target", "seen_at"
NUMBERS = ["mean_radius", "mean_texture", "mean_perimeter", "mean_area"]
CATEGORY, FLAG = "size", "checked"
# reasons about the whole file rather than one column
FILE_CHECKS = {"unreadable", "empty", "duplicates", "data_drift", "personal_data", "no_features"}
TRIED: Counter = Counter()  # mutation -> files it went into (printed by the last test)
EXAMPLES: Counter = Counter()  # test -> mutated files ingested


def base_frame(rows: int = 80, offset: int = 0) -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).frame
    frame = pd.DataFrame({name: data[name.replace("_", " ")] for name in NUMBERS})
    frame[TARGET] = data["target"]
    frame[CATEGORY] = pd.cut(
        data["mean area"], [0, 400, 700, np.inf], labels=["small", "medium", "large"]
    ).astype(str)
    frame[FLAG] = np.random.default_rng(0).random(len(frame)) < 0.4
    frame[TIMESTAMP] = pd.date_range("2026-01-01", periods=len(frame), freq="h").strftime(
        "%Y-%m-%dT%H:%M:%S"
    )
    return frame.iloc[offset : offset + rows].reset_index(drop=True)


# --- mutations: of a column (frame -> frame), of the file (bytes -> bytes) --------------------


def _set(column_values: Callable[[pd.DataFrame, str], object], kind: str = "number"):
    def mutate(frame: pd.DataFrame, column: str) -> pd.DataFrame:
        frame = frame.astype({column: object})
        frame[column] = column_values(frame, column)
        return frame

    mutate.kind = kind
    return mutate


COLUMN_MUTATIONS = {
    "all_text": _set(lambda f, c: "abc", "any"),
    "all_missing": _set(lambda f, c: None, "any"),
    "mixed_types": _set(lambda f, c: [v if i % 2 else f"x{i}" for i, v in enumerate(f[c])], "any"),
    "inf": _set(lambda f, c: [np.inf if i % 7 == 0 else v for i, v in enumerate(f[c])]),
    "huge_numbers": _set(lambda f, c: pd.to_numeric(f[c], errors="coerce") * 1e300),
    "out_of_range": _set(lambda f, c: pd.to_numeric(f[c], errors="coerce") * 1000 + 1e6),
    "unseen_categories": _set(lambda f, c: [f"new-{i}" for i in range(len(f))], "category"),
    "empty_strings": _set(lambda f, c: "", "any"),
    "whitespace": _set(lambda f, c: [f"  {v} " for v in f[c]], "any"),
    "long_strings": _set(lambda f, c: ["x" * 5000 + str(i) for i in range(len(f))], "any"),
    "unicode_rtl": _set(lambda f, c: [f"\u202e{v}\u200f\U0001f600ß" for v in f[c]], "any"),
    "boolean_spellings": _set(
        lambda f, c: [
            ("yes" if v else "no") if i % 2 else str(v).upper() for i, v in enumerate(f[c])
        ],
        "flag",
    ),
}


FRAME_MUTATIONS = {
    "missing_column": lambda f: f.drop(columns=[NUMBERS[1]]),
    "extra_column": lambda f: f.assign(surprise=np.arange(len(f))),
    "target_all_missing": lambda f: f.assign(**{TARGET: np.nan}),
    "one_row": lambda f: f.iloc[:1],
    "shuffled_columns": lambda f: f[list(np.random.default_rng(1).permutation(f.columns))],
    "future_timestamps": lambda f: f.assign(
        **{TIMESTAMP: pd.date_range("2100-01-01", periods=len(f), freq="D").astype(str)}
    ),
    "out_of_order_timestamps": lambda f: f.assign(**{TIMESTAMP: f[TIMESTAMP].iloc[::-1].values}),
    "unparseable_timestamps": lambda f: f.assign(**{TIMESTAMP: "sometime soon"}),
    "quoted_newlines": lambda f: f.assign(**{CATEGORY: f[CATEGORY] + "\nline two, quoted"}),
}


def _truncate(data: bytes) -> bytes:
    return data[: max(len(data) * 2 // 3, 1)]


FILE_MUTATIONS = {
    "truncated": _truncate,
    "empty_file": lambda data: b"",
    "header_only": lambda data: data.split(b"\n", 1)[0] + b"\n",
    "bom": lambda data: b"\xef\xbb\xbf" + data,
    "crlf": lambda data: data.replace(b"\n", b"\r\n"),
    "latin1": lambda data: (
        data.decode("utf-8", errors="replace").encode("latin-1", errors="replace")
        + "ñandú,é\n".encode("latin-1")
    ),
    "wrong_delimiter": lambda data: data.replace(b",", b";"),
    "duplicate_columns": lambda data: data.replace(NUMBERS[1].encode(), NUMBERS[0].encode(), 1),
    "unparseable": lambda data: bytes(range(256)) * 8,
}
MUTATIONS = sorted([*COLUMN_MUTATIONS, *FRAME_MUTATIONS, *FILE_MUTATIONS])


def columns_for(kind: str) -> list[str]:
    return {
        "number": NUMBERS,
        "category": [CATEGORY],
        "flag": [FLAG],
        "any": [*NUMBERS, CATEGORY, FLAG, TIMESTAMP, TARGET],
    }[kind]


def write_batch(frame: pd.DataFrame, folder: Path, name: str, file_mutations: list[str]) -> Path:
    data = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    for mutation in file_mutations:
        data = FILE_MUTATIONS[mutation](data)
    path = folder / name
    path.write_bytes(data)
    return path


# --- what must hold ----------------------------------------------------------------------------


def config_for(home: Path) -> Config:
    return Config.model_validate(
        {
            "project": "fuzz",
            "dataset": {"target": TARGET, "task": "binary", "timestamp": TIMESTAMP},
            "paths": {"home": str(home)},
            "validation": {"evidently_report": "never"},
            "personal_data": {"detect": False},
        }
    )


def lake_bytes(home: Home) -> dict[str, bytes]:
    files = [
        *home.snapshots.glob("*.parquet"),
        *home.manifests.glob("*.json"),
        *home.schema_dir.glob("*.json"),
    ]
    return {f"{p.parent.name}/{p.name}": p.read_bytes() for p in files}


def expected_values(path: Path, home: Home, columns: list[str]) -> pd.DataFrame:
    """The file read by pandas (text), typed to the schema the way its kinds say."""
    schema = load_latest_schema(home.schema_dir)
    text = pd.read_csv(
        path, dtype=str, keep_default_na=False, na_values=NULLS, encoding="utf-8-sig"
    )
    out = {}
    for name in columns:
        kind = schema.columns[name].kind if name in schema.columns else "text"
        raw = text[name]
        if kind == NUMERIC:
            numbers = pd.to_numeric(raw, errors="coerce").astype(float)
            out[name] = numbers.where(np.isfinite(numbers))
        elif kind == BOOLEAN_KIND:
            out[name] = parse_boolean(raw).astype(object).where(raw.notna(), None)
        elif kind == DATETIME:
            times = pd.to_datetime(raw, errors="coerce", format="mixed", utc=True)
            out[name] = times.dt.tz_localize(None).astype("datetime64[ns]")
        else:
            out[name] = raw.astype(object).where(raw.notna(), None)
    return pd.DataFrame(out)


def check_outcome(outcome: Outcome, path: Path, home: Home, before: dict[str, bytes]) -> None:
    after = lake_bytes(home)
    if not outcome.accepted:
        assert after == before, f"the lake changed for a quarantined batch {path.name}"
        reasons = outcome.quarantine.reasons
        assert reasons and any(r["severity"] == "block" for r in reasons)
    else:
        reasons = outcome.report.reasons()
        assert {k: v for k, v in after.items() if k in before} == before
        snapshot = outcome.write.manifest.snapshot
        stored = lake.load_snapshots(home, [snapshot])
        expected = expected_values(path, home, list(stored.columns))
        assert len(stored) == len(expected) == outcome.write.manifest.rows
        for name in stored.columns:
            got, want = stored[name], expected[name]
            if pd.api.types.is_float_dtype(got):
                np.testing.assert_allclose(
                    got.to_numpy(float), want.to_numpy(float), rtol=1e-12, err_msg=name
                )
            else:
                same = [
                    (pd.isna(a) and pd.isna(b)) or a == b
                    for a, b in zip(got.tolist(), want.tolist(), strict=True)
                ]
                assert all(same), (name, got.tolist()[:5], want.tolist()[:5])
    for r in reasons:
        if r["check"] == "unreadable":
            assert str(path) in r["message"], r
        elif r["check"] not in FILE_CHECKS:
            assert r["column"], r
            assert f"'{r['column']}'" in r["message"], r


def ingest_mutated(home_path: Path, folder: Path, mutations: list[str], pick) -> Outcome:
    home = Home(home_path).ensure()
    config = config_for(home_path)
    frame = base_frame(offset=200)
    file_mutations = []
    for mutation in mutations:
        TRIED[mutation] += 1
        if mutation in COLUMN_MUTATIONS:
            fn = COLUMN_MUTATIONS[mutation]
            present = [c for c in columns_for(fn.kind) if c in frame.columns]
            if present:
                frame = fn(frame, pick(present))
        elif mutation in FRAME_MUTATIONS:
            frame = FRAME_MUTATIONS[mutation](frame)
        else:
            file_mutations.append(mutation)
    path = write_batch(frame, folder, "batch.csv", file_mutations)
    EXAMPLES["files"] += 1
    EXAMPLES["combined" if len(mutations) > 1 else "alone"] += 1
    before = lake_bytes(home)
    outcome = ingest_path(path, config, home, compare=True)
    check_outcome(outcome, path, home, before)
    return outcome


@pytest.fixture(scope="module")
def lake_home(tmp_path_factory) -> Path:
    """A home whose schema came from a first clean batch (shared by the examples)."""
    root = tmp_path_factory.mktemp("fuzz")
    home = Home(root / "home").ensure()
    path = write_batch(base_frame(), root, "first.csv", [])
    assert ingest_path(path, config_for(root / "home"), home).accepted
    return root / "home"


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_each_mutation_alone_against_a_schema(lake_home, tmp_path, mutation):
    ingest_mutated(lake_home, tmp_path, [mutation], lambda options: options[0])


combos = st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3, unique=True)


@settings(PROFILE)
@given(mutations=combos, data=st.data())
def test_mutations_combined_against_a_schema(lake_home, mutations, data):
    with tempfile.TemporaryDirectory() as folder:
        ingest_mutated(lake_home, Path(folder), mutations, lambda o: data.draw(st.sampled_from(o)))


@settings(PROFILE, max_examples=40)
@given(mutations=combos, data=st.data())
def test_mutated_first_batch_never_raises_and_never_fails_its_own_types(mutations, data):
    with tempfile.TemporaryDirectory() as folder:
        outcome = ingest_mutated(
            Path(folder) / "home", Path(folder), mutations, lambda o: data.draw(st.sampled_from(o))
        )
    reasons = outcome.report.reasons() if outcome.report else []
    own_types = [
        r
        for r in reasons
        if r["check"] == "type_error" and r["severity"] == "block" and r["column"] != TIMESTAMP
    ]
    assert own_types == [], own_types  # only the declared timestamp can be of the wrong type


def test_a_first_batch_never_fails_against_types_inferred_from_itself(tmp_path):
    """Text in a numeric-looking column after the first chunk: the whole batch decides."""
    frame = base_frame(rows=400).astype({NUMBERS[0]: object})
    frame.loc[300:, NUMBERS[0]] = [f"T-{i}" for i in range(100)]  # a ticket-like column
    path = write_batch(frame, tmp_path, "first.csv", [])
    config = config_for(tmp_path / "home")
    config.ingest.chunk_bytes = 4096  # the text starts many chunks in
    outcome = ingest_path(path, config, Home(tmp_path / "home").ensure())
    assert outcome.accepted, outcome.quarantine and outcome.quarantine.reasons
    schema = load_latest_schema(Home(tmp_path / "home").schema_dir)
    assert schema.columns[NUMBERS[0]].kind == "categorical"
    assert schema.columns[FLAG].kind == BOOLEAN_KIND
    assert (
        lake.load_snapshots(Home(tmp_path / "home"), [outcome.write.manifest.snapshot])[
            FLAG
        ].tolist()
        == frame[FLAG].tolist()
    )


@pytest.mark.parametrize("mutation", ["all_text", "all_missing"])
def test_evidently_report_on_a_column_without_valid_values(lake_home, tmp_path, mutation):
    """Evidently raises on an empty column; the report leaves it out, the gate names it."""
    config = config_for(lake_home)
    config.validation.evidently_report = "always"
    frame = COLUMN_MUTATIONS[mutation](base_frame(offset=300), NUMBERS[2])
    path = write_batch(frame, tmp_path, "b.csv", [])
    home = Home(lake_home)
    before = lake_bytes(home)
    outcome = ingest_path(path, config, home, compare=True)
    check_outcome(outcome, path, home, before)
    reasons = outcome.quarantine.reasons if not outcome.accepted else outcome.report.reasons()
    assert any(r["column"] == NUMBERS[2] for r in reasons), reasons


def test_every_mutation_was_tried():
    """Mutations x examples tried by this module (the count goes into the report)."""
    print(json.dumps({"mutations": dict(sorted(TRIED.items())), "files": dict(EXAMPLES)}))
    assert len(MUTATIONS) >= 20
    assert set(TRIED) == set(MUTATIONS)
