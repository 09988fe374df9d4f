"""The state home: every file of the embedded profile lives under one folder."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctloop.config.settings import Config
from ctloop.errors import LakeNotLocal


@dataclass(frozen=True)
class Home:
    """Paths of the embedded profile's state, all under `root` except a configured lake.

    `lake_location`: the data lake as a folder or any fsspec URL (`paths.lake`); None means
    `<root>/lake`. Read and write the lake through `ctloop.lake.snapshots` (its storage layer
    is `ctloop.stores.storage`); quarantine, reports, MLflow, Prefect and the landing folder stay
    local.
    """

    root: Path
    lake_location: str | None = None
    lake_options: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def lake_url(self) -> str:
        """The lake as configured: a local folder path or an fsspec URL."""
        return self.lake_location or str(self.root / "lake")

    @property
    def lake(self) -> Path:
        """The lake folder when the lake is local (a path or a `file://` URL).

        Raises:
            LakeNotLocal: the lake is a remote URL (read it through `ctloop.lake`).
        """
        from ctloop.stores.storage import local_path

        folder = local_path(self.lake_url)
        if folder is None:
            raise LakeNotLocal(
                f"paths.lake is {self.lake_url}: not a local folder (read it through ctloop.lake)"
            )
        return folder

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

    @property
    def logs(self) -> Path:
        """One log file per child process of `ctloop up` and `ctloop ui`."""
        return self.root / "logs"

    @property
    def lake_is_local(self) -> bool:
        from ctloop.stores.storage import local_path

        return local_path(self.lake_url) is not None

    def ensure(self) -> Home:
        """Create the local folders (never at import time; only when a command runs).

        A remote lake is not touched: its writers create what they need.
        """
        lake = (self.snapshots, self.manifests, self.schema_dir) if self.lake_is_local else ()
        for path in (
            *lake,
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


@contextmanager
def first_use_lock(home: Home) -> Iterator[None]:
    """Held while a process creates the home's stores, so that several commands started at once
    on a fresh home create each store once: the others wait, then find it made."""
    import fcntl

    home.root.mkdir(parents=True, exist_ok=True)
    with open(home.root / ".first-use.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def home_of(config: Config) -> Home:
    """The home of a config; a plain-path `paths.lake` is made absolute like the home."""
    from ctloop.stores.storage import is_url

    lake = config.paths.lake
    if lake and not is_url(lake):
        lake = str(Path(lake).expanduser().resolve())
    return Home(
        Path(config.paths.home).expanduser().resolve(), lake, dict(config.paths.lake_options)
    )


def prefect_environment(home: Home) -> dict[str, str]:
    """Environment that points Prefect at this home: local SQLite API, no telemetry, no network."""
    return {
        "PREFECT_HOME": str(home.prefect),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # MLflow 3's server starts a pool of job consumers (GenAI scorers) ctloop never uses:
        # about ten processes competing for the cores
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "GIT_PYTHON_REFRESH": "quiet",
    }


def activate(home: Home, environ: dict[str, str] | None = None) -> None:
    """Point Prefect at the home; call before Prefect is imported.

    `PREFECT_HOME` always follows the home; other settings already in the environment win, so
    an explicit `PREFECT_API_URL` (a running server, the cluster profile) is kept. Without one,
    the Prefect server of a `ctloop up` running on this home is used (`running_server`), so a
    command does not pay for an ephemeral server of its own (about 15 s of CPU each).
    """
    environ = os.environ if environ is None else environ
    if "PREFECT_API_URL" not in environ and (url := running_server(home)):
        environ["PREFECT_API_URL"] = url  # `ctloop up`'s server: no ephemeral one to start
    for key, value in prefect_environment(home).items():
        if key == "PREFECT_HOME":
            environ[key] = value
        else:
            environ.setdefault(key, value)


SERVER_RECORD = "server.json"


def record_server(home: Home, url: str, pid: int | None = None) -> Path:
    """Announce a Prefect server serving this home (`ctloop up`'s) to the home's commands."""
    path = home.prefect / SERVER_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{SERVER_RECORD}.{os.getpid()}")
    partial.write_text(json.dumps({"url": url, "pid": os.getpid() if pid is None else pid}))
    partial.replace(path)
    return path


def forget_server(home: Home, pid: int | None = None) -> None:
    """Withdraw the announcement, if it is still this process's (or `pid`'s)."""
    path = home.prefect / SERVER_RECORD
    try:
        if json.loads(path.read_text()).get("pid") == (os.getpid() if pid is None else pid):
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def running_server(home: Home) -> str | None:
    """The API URL of the server announced for this home, if its announcer is alive and its
    port takes connections; None otherwise (no record, a dead `up`, a closed port)."""
    from urllib.parse import urlsplit

    try:
        record = json.loads((home.prefect / SERVER_RECORD).read_text())
        url, pid = str(record["url"]), int(record["pid"])
        parts = urlsplit(url)
        address = (parts.hostname or "127.0.0.1", parts.port or 80)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    from ctloop.stores.storage import pid_alive

    if not pid_alive(pid):
        return None
    try:
        with socket.create_connection(address, timeout=0.5):
            return url
    except OSError:
        return None
