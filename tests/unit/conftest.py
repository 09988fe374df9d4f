"""Shared fixtures for the unit tests of the pure core (no Prefect, no MLflow).

Helpers are handed out as fixtures (not imported from this module) so the suite keeps working
beside any other conftest.py in the repository.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.config.settings import Config
from ctloop.data.demo import ID, TARGET, TIMESTAMP, DemoScript, generate_day
from ctloop.lake.snapshots import read_batch
from ctloop.stores.home import Home


def _loan_config(**sections) -> Config:
    data: dict = {"dataset": {"target": TARGET, "timestamp": TIMESTAMP, "id": ID}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return Config.model_validate(data)


@pytest.fixture
def make_config() -> Callable[..., Config]:
    """Config for the demo loan stream; keyword sections are merged in (e.g. training={...})."""
    return _loan_config


@pytest.fixture
def config() -> Config:
    return _loan_config()


@pytest.fixture
def script() -> DemoScript:
    return DemoScript(rows_per_day=300)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def demo_days(script: DemoScript) -> Callable[..., pd.DataFrame]:
    """Labelled demo applications of the given days, concatenated (seeded)."""

    def make(days, seed: int = 0) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        return pd.concat([generate_day(script, d, rng) for d in days], ignore_index=True)

    return make


@pytest.fixture
def delivered(tmp_path: Path) -> Callable[..., pd.DataFrame]:
    """A frame as an upstream CSV export delivers it: written to disk, read back raw."""
    counter = iter(range(10_000))

    def make(frame: pd.DataFrame) -> pd.DataFrame:
        folder = tmp_path / "landing"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"batch{next(counter):04d}.csv"
        frame.to_csv(path, index=False)
        return read_batch(path)

    return make


@pytest.fixture(scope="session", autouse=True)
def _single_threaded_math():
    """One OpenMP/BLAS thread: small fits are faster and steadier on a busy 2-core machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield
