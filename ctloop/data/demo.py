"""A seeded stream of loan applications with scripted episodes, for the demo and the tests.

Each day, the features of that day's applications arrive (unlabelled); whether a loan defaulted
is known `label_lag_days` later, when the labelled batch of that day lands. The script has
stable days, a gradual covariate shift (incomes fall, loans grow), one corrupt labelled batch and
a sudden concept drift (a regional downturn: young applicants from the south borrowing for a
business now default far more often, whatever their credit score).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.config.settings import Config

TARGET = "default"
TIMESTAMP = "application_date"
ID = "application_id"
REGIONS = ["north", "south", "east", "west"]
PURPOSES = ["car", "home", "education", "business", "debt_consolidation"]
OWNERSHIP = ["rent", "own", "mortgage"]


@dataclass(frozen=True)
class DemoScript:
    """When each episode of the demo stream happens (day indices from 0)."""

    days: int = 28
    rows_per_day: int = 600
    label_lag_days: int = 2
    shift_start: int = 8
    shift_end: int = 18
    concept_drift_day: int = 18
    corrupt_day: int = 11
    start: date = date(2026, 1, 5)
    seed: int = 7

    def episode(self, day: int) -> str:
        if day >= self.concept_drift_day:
            return "concept drift"
        if day >= self.shift_start:
            return "gradual shift"
        return "stable"


@dataclass(frozen=True)
class DemoEvent:
    """One file landing: the features of a day, or the labelled batch of an earlier day."""

    arrival_day: int
    data_day: int
    kind: str  # "features" or "labels"
    frame: pd.DataFrame
    episode: str
    corrupt: bool = False

    @property
    def filename(self) -> str:
        suffix = "features" if self.kind == "features" else "labelled"
        return f"day{self.data_day:02d}_{suffix}.csv"


def _shift_progress(script: DemoScript, day: int) -> float:
    """0 before the gradual shift, rising linearly to 1 at its end, 1 afterwards."""
    if day < script.shift_start:
        return 0.0
    span = max(script.shift_end - script.shift_start, 1)
    return min((day - script.shift_start) / span, 1.0)


def generate_day(script: DemoScript, day: int, rng: np.random.Generator) -> pd.DataFrame:
    """Labelled applications of one day, following the script's episode for that day."""
    n = script.rows_per_day
    progress = _shift_progress(script, day)
    drifted = day >= script.concept_drift_day

    region_p = [0.15, 0.55, 0.15, 0.15] if drifted else [0.25, 0.25, 0.25, 0.25]
    purpose_p = [0.15, 0.15, 0.1, 0.45, 0.15] if drifted else [0.25, 0.2, 0.15, 0.1, 0.3]
    age = rng.normal(31 if drifted else 41, 11, n).clip(18, 80).round()
    income = rng.lognormal(np.log(52_000 * (1 - 0.3 * progress)), 0.45, n).round(-2)
    loan = rng.lognormal(np.log(14_000 * (1 + 0.25 * progress)), 0.5, n).round(-2)
    credit = rng.normal(680, 65, n).clip(300, 850).round()
    employment = rng.exponential(6, n).clip(0, 40).round(1)
    region = rng.choice(REGIONS, n, p=region_p)
    purpose = rng.choice(PURPOSES, n, p=purpose_p)
    ownership = rng.choice(OWNERSHIP, n, p=[0.45, 0.2, 0.35])

    ratio = loan / income
    if not drifted:
        logit = (
            -1.6
            - 0.018 * (credit - 680)
            + 3.0 * (ratio - 0.3)
            - 0.05 * employment
            + 0.5 * (ownership == "rent")
            + 0.4 * (purpose == "debt_consolidation")
        )
    else:
        downturn = (region == "south") & (purpose == "business")
        logit = (
            -2.2
            - 0.004 * (credit - 680)
            + 1.0 * (ratio - 0.3)
            + 3.2 * downturn
            + 1.2 * (age < 28)
            - 0.02 * employment
        )
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)

    day_start = datetime.combine(script.start + timedelta(days=day), time(8, 0))
    seconds = np.sort(rng.integers(0, 12 * 3600, n))
    return pd.DataFrame(
        {
            ID: [f"A{day:03d}{i:05d}" for i in range(n)],
            TIMESTAMP: [day_start + timedelta(seconds=int(s)) for s in seconds],
            "age": age.astype(int),
            "income": income,
            "loan_amount": loan,
            "credit_score": credit.astype(int),
            "employment_years": employment,
            "home_ownership": ownership,
            "purpose": purpose,
            "region": region,
            TARGET: label,
        }
    )


def corrupt(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """What a broken upstream export looks like: text in a numeric column and lost incomes."""
    bad = frame.copy()
    bad["credit_score"] = bad["credit_score"].astype(object)
    rows = rng.random(len(bad)) < 0.3
    bad.loc[rows, "credit_score"] = "UNKNOWN"
    bad.loc[rng.random(len(bad)) < 0.45, "income"] = np.nan
    return bad


def demo_stream(script: DemoScript | None = None) -> Iterator[DemoEvent]:
    """Yield the landing files of the demo in arrival order (deterministic for a script)."""
    script = script or DemoScript()
    rng = np.random.default_rng(script.seed)
    days = {d: generate_day(script, d, rng) for d in range(script.days)}
    last_arrival = script.days - 1 + script.label_lag_days
    for arrival in range(last_arrival + 1):
        if arrival < script.days:
            features = days[arrival].drop(columns=[TARGET])
            yield DemoEvent(arrival, arrival, "features", features, script.episode(arrival))
        labelled_day = arrival - script.label_lag_days
        if 0 <= labelled_day < script.days:
            frame = days[labelled_day]
            is_corrupt = labelled_day == script.corrupt_day
            if is_corrupt:
                frame = corrupt(frame, rng)
            yield DemoEvent(
                arrival, labelled_day, "labels", frame, script.episode(labelled_day), is_corrupt
            )


def labelled_stream(script: DemoScript | None = None) -> pd.DataFrame:
    """Every labelled day of the stream as one frame, in application order: the history
    `ctloop replay` takes (the corrupt day's upstream export is left out: replay scores
    what was true, not what a broken export delivered)."""
    frames = [e.frame for e in demo_stream(script) if e.kind == "labels" and not e.corrupt]
    return pd.concat(frames, ignore_index=True).sort_values(TIMESTAMP, kind="stable")


def write_event(event: DemoEvent, folder: Path) -> Path:
    """Write one landing file as CSV, the way an upstream export would deliver it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / event.filename
    event.frame.to_csv(path, index=False)
    return path


def demo_config(
    home: str, rows_per_day: int = DemoScript.rows_per_day, tune_trials: int = 0
) -> Config:
    """The demo's settings: the loan stream's columns, and trigger rules sized to its batches.

    A first model after 4 labelled days, a new-data retrain after 10 more, a drift retrain once
    3 labelled days have arrived since the drift began. `tune_trials` > 0: each retrain runs
    an Optuna study of that many trials (one worker), so the dashboard has studies to show.
    """
    tuning = {"enabled": tune_trials > 0, "trials": max(tune_trials, 1), "workers": 1}
    return Config.model_validate(
        {
            "project": "loans",
            "dataset": {"target": TARGET, "task": "binary", "timestamp": TIMESTAMP, "id": ID},
            "training": {"window_days": 10, "holdout_fraction": 0.2},
            "gates": {"primary_metric": "roc_auc", "min_metrics": {"roc_auc": 0.6}},
            "triggers": {
                "bootstrap_rows": 4 * rows_per_day,
                "min_new_rows": 10 * rows_per_day,
                "drift_min_rows": 3 * rows_per_day,
            },
            "tuning": tuning,
            "paths": {"home": home},
        }
    )
