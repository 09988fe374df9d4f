"""Label-free estimation against the realized metric, chunk by chunk, on generated streams.

A ctloop pipeline (`train_candidate`) is trained on a reference sample and its estimator fitted
on a holdout (`ctloop.registry.estimator.fit_estimator`: the calibrator CBPE uses), as
`ctloop estimate` fits it on a version's holdout. Then, for a binary (ROC AUC) and a
multiclass (accuracy) model, four streams of chunks are estimated without their labels and
compared with the metric the labels give:

- no drift: inputs as at training;
- harmful covariate shift: rows move, chunk by chunk, towards the class boundary, where the
  model is unsure (and so more often wrong): the metric falls, and the estimate must see it;
- harmless covariate shift: a column the label does not depend on moves far: the metric holds;
- concept drift: the inputs stay, the label's relation to them flips; no label-free method can
  see this (the estimate stays at the reference while the realized metric falls).

Per stream: mean absolute error of the estimate, coverage of its 95% interval, and the chunk at
which the estimated-drop rule (`ctloop.loop.triggers.decide_estimated_drop`:
`triggers.performance_drop` below the holdout metric, on the interval's optimistic bound) fires,
against the chunk whose labels would show the drop, and how many chunks earlier than those labels
arrive (`--label-delay`) it fires; with `drift_needs_estimated_drop`, how many drifted chunks
(ctloop's drift check against the training sample) would retrain. Each task is run on
`--seeds` seeds (a training sample, holdout and calibrator each), since one holdout's
calibration error is shared by every chunk of its run. Prints a table,
then, as its last line, one JSON object; `--record` appends it to benchmarks/results/estimate.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _record import commit, loadavg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = {"binary": ("roc_auc", 0.02), "multiclass": ("accuracy", 0.03)}
TARGET_COVERAGE = 0.90
DROP = 0.05  # triggers.performance_drop's default
SCENARIOS = ("no_drift", "harmful_shift", "harmless_shift", "concept_drift")
FEATURES = 6


def _logits(task: str, X, flipped: bool = False):
    """The true class logits: nonlinear in x0..x2; x3..x5 carry nothing."""
    import numpy as np

    x0, x1, x2 = X[:, 0], X[:, 1], X[:, 2]
    sign = -1.0 if flipped else 1.0
    if task == "binary":
        z = 2.0 * (sign * x0 + 0.6 * x1 - 0.4 * x2**2 + 0.3)
        return np.column_stack([np.zeros_like(z), z])
    return np.column_stack(
        [2.0 * sign * x0, 2.0 * x1 + 0.5 * x2, 1.2 * (x0 * x1) - 0.5 * sign * x2]
    )


def draw(task: str, rows: int, rng, scenario: str = "no_drift", strength: float = 0.0):
    """Features and labels of one chunk; `strength` in [0, 1] is how far the drift has gone."""
    import numpy as np
    import pandas as pd

    X = rng.normal(0.0, 1.0, (rows, FEATURES))
    if scenario == "harmful_shift":
        # shrink x0 and x1 towards the boundary: the rows the model is unsure about
        toward = 1.0 - 0.75 * strength
        X[:, 0] *= toward
        X[:, 1] *= toward
        if task == "binary":
            X[:, 0] -= 0.3 * strength * 0.5
    elif scenario == "harmless_shift":
        X[:, 3] += 3.0 * strength  # 3 standard deviations on a column the label ignores
        X[:, 4] *= 1.0 + 2.0 * strength
    logits = _logits(task, X, flipped=scenario == "concept_drift" and strength > 0.25)
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    cumulative = proba.cumsum(axis=1)
    y = (rng.random((rows, 1)) > cumulative).sum(axis=1)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(FEATURES)])
    frame["label"] = y
    return frame


def realized_metric(metric: str, y, proba) -> float:
    from sklearn import metrics as skm

    if metric == "roc_auc":
        return float(skm.roc_auc_score(y, proba[:, 1]))
    return float((proba.argmax(axis=1) == y).mean())


def run_task(task: str, args, rng) -> dict:
    """Train, fit the estimator on a holdout, estimate every chunk of every stream."""
    import numpy as np

    from ctloop.config.settings import Config, DriftConfig, TriggerConfig
    from ctloop.loop.triggers import decide_estimated_drop, decide_performance, judge_drift
    from ctloop.model.evaluate import evaluate_with_spread
    from ctloop.model.train import prepare_features, train_candidate
    from ctloop.monitor.drift import detect_drift
    from ctloop.registry.estimator import estimate_chunk, fit_estimator

    metric, target_error = TARGETS[task]
    config = Config.model_validate(
        {
            "dataset": {"target": "label", "task": task},
            "training": {"family": "hist_gradient_boosting", "params": {"max_iter": 100}},
        }
    )
    train = draw(task, args.train_rows, rng)
    holdout = draw(task, args.holdout_rows, rng)
    candidate = train_candidate(train, config)
    prepare = lambda f: prepare_features(f, candidate.numeric, candidate.categorical)  # noqa: E731
    estimator = fit_estimator(
        candidate.pipeline, prepare(holdout), holdout["label"], task, split="generated"
    )
    reference = estimator.reference[metric]
    gated = TriggerConfig(performance_drop=DROP, drift_needs_estimated_drop=True)
    # the label-based rule it is compared with: the live decay trigger (a drop past
    # `performance_drop` and past `performance_noise` standard errors of the holdout's spread)
    scored = Config.model_validate(
        {"dataset": {"target": "label", "task": task}, "gates": {"primary_metric": metric}}
    )
    spread = evaluate_with_spread(candidate.pipeline, prepare(holdout), holdout["label"], scored)
    holdout_std = spread.get(f"{metric}_std")
    columns = [f"x{i}" for i in range(FEATURES)]
    streams = {}
    for scenario in SCENARIOS:
        chunks = []
        for k in range(args.chunks):
            strength = k / max(1, args.chunks - 1)
            frame = draw(task, args.chunk_rows, rng, scenario, strength)
            raw = candidate.pipeline.predict_proba(prepare(frame))
            est = estimate_chunk(estimator, raw, metric, seed=k)
            real = realized_metric(metric, frame["label"].to_numpy(), raw)
            found = {"metric": metric, "reference": reference, "rows": est.rows}
            found |= {"estimate": est.estimate, "ci_low": est.ci_low, "ci_high": est.ci_high}
            drift = (
                args.drift
                and detect_drift(
                    train[columns], frame[columns], columns, DriftConfig(), None, "never"
                ).drift
            )
            chunks.append(
                {
                    "strength": round(strength, 3),
                    "estimate": est.estimate,
                    "ci_low": est.ci_low,
                    "ci_high": est.ci_high,
                    "realized": real,
                    "fires": decide_estimated_drop(found, gated).retrain,
                    "decays": decide_performance(
                        real, reference, len(frame), gated, metric, holdout_std, len(holdout)
                    ).retrain,
                    "drift": bool(drift),
                    "drift_retrains": judge_drift(bool(drift), found, gated).retrains,
                }
            )
        errors = [abs(c["estimate"] - c["realized"]) for c in chunks]
        covered = [c["ci_low"] <= c["realized"] <= c["ci_high"] for c in chunks]
        fired = next((i for i, c in enumerate(chunks) if c["fires"]), None)
        dropped = next((i for i, c in enumerate(chunks) if c["realized"] < reference - DROP), None)
        decayed = next((i for i, c in enumerate(chunks) if c["decays"]), None)
        # the labels of chunk i arrive with chunk i + label_delay: the decay trigger acts then
        known = None if decayed is None else decayed + args.label_delay
        earlier = None if fired is None or known is None else known - fired
        streams[scenario] = {
            "mae": float(np.mean(errors)),
            "max_error": float(np.max(errors)),
            "coverage": float(np.mean(covered)),
            "realized_first": chunks[0]["realized"],
            "realized_last": chunks[-1]["realized"],
            "estimate_last": chunks[-1]["estimate"],
            "estimate_fires_at": fired,
            "labels_show_drop_at": dropped,
            "decay_rule_fires_at": decayed,
            "labels_known_at": known,
            "batches_earlier": earlier,
            "bias": float(np.mean([c["estimate"] - c["realized"] for c in chunks])),
            "drifted_chunks": sum(c["drift"] for c in chunks),
            "drift_retrains": sum(c["drift_retrains"] for c in chunks),
            "chunks": chunks,
        }
    label_free = [s for s in SCENARIOS if s != "concept_drift"]
    mae = float(np.mean([streams[s]["mae"] for s in label_free]))
    coverage = float(np.mean([streams[s]["coverage"] for s in label_free]))
    return {
        "metric": metric,
        "reference": reference,
        "holdout_rows": estimator.holdout_rows,
        "mae": mae,
        "target_mae": target_error,
        "coverage": coverage,
        "target_coverage": TARGET_COVERAGE,
        "ok": mae <= target_error and coverage >= TARGET_COVERAGE,
        "streams": streams,
    }


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def print_table(results: dict) -> None:
    head = (
        f"{'task':<11}{'stream':<16}{'metric':<9}{'MAE':>7}{'max':>7}{'cover':>7}"
        f"{'real 0':>8}{'real N':>8}{'est N':>8}{'fires':>7}{'labels':>7}{'earlier':>8}"
        f"{'drift':>7}{'retrain':>8}"
    )
    print(head)
    print("-" * len(head))
    for task, r in results.items():
        for scenario, s in r["streams"].items():
            print(
                f"{task:<11}{scenario:<16}{r['metric']:<9}{s['mae']:>7.3f}{s['max_error']:>7.3f}"
                f"{s['coverage']:>7.0%}{s['realized_first']:>8.3f}{s['realized_last']:>8.3f}"
                f"{s['estimate_last']:>8.3f}{_f(s['estimate_fires_at']):>7}"
                f"{_f(s['decay_rule_fires_at']):>7}{_f(s['batches_earlier']):>8}"
                f"{s['drifted_chunks']:>7}{s['drift_retrains']:>8}"
            )
        verdict = "meets" if r["ok"] else "MISSES"
        print(
            f"{task:<11}{'all but concept':<16}{r['metric']:<9}{r['mae']:>7.3f}"
            f"{'':>7}{r['coverage']:>7.0%}   target MAE <= {r['target_mae']}, coverage >= "
            f"{TARGET_COVERAGE:.0%}: {verdict} (holdout {r['reference']:.3f})"
        )
    print(
        "concept drift: the inputs did not move, their meaning did; no label-free estimate can "
        "see it (the estimate stays near the holdout metric while the realized one falls), "
        "so it is left out of the targets. 'fires': first chunk whose optimistic bound is "
        f"{DROP} below the holdout metric; 'labels': first chunk on whose labels the live "
        "decay trigger fires (a drop past performance_drop and past performance_noise standard "
        "errors); 'earlier': how many chunks before those labels arrive (label delay added) the "
        "estimate fires, mean over seeds; 'drift'/'retrain': chunks with drift over all seeds, "
        "and those that retrain with drift_needs_estimated_drop. Columns but MAE, coverage, "
        "earlier and "
        "drift are of the first seed."
    )


def pooled(runs: list[dict]) -> dict:
    """One task over several seeds (each its own training sample, holdout and calibrator): a
    holdout's calibration error is shared by all chunks of its run, so coverage is a property
    over holdouts, not over the chunks of one."""
    import numpy as np

    first = runs[0]
    label_free = [s for s in SCENARIOS if s != "concept_drift"]
    mae = float(np.mean([r["mae"] for r in runs]))
    coverage = float(np.mean([r["coverage"] for r in runs]))
    streams = {}
    for s in SCENARIOS:
        per = [r["streams"][s] for r in runs]
        earlier = [p["batches_earlier"] for p in per if p["batches_earlier"] is not None]
        streams[s] = {
            **{k: v for k, v in first["streams"][s].items() if k != "chunks"},
            "mae": float(np.mean([p["mae"] for p in per])),
            "coverage": float(np.mean([p["coverage"] for p in per])),
            "bias_by_seed": [round(p["bias"], 4) for p in per],
            "coverage_by_seed": [round(p["coverage"], 3) for p in per],
            "batches_earlier_by_seed": [p["batches_earlier"] for p in per],
            "batches_earlier": float(np.mean(earlier)) if earlier else None,
            "drifted_chunks": sum(p["drifted_chunks"] for p in per),
            "drift_retrains": sum(p["drift_retrains"] for p in per),
            "chunks": first["streams"][s]["chunks"],
        }
    return {
        **first,
        "mae": mae,
        "coverage": coverage,
        "coverage_by_seed": [round(r["coverage"], 3) for r in runs],
        "ok": mae <= first["target_mae"] and coverage >= TARGET_COVERAGE,
        "streams": streams,
        "label_free": label_free,
    }


def main(argv: list[str] | None = None) -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=30, help="chunks per stream")
    parser.add_argument("--chunk-rows", type=int, default=2000)
    parser.add_argument("--train-rows", type=int, default=20000)
    parser.add_argument("--holdout-rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=4, help="runs (holdouts) per task")
    parser.add_argument("--label-delay", type=int, default=2, help="chunks until labels come")
    parser.add_argument("--no-drift-check", dest="drift", action="store_false")
    parser.add_argument("--record", action="store_true", help="append to results/estimate.jsonl")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_before = loadavg()
    started = time.perf_counter()
    results = {
        task: pooled(
            [run_task(task, args, np.random.default_rng(args.seed + k)) for k in range(args.seeds)]
        )
        for task in TARGETS
    }
    seconds = time.perf_counter() - started
    print_table(results)
    harmful = {t: r["streams"]["harmful_shift"]["batches_earlier"] for t, r in results.items()}
    harmless = {t: r["streams"]["harmless_shift"] for t, r in results.items()}
    line = {
        "bench": "estimate",
        "binary_roc_auc_mae": round(results["binary"]["mae"], 4),
        "target_binary_roc_auc_mae": TARGETS["binary"][1],
        "multiclass_accuracy_mae": round(results["multiclass"]["mae"], 4),
        "target_multiclass_accuracy_mae": TARGETS["multiclass"][1],
        "binary_coverage": round(results["binary"]["coverage"], 3),
        "multiclass_coverage": round(results["multiclass"]["coverage"], 3),
        "binary_coverage_by_seed": results["binary"]["coverage_by_seed"],
        "multiclass_coverage_by_seed": results["multiclass"]["coverage_by_seed"],
        "target_coverage": TARGET_COVERAGE,
        "ok": all(r["ok"] for r in results.values()),
        "label_delay": args.label_delay,
        "harmful_batches_earlier": harmful,
        "harmless_drifted_chunks": {t: h["drifted_chunks"] for t, h in harmless.items()},
        "harmless_drift_retrains": {t: h["drift_retrains"] for t, h in harmless.items()},
        "harmless_drift_does_not_retrain": all(h["drift_retrains"] == 0 for h in harmless.values()),
        "streams": {
            task: {
                s: {
                    k: (round(v, 4) if isinstance(v, float) else v)
                    for k, v in stream.items()
                    if k != "chunks"
                }
                for s, stream in r["streams"].items()
            }
            for task, r in results.items()
        },
        "concept_drift_visible": False,
        "seeds": args.seeds,
        "chunks": args.chunks,
        "chunk_rows": args.chunk_rows,
        "seconds": round(seconds, 1),
        "commit": commit(),
        "loadavg": loadavg(),
        "loadavg_before": load_before,
        "cpus": os.cpu_count(),
    }
    text = json.dumps(line)
    print(text)
    if args.record:
        results_dir = ROOT / "benchmarks" / "results"
        results_dir.mkdir(parents=True, exist_ok=True)
        with open(results_dir / "estimate.jsonl", "a") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
