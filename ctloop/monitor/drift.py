"""Data drift with Evidently, parsed once into a `DriftSummary`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.config.settings import DriftConfig
from ctloop.names import DISTANCE_METHODS, P_VALUE_METHODS  # noqa: F401 (re-exported)


def is_p_value(method: str) -> bool:
    """Whether Evidently's score for this method is a p-value (drift when below threshold)."""
    if method in P_VALUE_METHODS:
        return True
    if method in DISTANCE_METHODS:
        return False
    return "p_value" in method  # display names of older Evidently versions


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftSummary:
    """The monitor's verdict on one batch against the reference window."""

    drift: bool
    drifted_columns: list[str]
    share: float
    reasons: list[str]
    columns: list[ColumnDrift] = field(default_factory=list)
    reference_rows: int = 0
    current_rows: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _parse_metric_name(name: str) -> dict[str, str]:
    """`ValueDrift(column=a,method=K-S p_value,threshold=0.05)` -> its fields."""
    inner = name[name.index("(") + 1 : name.rindex(")")]
    out = {}
    for part in inner.split(","):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip()
    return out


def run_drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], cfg: DriftConfig
):
    """Run Evidently's DataDriftPreset on the given columns; returns the Evidently snapshot."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    preset = DataDriftPreset(
        columns=columns,
        num_method=cfg.num_method,
        cat_method=cfg.cat_method,
        threshold=cfg.threshold,
        drift_share=cfg.share,
    )
    return Report([preset]).run(
        current_data=current[columns].reset_index(drop=True),
        reference_data=reference[columns].reset_index(drop=True),
    )


def summarize_drift(snapshot, cfg: DriftConfig, reference_rows: int, current_rows: int):
    """Turn Evidently's result into a `DriftSummary` with the configured rule applied."""
    per_column: list[ColumnDrift] = []
    for metric in snapshot.dict()["metrics"]:
        if not metric["metric_name"].startswith("ValueDrift("):
            continue
        fields = _parse_metric_name(metric["metric_name"])
        method, threshold = fields["method"], float(fields["threshold"])
        score = float(metric["value"])
        drifted = score < threshold if is_p_value(method) else score >= threshold
        per_column.append(ColumnDrift(fields["column"], method, score, threshold, drifted))
    per_column.sort(key=lambda c: c.column)
    return _apply_rule(per_column, cfg, reference_rows, current_rows)


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    cfg: DriftConfig,
    html_path: Path | None = None,
    html_when: str = "always",
) -> DriftSummary:
    """Compare the current batch with the reference on the model's input columns.

    Args:
        html_path: where to write Evidently's HTML report.
        html_when: "always", "on_drift" or "never".
    """
    columns = [c for c in columns if c in reference.columns and c in current.columns]
    columns, empty = measurable_columns(reference, current, columns)
    unmeasured = [f"column '{c}': no valid value, drift not measured" for c in empty]
    if not columns:
        return DriftSummary(False, [], 0.0, unmeasured, [], len(reference), len(current))
    snapshot = run_drift_report(reference, current, columns, cfg)
    summary = summarize_drift(snapshot, cfg, len(reference), len(current))
    if cfg.noise_quantile and floor_matters(len(current), cfg.threshold):
        profile = profile_reference(reference, columns, cfg.workers)
        adjusted = [
            with_noise_floor(
                c, profile.columns.get(c.column), int(current[c.column].notna().sum()), cfg
            )
            for c in summary.columns
        ]
        summary = _apply_rule(adjusted, cfg, len(reference), len(current))
    if unmeasured:
        summary = replace(summary, reasons=[*summary.reasons, *unmeasured])
    if html_path is not None and (
        html_when == "always" or html_when == "on_drift" and summary.drift
    ):
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    return summary


def measurable_columns(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]
) -> tuple[list[str], list[str]]:
    """The columns with at least one valid value in both frames, and the others.

    Evidently raises on a column with no valid value ("An empty column 'x' was provided for
    drift calculation"): such a column (all text in a numeric column, all missing) is left out
    of the drift measurement and named instead.
    """
    kept, empty = [], []
    for c in columns:
        valid = _has_value(current[c]) and _has_value(reference[c])
        (kept if valid else empty).append(c)
    return kept, empty


def _has_value(series: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
        return bool(np.isfinite(values).any())
    return bool(series.notna().any())


# --- the fast check: reference statistics reused, current sampled, columns in parallel -----

FAST_NUM = {"wasserstein"}
FAST_CAT = {"jensenshannon"}
INTEGER_CARDINALITY_LIMIT = 10  # Evidently treats an int column with so few values as categorical
QUANTILES = 20_000


@dataclass(frozen=True)
class ColumnProfile:
    """What the fast check keeps of one reference column."""

    column: str
    kind: str  # "num" or "cat"
    rows: int
    std: float = 0.0
    quantiles: tuple[float, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReferenceProfile:
    """Reference statistics computed once and reused for every batch checked against it."""

    columns: dict[str, ColumnProfile]
    rows: int


def _evidently_kind(series: pd.Series) -> str | None:
    """The column type Evidently 0.7 infers (numeric or categorical; None: not drift-checked)."""
    name = series.dtype.name
    if name.startswith("float"):
        return "num"
    if name.startswith("int"):
        return "cat" if series.nunique() <= INTEGER_CARDINALITY_LIMIT else "num"
    if name in ("bool", "category"):
        return "cat"
    if name in ("object", "string", "str"):
        present = series.dropna()
        if present.empty or series.nunique() > present.count() * 0.5:
            return None  # text, not categories
        return "cat"
    return None


def _finite(series: pd.Series) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    return values[np.isfinite(values)]


def _profile_column(series: pd.Series) -> ColumnProfile | None:
    kind = _evidently_kind(series)
    if kind == "num":
        values = _finite(series)
        if not len(values):
            return None
        grid = (np.arange(min(QUANTILES, len(values))) + 0.5) / min(QUANTILES, len(values))
        quantiles = np.quantile(values, grid)
        return ColumnProfile(
            series.name, "num", len(values), float(np.std(values)), tuple(quantiles.tolist())
        )
    if kind == "cat":
        present = series.dropna()
        counts = present.value_counts()
        return ColumnProfile(
            series.name, "cat", len(present), counts={str(k): int(v) for k, v in counts.items()}
        )
    return None


def profile_reference(
    reference: pd.DataFrame, columns: list[str], workers: int = 2
) -> ReferenceProfile:
    """Profile the reference once: quantiles and spread of numbers, counts of categories."""
    from concurrent.futures import ThreadPoolExecutor

    columns = [c for c in columns if c in reference.columns]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        profiles = list(pool.map(lambda c: _profile_column(reference[c]), columns))
    kept = {p.column: p for p in profiles if p is not None}
    return ReferenceProfile(kept, len(reference))


def _wasserstein_normed(profile: ColumnProfile, current: np.ndarray) -> float:
    """W1 between the reference quantile function and the (sorted) current values, / ref std."""
    current = np.sort(current)
    n = len(current)
    grid = (np.arange(len(profile.quantiles)) + 0.5) / len(profile.quantiles)
    at = (np.arange(n) + 0.5) / n
    reference = np.interp(at, grid, np.asarray(profile.quantiles))
    distance = float(np.mean(np.abs(current - reference)))
    return distance / max(profile.std, 0.001)


def _jensenshannon(profile: ColumnProfile, current: pd.Series) -> float:
    from scipy.spatial import distance

    counts = current.value_counts()
    keys = sorted(set(profile.counts) | {str(k) for k in counts.index})
    cur = {str(k): int(v) for k, v in counts.items()}
    p = np.array([profile.counts.get(k, 0) for k in keys], dtype=float) / max(profile.rows, 1)
    q = np.array([cur.get(k, 0) for k in keys], dtype=float) / max(len(current), 1)
    return float(distance.jensenshannon(p, q))


def noise_floor(profile: ColumnProfile, rows: int, quantile: float, seed: int = 0) -> float:
    """The score that a batch of `rows` rows drawn from the reference itself reaches at this
    quantile: a distance below it is what sampling alone gives a batch of that size.

    A distance between a small batch and the reference is never near 0: with 250 rows the
    normalised Wasserstein distance of an unchanged column is often above 0.1, the default
    threshold, so small batches "drifted" on noise. Computed only for batches small enough for
    it to matter (a floor under a tenth of the threshold is not computed)."""
    if quantile <= 0 or rows < 1:
        return 0.0
    rng = np.random.default_rng(seed)
    draws = 100
    if profile.kind == "num":
        quantiles = np.asarray(profile.quantiles)
        scores = [
            _wasserstein_normed(profile, quantiles[rng.integers(0, len(quantiles), rows)])
            for _ in range(draws)
        ]
    else:
        keys = list(profile.counts)
        p = np.array([profile.counts[k] for k in keys], dtype=float)
        p /= p.sum()
        scores = []
        for _ in range(draws):
            drawn = rng.multinomial(rows, p)
            sample = pd.Series(np.repeat(np.array(keys, dtype=object), drawn))
            scores.append(_jensenshannon(profile, sample))
    return float(np.quantile(scores, quantile))


def floor_matters(rows: int, threshold: float) -> bool:
    """Whether a batch is small enough for sampling noise to reach a tenth of the threshold
    (both distances shrink like 1/sqrt(rows); about 0.8/sqrt(rows) for an unchanged column)."""
    return 0.8 / np.sqrt(max(rows, 1)) > 0.1 * threshold


def with_noise_floor(column: ColumnDrift, profile: ColumnProfile | None, rows: int, cfg):
    """A distance verdict re-decided against max(threshold, the noise floor at this size)."""
    if (
        profile is None
        or is_p_value(column.method)
        or not cfg.noise_quantile
        or not floor_matters(rows, cfg.threshold)
        # the floor is computed with the fast check's own distances
        or (cfg.num_method if profile.kind == "num" else cfg.cat_method) not in FAST_NUM | FAST_CAT
    ):
        return column
    limit = max(cfg.threshold, noise_floor(profile, rows, cfg.noise_quantile))
    return ColumnDrift(column.column, column.method, column.score, limit, column.score >= limit)


def sampling_margin(rows: int, threshold: float) -> float:
    """Scores this close to the threshold are recomputed on every row (see README)."""
    return max(0.2 * threshold, 4.0 / np.sqrt(max(rows, 1)))


def fast_drift(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    cfg: DriftConfig,
    seed: int = 0,
) -> DriftSummary:
    """Per-column drift of `current` against a reference profile, with the configured rule.

    Scores are computed on a random sample of `cfg.sample_rows` rows; a column whose sampled
    score falls within `sampling_margin` of the threshold is scored again on all its rows, so
    sampling can only change a verdict when its error exceeds that margin. Columns run in
    parallel threads (NumPy releases the GIL while sorting). Only the Wasserstein (numeric) and
    Jensen-Shannon (categorical) methods have a fast path; others go to Evidently.
    """
    from concurrent.futures import ThreadPoolExecutor

    if cfg.num_method not in FAST_NUM or cfg.cat_method not in FAST_CAT:
        columns = [c for c in profile.columns if c in current.columns]
        raise ValueError(
            f"fast_drift supports wasserstein/jensenshannon only; use detect_drift for {columns}"
        )
    rng = np.random.default_rng(seed)
    n = len(current)
    sample_rows = min(cfg.sample_rows, n)
    index = np.sort(rng.choice(n, sample_rows, replace=False)) if sample_rows < n else None

    def score(name: str) -> ColumnDrift | None:
        col = profile.columns[name]
        if name not in current.columns:
            return None
        full = current[name]
        part = full.iloc[index] if index is not None else full
        if col.kind == "num":
            values = _finite(part)
            if not len(values):
                return None
            value = _wasserstein_normed(col, values)
            if index is not None and abs(value - cfg.threshold) < sampling_margin(
                len(values), cfg.threshold
            ):
                value = _wasserstein_normed(col, _finite(full))
            verdict = ColumnDrift(
                name, cfg.num_method, value, cfg.threshold, value >= cfg.threshold
            )
            return with_noise_floor(verdict, col, len(_finite(full)), cfg)
        present = part.dropna().astype(str)
        if present.empty:
            return None
        value = _jensenshannon(col, present)
        if index is not None and abs(value - cfg.threshold) < sampling_margin(
            len(present), cfg.threshold
        ):
            value = _jensenshannon(col, full.dropna().astype(str))
        verdict = ColumnDrift(name, cfg.cat_method, value, cfg.threshold, value >= cfg.threshold)
        return with_noise_floor(verdict, col, int(full.notna().sum()), cfg)

    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        scored = [c for c in pool.map(score, list(profile.columns)) if c is not None]
    return _apply_rule(sorted(scored, key=lambda c: c.column), cfg, profile.rows, n)


SHOWN_COLUMNS = 20  # column names a drift reason lists; the rest are counted
SHOWN_NAME_CHARS = 60  # a column name longer than this is cut in a reason


def listed(names: list[str], shown: int = SHOWN_COLUMNS) -> str:
    """Column names for a reason that reaches events, Prefect and MLflow: at most `shown` of
    them, each cut to `SHOWN_NAME_CHARS`, then `(+N more)` (a wide table made reasons of
    unbounded length)."""
    cut = [n if len(n) <= SHOWN_NAME_CHARS else n[: SHOWN_NAME_CHARS - 1] + "…" for n in names]
    head = ", ".join(cut[:shown])
    return head + (f" (+{len(names) - shown} more)" if len(names) > shown else "")


def _apply_rule(
    per_column: list[ColumnDrift], cfg: DriftConfig, ref_rows: int, cur_rows: int
) -> DriftSummary:
    """The configured drift rule over per-column verdicts (share of columns, watched columns)."""
    drifted = [c.column for c in per_column if c.drifted]
    share = len(drifted) / len(per_column) if per_column else 0.0
    reasons = []
    if per_column and share >= cfg.share:
        reasons.append(
            f"{len(drifted)} of {len(per_column)} columns drifted ({share:.0%} >= {cfg.share:.0%}):"
            f" {listed(drifted)}"
        )
    named = [c for c in cfg.columns if c in drifted]
    if named:
        reasons.append(f"watched columns drifted: {listed(named)}")
    drift = bool(reasons)
    if not reasons:
        reasons.append(
            f"{len(drifted)} of {len(per_column)} columns drifted ({share:.0%} < {cfg.share:.0%})"
            + (f": {listed(drifted)}" if drifted else "")
        )
    return DriftSummary(drift, drifted, share, reasons, per_column, ref_rows, cur_rows)
