"""Registered model versions trained on the demo stream, for serving tests and the benchmark.

The versions are real: trained by `ctloop.model.train`, logged and registered by
`ctloop.registry.store` with the tags the retrain flow writes (semver, signature), without Prefect.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ctloop.config.settings import Config
from ctloop.data.demo import DemoScript, generate_day
from ctloop.model.train import prepare_features, train_candidate
from ctloop.registry.store import ModelRef, next_semver, open_registry


def demo_frame(days: range | list[int], rows_per_day: int = 300, seed: int = 0) -> pd.DataFrame:
    """Labelled demo rows of some days (stable days unless the days reach the drift)."""
    script = DemoScript(rows_per_day=rows_per_day)
    frames = [generate_day(script, d, np.random.default_rng(seed + d)) for d in days]
    return pd.concat(frames, ignore_index=True)


def register_version(
    config: Config,
    frame: pd.DataFrame,
    *,
    family: str | None = None,
    params: dict | None = None,
    signature: list[list[str]] | None = None,
    alias: str | None = None,
) -> ModelRef:
    """Train on `frame`, log and register a version; optionally point an alias at it.

    Args:
        signature: override the recorded input signature (to make a version that cannot serve).
    """
    trained = config.model_copy(deep=True)
    if family:
        trained.training.family = family
    if params is not None:
        trained.training.params = dict(params)
    candidate = train_candidate(frame, trained)
    registry = open_registry(config)
    real = [[n, "numeric"] for n in candidate.numeric] + [
        [n, "categorical"] for n in candidate.categorical
    ]
    recorded = signature if signature is not None else real
    example = prepare_features(frame.head(20), candidate.numeric, candidate.categorical)
    tags = {
        "ctloop.trigger": "manual",
        "ctloop.reason": "sample version",
        "ctloop.signature": json.dumps(recorded),
        "ctloop.trained_on": f"{len(frame)} demo rows",
        "ctloop.blessed": "true",
    }
    run_id, model_uri = registry.log_candidate(
        pipeline=candidate.pipeline,
        input_example=example,
        params=candidate.params,
        metrics={},
        tags=tags,
    )
    semver = next_semver(registry.latest(), recorded)
    ref = registry.register(model_uri, run_id, {**tags, "semver": semver})
    if alias:
        registry.set_alias(alias, ref.version)
    return ref


FIRST = ("Owen", "John", "Laina", "Lily", "William", "Elisabeth", "Hudson", "Anna", "Karl", "Mary")
LAST = ("Braund", "Cumings", "Heikkinen", "Futrelle", "Allen", "Moran", "McCarthy", "Palsson")
TITLES = ("Mr.", "Mrs.", "Miss.", "Master.", "Dr.")
TOWNS = (
    "St Louis, MO",
    "Montreal, PQ / Chesterville, ON",
    "New York, NY",
    "Lyndhurst, England",
    "Paris, France",
    "Winnipeg, MB",
)
TICKET_PREFIXES = ("", "", "", "PC ", "A/5 ", "STON/O2. ", "C.A. ")


def passenger_frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """A passenger list with personal data, like the public Titanic file: a name with a title,
    a ticket-like id, a home town, a True/False column, an id and a time; label `survived`."""
    rng = np.random.default_rng(seed)
    pclass = rng.integers(1, 4, rows)
    female = rng.random(rows) < 0.4
    age = np.round(rng.uniform(1, 70, rows), 1)
    vip = rng.random(rows) < 0.15
    logit = 1.5 * female - 0.8 * (pclass - 2) + 1.0 * vip - 0.02 * (age - 30)
    survived = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    names = [
        f"{LAST[rng.integers(len(LAST))]}, {TITLES[rng.integers(len(TITLES))]} "
        f"{FIRST[rng.integers(len(FIRST))]} {FIRST[rng.integers(len(FIRST))]}"
        for _ in range(rows)
    ]
    tickets = [
        f"{TICKET_PREFIXES[rng.integers(len(TICKET_PREFIXES))]}{rng.integers(10_000, 3_999_999)}"
        for _ in range(rows)
    ]
    start = pd.Timestamp("1912-04-01")
    return pd.DataFrame(
        {
            "passenger_id": [f"P{i:05d}" for i in range(rows)],
            "boarded": [
                start + pd.Timedelta(hours=int(h)) for h in sorted(rng.integers(0, 240, rows))
            ],
            "name": names,
            "sex": np.where(female, "female", "male"),
            "age": age,
            "pclass": pclass,
            "ticket": tickets,
            "home_town": [TOWNS[i] for i in rng.integers(len(TOWNS), size=rows)],
            "vip": vip,
            "survived": survived,
        }
    )


def passenger_home(root, rows: int = 400, seed: int = 3) -> dict:
    """A home whose lake holds one ingested passenger list (personal data hashed) and whose
    champion was trained on it as the retrain flow trains (identifying columns left out).

    Returns the config (with the dataset's id and timestamp), the raw frame, the CSV's path and
    the champion's ref.
    """
    from pathlib import Path

    from ctloop.data.privacy import without_identifying
    from ctloop.ingest.stage import ingest_path
    from ctloop.lake import snapshots as lake
    from ctloop.registry.store import CHAMPION
    from ctloop.stores.home import home_of

    root = Path(root)
    config = Config.model_validate(
        {
            "project": "passengers",
            "dataset": {"target": "survived", "id": "passenger_id", "timestamp": "boarded"},
            "paths": {"home": str(root / "home")},
        }
    )
    raw = passenger_frame(rows, seed)
    path = root / "passengers.csv"
    raw.to_csv(path, index=False)
    home = home_of(config)
    outcome = ingest_path(path, config, home)
    if not outcome.accepted:
        raise RuntimeError(f"the passenger list was quarantined: {outcome}")
    ids = [m.snapshot for m in lake.list_snapshots(home)]
    frame = without_identifying(lake.load_snapshots(home, ids), lake.current_schema(home))
    ref = register_version(config, frame, params={"max_iter": 30}, alias=CHAMPION)
    return {"config": config, "raw": raw, "path": path, "ref": ref, "snapshots": ids}
