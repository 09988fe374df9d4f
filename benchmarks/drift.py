"""Drift of 1M current rows x 50 columns against a 1M-row reference: ctloop's fast check
against a plain Evidently DataDriftPreset run on the same frames.

ctloop profiles the reference once (quantiles and spread of every numeric column, counts of
every categorical one), then scores each batch on a sample of `sample_rows` rows, re-scores on
all rows any column whose sampled score lies within the sampling margin of the threshold, and
runs columns in parallel threads. Evidently computes everything from both full frames.

Prints, as its last line, one JSON object: {"bench": "drift", "ratio": ..., "target_ratio": 10,
"agreement": ..., "target_agreement": 0.98, ...}; `ratio` is Evidently's seconds over ctloop's
per-batch check with the reference profile reused, `ratio_with_profile` counts the one-off
profiling too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_frames(rows: int, seed: int = 0):
    """Reference and current with 35 numeric, 10 categorical and 5 small-integer columns.

    About a third of the columns shift, by amounts from barely to clearly over the default
    thresholds (0.1 normed Wasserstein, 0.1 Jensen-Shannon), so verdicts are not all easy.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    reference, current = {}, {}
    for i in range(35):
        shift = [0.0, 0.0, 0.05, 0.2, 0.5][i % 5]  # in standard deviations
        kind = i % 3
        if kind == 0:
            ref, cur = rng.normal(0, 1, rows), rng.normal(shift, 1, rows)
        elif kind == 1:
            ref = rng.lognormal(3, 0.6, rows)
            cur = rng.lognormal(3 + shift * 0.6, 0.6, rows)
        else:
            ref, cur = rng.exponential(2, rows), rng.exponential(2 * (1 + shift), rows)
        reference[f"num{i:02d}"], current[f"num{i:02d}"] = ref, cur
    levels = [f"l{k}" for k in range(12)]
    for i in range(10):
        p = rng.dirichlet(np.ones(12) * 2)
        tilt = [0.0, 0.0, 0.03, 0.15, 0.4][i % 5]
        q = (1 - tilt) * p + tilt * rng.dirichlet(np.ones(12))
        reference[f"cat{i}"] = rng.choice(levels, rows, p=p)
        current[f"cat{i}"] = rng.choice(levels, rows, p=q / q.sum())
    for i in range(5):
        p = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
        q = np.roll(p, 1) if i % 2 else p
        reference[f"int{i}"] = rng.choice(5, rows, p=p)
        current[f"int{i}"] = rng.choice(5, rows, p=q)
    return pd.DataFrame(reference), pd.DataFrame(current)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample-rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    from ctloop.config.settings import DriftConfig
    from ctloop.monitor.drift import (
        fast_drift,
        profile_reference,
        run_drift_report,
        summarize_drift,
    )

    reference, current = make_frames(args.rows)
    columns = list(reference.columns)
    cfg = DriftConfig(sample_rows=args.sample_rows, workers=args.workers)

    started = time.perf_counter()
    profile = profile_reference(reference, columns, cfg.workers)
    profile_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ours = fast_drift(profile, current, cfg)
    check_seconds = time.perf_counter() - started
    print(f"ctloop: profile {profile_seconds:.1f} s, check {check_seconds:.2f} s", file=sys.stderr)

    started = time.perf_counter()
    snapshot = run_drift_report(reference, current, columns, cfg)
    theirs = summarize_drift(snapshot, cfg, len(reference), len(current))
    evidently_seconds = time.perf_counter() - started
    print(f"evidently: {evidently_seconds:.1f} s", file=sys.stderr)

    mine = {c.column: c for c in ours.columns}
    other = {c.column: c for c in theirs.columns}
    both = sorted(set(mine) & set(other))
    agree = [c for c in both if mine[c].drifted == other[c].drifted]
    disagree = [
        {"column": c, "ctloop": round(mine[c].score, 4), "evidently": round(other[c].score, 4)}
        for c in both
        if mine[c].drifted != other[c].drifted
    ]
    score_gap = max(abs(mine[c].score - other[c].score) for c in both) if both else None
    result = {
        "bench": "drift",
        "rows": args.rows,
        "columns": len(columns),
        "compared_columns": len(both),
        "sample_rows": args.sample_rows,
        "workers": args.workers,
        "evidently_seconds": round(evidently_seconds, 2),
        "ctloop_check_seconds": round(check_seconds, 3),
        "ctloop_profile_seconds": round(profile_seconds, 2),
        "ratio": round(evidently_seconds / check_seconds, 1),
        "ratio_with_profile": round(evidently_seconds / (check_seconds + profile_seconds), 1),
        "target_ratio": 10,
        "agreement": round(len(agree) / len(both), 4) if both else None,
        "target_agreement": 0.98,
        "drifted_ctloop": len(ours.drifted_columns),
        "drifted_evidently": len(theirs.drifted_columns),
        "max_score_gap": None if score_gap is None else round(score_gap, 4),
        "disagreements": disagree,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
