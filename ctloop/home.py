"""The state home: every file of the embedded profile lives under one folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ctloop.config import Config


@dataclass(frozen=True)
class Home:
    """Paths of the embedded profile's state, all under `root`."""

    root: Path

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def snapshots(self) -> Path:
        return self.lake / "snapshots"

    @property
    def manifests(self) -> Path:
        return self.lake / "manifests"

    @property
    def schema_dir(self) -> Path:
        return self.lake / "schema"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def prefect(self) -> Path:
        return self.root / "prefect"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def ensure(self) -> Home:
        """Create the folders (never at import time; only when a command runs)."""
        for path in (
            self.snapshots,
            self.manifests,
            self.schema_dir,
            self.quarantine,
            self.mlflow / "artifacts",
            self.prefect,
            self.reports,
        ):
            path.mkdir(parents=True, exist_ok=True)
        return self

    def tracking_uri(self, config: Config) -> str:
        if config.paths.tracking_uri:
            return config.paths.tracking_uri
        return f"sqlite:///{(self.mlflow / 'mlflow.db').resolve()}"

    def artifact_root(self) -> str:
        return (self.mlflow / "artifacts").resolve().as_uri()


def home_of(config: Config) -> Home:
    return Home(Path(config.paths.home).expanduser().resolve())


def prefect_environment(home: Home) -> dict[str, str]:
    """Environment that points Prefect at this home: local SQLite API, no telemetry, no network."""
    return {
        "PREFECT_HOME": str(home.prefect),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "GIT_PYTHON_REFRESH": "quiet",
    }


def activate(home: Home, environ: dict[str, str] | None = None) -> None:
    """Point Prefect at the home; call before Prefect is imported.

    `PREFECT_HOME` always follows the home; other settings already in the environment win, so
    an explicit `PREFECT_API_URL` (a running server, the cluster profile) is kept.
    """
    environ = os.environ if environ is None else environ
    for key, value in prefect_environment(home).items():
        if key == "PREFECT_HOME":
            environ[key] = value
        else:
            environ.setdefault(key, value)
