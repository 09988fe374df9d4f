"""Data drift with the real Evidently 0.7: same distribution, shifted columns, the rules, HTML."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctloop.config.settings import DriftConfig
from ctloop.monitor.drift import _parse_metric_name, detect_drift, run_drift_report, summarize_drift

COLUMNS = ["age", "income", "score", "region"]
ROWS = 2000


def loans(rng: np.random.Generator, shifted: tuple[str, ...] = ()) -> pd.DataFrame:
    """Four model inputs; each named column in `shifted` moves far from the reference."""
    n = ROWS
    return pd.DataFrame(
        {
            "age": rng.normal(31 if "age" in shifted else 41, 11, n),
            "income": rng.lognormal(np.log(52_000 * (0.6 if "income" in shifted else 1)), 0.45, n),
            "score": rng.normal(740 if "score" in shifted else 680, 65, n),
            "region": rng.choice(
                ["north", "south", "east", "west"],
                n,
                p=[0.1, 0.7, 0.1, 0.1] if "region" in shifted else [0.25] * 4,
            ),
        }
    )


@pytest.fixture
def rng():
    return np.random.default_rng(2026)


@pytest.fixture
def reference(rng):
    return loans(rng)


def test_same_distribution_is_no_drift(rng, reference):
    summary = detect_drift(reference, loans(rng), COLUMNS, DriftConfig())
    assert summary.drift is False
    assert summary.share < DriftConfig().share
    assert [c.column for c in summary.columns] == sorted(COLUMNS)
    assert {c.column: c.method for c in summary.columns} == {
        "age": "wasserstein",
        "income": "wasserstein",
        "score": "wasserstein",
        "region": "jensenshannon",
    }
    for c in summary.columns:
        assert c.threshold == 0.1
        assert c.drifted is (c.score >= c.threshold)
    assert summary.reference_rows == ROWS and summary.current_rows == ROWS
    assert "columns drifted" in summary.reasons[0]


def test_three_of_four_shifted_columns_is_drift(rng, reference):
    shifted = ("age", "income", "region")
    summary = detect_drift(reference, loans(rng, shifted), COLUMNS, DriftConfig())
    assert summary.drift is True
    assert summary.drifted_columns == sorted(shifted)
    assert summary.share == pytest.approx(0.75)
    assert "3 of 4 columns drifted" in summary.reasons[0]
    for name in shifted:
        assert name in summary.reasons[0]
    scores = {c.column: c.score for c in summary.columns}
    assert scores["score"] < 0.1 < min(scores[c] for c in shifted)


def test_share_rule_counts_columns(rng, reference):
    current = loans(rng, ("income",))
    # one drifted column of four: 25%, under the default 30%
    default = detect_drift(reference, current, COLUMNS, DriftConfig())
    assert default.drift is False
    assert default.drifted_columns == ["income"]
    assert "income" in default.reasons[0]
    # a lower share turns the same result into drift
    assert detect_drift(reference, current, COLUMNS, DriftConfig(share=0.25)).drift is True


def test_a_watched_column_alone_triggers(rng, reference):
    current = loans(rng, ("income",))
    summary = detect_drift(reference, current, COLUMNS, DriftConfig(columns=["income", "age"]))
    assert summary.drift is True
    assert summary.drifted_columns == ["income"]
    assert summary.reasons == ["watched columns drifted: income"]
    # watching a column that did not drift changes nothing
    quiet = detect_drift(reference, current, COLUMNS, DriftConfig(columns=["age"]))
    assert quiet.drift is False


def test_threshold_is_applied(rng, reference):
    current = loans(rng, ("age",))
    strict = detect_drift(reference, current, COLUMNS, DriftConfig(threshold=5.0))
    assert strict.drifted_columns == []
    assert all(c.threshold == 5.0 for c in strict.columns)


def test_columns_missing_from_a_frame_are_skipped(rng, reference):
    current = loans(rng).drop(columns=["score"])
    summary = detect_drift(reference, current, COLUMNS + ["not_there"], DriftConfig())
    assert [c.column for c in summary.columns] == ["age", "income", "region"]


@pytest.mark.parametrize(
    ("num_method", "cat_method"), [("ks", "jensenshannon"), ("wasserstein", "chisquare")]
)
def test_p_value_methods_drift_below_the_threshold(rng, reference, num_method, cat_method):
    """Statistical tests report a p-value: a tiny p-value means drift, a large one does not."""
    cfg = DriftConfig(num_method=num_method, cat_method=cat_method, threshold=0.05)
    shifted = ("age", "region")
    summary = detect_drift(reference, loans(rng, shifted), COLUMNS, cfg)
    tested = {c.column: c for c in summary.columns if c.method in (num_method, cat_method)}
    p_value_columns = [name for name, c in tested.items() if c.method in ("ks", "chisquare")]
    assert p_value_columns  # the configured test really ran
    for name in p_value_columns:
        column = tested[name]
        if name in shifted:
            assert column.score < 0.05, column
            assert column.drifted, f"{name}: p-value {column.score:.2g} < 0.05 but not drifted"
        else:
            assert not column.drifted, f"{name}: p-value {column.score:.2g} >= 0.05 but drifted"


@pytest.mark.parametrize(
    ("num_method", "cat_method", "threshold"),
    [("wasserstein", "jensenshannon", 0.1), ("psi", "psi", 0.1), ("ks", "chisquare", 0.05)],
)
def test_summary_agrees_with_evidentlys_own_count(
    rng, reference, num_method, cat_method, threshold
):
    """Evidently's DriftedColumnsCount is computed independently of ctloop's per-column parse."""
    cfg = DriftConfig(num_method=num_method, cat_method=cat_method, threshold=threshold)
    current = loans(rng, ("age", "region"))
    snapshot = run_drift_report(reference, current, COLUMNS, cfg)
    counts = [
        m["value"]
        for m in snapshot.dict()["metrics"]
        if m["metric_name"].startswith("DriftedColumnsCount(")
    ]
    assert len(counts) == 1
    summary = summarize_drift(snapshot, cfg, len(reference), len(current))
    assert len(summary.drifted_columns) == counts[0]["count"]
    assert summary.share == pytest.approx(counts[0]["share"])
    assert summary.drifted_columns == ["age", "region"]


def test_parse_metric_name():
    assert _parse_metric_name("ValueDrift(column=a,method=K-S p_value,threshold=0.05)") == {
        "column": "a",
        "method": "K-S p_value",
        "threshold": "0.05",
    }


@pytest.mark.parametrize(
    ("html_when", "shifted", "written"),
    [
        ("on_drift", (), False),
        ("on_drift", ("age", "income", "score"), True),
        ("always", (), True),
        ("never", ("age", "income", "score"), False),
    ],
)
def test_html_report(tmp_path, rng, reference, html_when, shifted, written):
    path = tmp_path / "reports" / "drift.html"
    summary = detect_drift(
        reference, loans(rng, shifted), COLUMNS, DriftConfig(), html_path=path, html_when=html_when
    )
    assert summary.drift is bool(shifted)
    assert path.exists() is written
    if written:
        assert "<html" in path.read_text()[:2000].lower()


# --- the fast check ---------------------------------------------------------------------------


@pytest.mark.parametrize("shifted", [(), ("income",), ("age", "region"), ("score", "region")])
def test_fast_drift_agrees_with_evidently(rng, reference, shifted):
    from ctloop.monitor.drift import fast_drift, profile_reference

    current = loans(rng, shifted)
    cfg = DriftConfig(sample_rows=1000)
    exact = detect_drift(reference, current, COLUMNS, cfg)
    fast = fast_drift(profile_reference(reference, COLUMNS), current, cfg)
    assert [c.column for c in fast.columns] == [c.column for c in exact.columns]
    assert {c.column: c.drifted for c in fast.columns} == {
        c.column: c.drifted for c in exact.columns
    }
    assert set(fast.drifted_columns) == set(shifted)
    for mine, theirs in zip(fast.columns, exact.columns, strict=True):
        assert mine.method == theirs.method
        assert mine.score == pytest.approx(theirs.score, abs=0.03)


def test_fast_drift_on_all_rows_matches_evidently_scores(rng, reference):
    from ctloop.monitor.drift import fast_drift, profile_reference

    current = loans(rng, ("income",))
    cfg = DriftConfig(sample_rows=len(current))  # no sampling: only the quantile grid differs
    exact = {c.column: c.score for c in detect_drift(reference, current, COLUMNS, cfg).columns}
    fast = {
        c.column: c.score
        for c in fast_drift(profile_reference(reference, COLUMNS), current, cfg).columns
    }
    assert fast == pytest.approx(exact, abs=2e-3)


def test_borderline_columns_are_rescored_on_all_rows(rng, reference, monkeypatch):
    from ctloop.monitor import drift
    from ctloop.monitor.drift import fast_drift, profile_reference

    calls = []
    real = drift._wasserstein_normed

    def spy(profile, values):
        calls.append(len(values))
        return real(profile, values)

    monkeypatch.setattr(drift, "_wasserstein_normed", spy)
    current = loans(rng)
    # a threshold right at the sampled score of no drift forces the re-score
    cfg = DriftConfig(sample_rows=1000, threshold=0.03)
    fast_drift(profile_reference(reference, ["age"]), current, cfg)
    assert calls[0] == 1000 and calls[-1] == ROWS


def test_fast_drift_refuses_methods_without_a_fast_path(reference):
    from ctloop.monitor.drift import fast_drift, profile_reference

    with pytest.raises(ValueError, match="detect_drift"):
        fast_drift(profile_reference(reference, COLUMNS), reference, DriftConfig(num_method="ks"))


def _cancer_split():
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.drop(columns=["target"])
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    return shuffled.iloc[:300], shuffled.iloc[300:]


@pytest.mark.parametrize("path", ["fast", "evidently"])
def test_small_unchanged_batches_do_not_drift_on_sampling_noise(path):
    """100-row batches of breast-cancer rows from the same population as the reference: with the
    threshold alone most of them "drift"; against the noise floor of their size, few do."""
    from ctloop.config.settings import DriftConfig
    from ctloop.monitor.drift import detect_drift, fast_drift, profile_reference

    reference, rest = _cancer_split()
    columns = list(reference.columns)
    tried = 4 if path == "evidently" else 10
    verdicts = {}
    for quantile in (0.0, 0.99):
        cfg = DriftConfig(noise_quantile=quantile)
        profile = profile_reference(reference, columns)
        drifted = 0
        for seed in range(tried):
            batch = rest.sample(100, random_state=seed)
            if path == "fast":
                summary = fast_drift(profile, batch, cfg)
            else:
                summary = detect_drift(reference, batch, columns, cfg, html_when="never")
            drifted += summary.drift
        verdicts[quantile] = drifted
    assert verdicts[0.0] >= tried // 2, verdicts  # the noise the floor is for
    assert verdicts[0.99] <= 1, verdicts


def test_a_real_shift_in_a_small_batch_still_drifts():
    from ctloop.config.settings import DriftConfig
    from ctloop.monitor.drift import fast_drift, profile_reference

    reference, rest = _cancer_split()
    # the largest tumours only: a selection shift in the size columns
    shifted = rest[rest["mean radius"] > rest["mean radius"].quantile(0.6)].head(100)
    summary = fast_drift(
        profile_reference(reference, list(reference.columns)), shifted, DriftConfig()
    )
    assert summary.drift, summary.reasons
    assert "mean radius" in summary.drifted_columns
    floored = {c.column: c for c in summary.columns}["mean radius"]
    assert floored.threshold > 0.1  # the limit it beat is the floor, above the threshold


def test_reasons_of_a_wide_table_are_bounded():
    """500 drifted columns with long names: the reason names 20 and counts the rest."""
    from ctloop.monitor.drift import ColumnDrift, _apply_rule, listed

    names = [f"column_{i:03d}_" + "x" * 100 for i in range(500)]
    verdicts = [ColumnDrift(n, "wasserstein", 0.5, 0.1, True) for n in names]
    summary = _apply_rule(verdicts, DriftConfig(columns=names[:300]), 1000, 1000)
    assert summary.drift and len(summary.drifted_columns) == 500
    assert all(len(r) < 2000 for r in summary.reasons), [len(r) for r in summary.reasons]
    assert summary.reasons[0].startswith("500 of 500 columns drifted (100% >= 30%): column_000_")
    assert summary.reasons[0].endswith("(+480 more)")
    assert summary.reasons[1].endswith("(+280 more)")
    assert listed(["a", "b"]) == "a, b"  # a short list is unchanged
