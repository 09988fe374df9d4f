"""`ctloop up`: the whole loop running on one machine, started and stopped together.

It starts (or connects to) a Prefect server, serves every deployment of `definitions.py` in a
runner process, starts the model server and the MLflow UI, and watches the landing folder: a
file that lands there starts the `ingest-landing` deployment; an accepted batch emits
`ctloop.batch.accepted`, whose triggers start `monitor` and, when the rules hold, `retrain`.
Ctrl-C (or SIGTERM) stops everything it started.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ctloop.config.settings import Config, Profile
from ctloop.launcher import Launcher, free_port, stop_on_sigterm
from ctloop.names import DEFAULT_PREFECT_PORT
from ctloop.registry.store import open_registry
from ctloop.stores.home import Home, forget_server, record_server

STOP_GRACE_SECONDS = 15  # terminate, then kill what still runs after this
LOCAL_TUNING = {
    "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "3",
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "10",
}


@dataclass(frozen=True)
class StackOptions:
    prefect_port: int = DEFAULT_PREFECT_PORT
    mlflow_port: int | None = 5000
    server_port: int | None = 8000
    optuna_port: int | None = 8080  # 0: a free port, None: no dashboard
    poll_seconds: float = 1.0
    startup_timeout: float = 180.0


@dataclass
class Stack:
    """What `up` started (one `Launcher`, stopped together) and the URLs to announce."""

    launcher: Launcher
    urls: dict[str, str] = field(default_factory=dict)
    on_stop: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        for undo in self.on_stop:
            undo()
        self.launcher.stop()


class LandingWatcher:
    """Polls the landing folder; a new file whose size held still for one poll starts the
    `ingest-landing` deployment (which ingests each file exactly once).

    Files the folder's ledger already records (ingested by an earlier `up`, or by the demo)
    start nothing.
    """

    def __init__(
        self,
        folder: Path,
        start_run: Callable[[list[str]], None],
        poll: float = 1.0,
        patterns: list[str] | None = None,
    ):
        self.folder = folder
        self.start_run = start_run
        self.poll = poll
        self.patterns = patterns or ["*"]
        self._seen: dict[str, tuple[int, float]] = {}
        self._submitted: set[tuple[str, int, float]] = set()
        self._stop = threading.Event()

    def scan_once(self) -> list[str]:
        """Files ready now (not hidden, not in the ledger, size unchanged since the last scan,
        not yet submitted)."""
        from ctloop.ingest.landing import pending_files

        ready = []
        current: dict[str, tuple[int, float]] = {}
        if not self.folder.is_dir():
            return ready
        try:
            pending = sorted(pending_files(self.folder, self.patterns))
        except FileNotFoundError:  # a file moved away (to .done) while it was listed
            return ready
        for path in pending:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            sig = (stat.st_size, stat.st_mtime)
            current[path.name] = sig
            key = (path.name, *sig)
            if self._seen.get(path.name) == sig and key not in self._submitted:
                ready.append(path.name)
                self._submitted.add(key)
        self._seen = current
        return ready

    def run(self) -> None:
        while not self._stop.is_set():
            ready = self.scan_once()
            if ready:
                self.start_run(ready)
            self._stop.wait(self.poll)

    def stop(self) -> None:
        self._stop.set()


def start_stack(config: Config, config_path: Path, home: Home, options: StackOptions) -> Stack:
    """Start every component; returns when they answer. Sets `PREFECT_API_URL` here.

    Each child writes to `<home>/logs/<name>.log`; on any failure what started is stopped.
    """
    if config.profile == Profile.CLUSTER:
        return start_cluster_stack(config, config_path, home, options)
    stack = Stack(Launcher(home.logs, grace_seconds=STOP_GRACE_SECONDS))
    launcher = stack.launcher
    # one machine: poll and retry often, so a landed file reaches the champion in seconds
    for key, value in LOCAL_TUNING.items():
        os.environ.setdefault(key, value)
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    api_url = os.environ.get("PREFECT_API_URL")
    try:
        if not api_url:
            launcher.start(
                "prefect server",
                [str(bindir / "prefect"), "server", "start", "--host", "127.0.0.1",
                 "--port", str(options.prefect_port)],
                {**env, "PREFECT_UI_API_URL": f"http://127.0.0.1:{options.prefect_port}/api"},
            )  # fmt: skip
            api_url = f"http://127.0.0.1:{options.prefect_port}/api"
            launcher.wait_for_url(
                f"{api_url}/health", "the Prefect server", options.startup_timeout
            )
            # the home's other commands (`ctloop ingest`, `train`...) use this server
            record_server(home, api_url)
            stack.on_stop.append(lambda: forget_server(home))
        os.environ["PREFECT_API_URL"] = env["PREFECT_API_URL"] = api_url
        stack.urls["Prefect UI"] = api_url.removesuffix("/api")
        # the embedded MLflow database is created (and migrated) here, once, before the
        # children that open it start: processes creating one new SQLite file at once race
        # (`table ... already exists`, or alembic's version row missing)
        registry = open_registry(config)
        launcher.start(
            "deployments",
            [sys.executable, "-m", "deployments.serve", "--config", str(config_path)],
            env,
        )
        if options.mlflow_port:
            launcher.start(
                "mlflow ui",
                [str(bindir / "mlflow"), "ui", "--host", "127.0.0.1", "--port",
                 str(options.mlflow_port), "--backend-store-uri", home.tracking_uri(config)],
                env,
            )  # fmt: skip
            stack.urls["MLflow UI"] = mlflow_page(
                f"http://127.0.0.1:{options.mlflow_port}", registry.experiment_id()
            )
        if options.server_port:
            _start_model_server(stack, config_path, options.server_port, env)
        if options.optuna_port is not None:
            _start_optuna_dashboard(stack, config, home, options.optuna_port, env)
        launcher.wait_until(
            lambda: _deployments_registered(config), "the deployments", options.startup_timeout
        )
        if options.mlflow_port:
            mlflow_health = f"http://127.0.0.1:{options.mlflow_port}/health"
            launcher.wait_for_url(mlflow_health, "the MLflow UI", options.startup_timeout)
        if options.optuna_port is not None:
            launcher.wait_for_url(
                stack.urls["Optuna dashboard"] + "/api/meta",
                "the Optuna dashboard",
                options.startup_timeout,
            )
    except BaseException:
        stack.stop()
        raise
    stack.urls["logs"] = str(home.logs)
    return stack


def mlflow_page(base: str, experiment_id: str) -> str:
    """The project's experiment in the MLflow UI, on its training runs: MLflow 3's UI opens
    an experiment on its GenAI overview ("No data available") unless the URL asks for the
    model-training view."""
    return f"{base}/#/experiments/{experiment_id}?workflowType=machine_learning"


def _start_model_server(stack: Stack, config_path: Path, port: int, env: dict) -> None:
    bindir = Path(sys.executable).parent
    stack.launcher.start(
        "model server",
        [str(bindir / "ctloop"), "serve", "--config", str(config_path), "--port", str(port)],
        env,
    )
    stack.urls["model server"] = f"http://127.0.0.1:{port}"


def _start_optuna_dashboard(stack: Stack, config: Config, home: Home, port: int, env: dict):
    """optuna-dashboard on the study storage (the home's journal file, or the RDB)."""
    from ctloop.model.tune import storage_url

    port = port or free_port()
    stack.launcher.start(
        "optuna dashboard",
        [sys.executable, "-c", "import sys; from deployments.stack import serve_optuna_dashboard "
         "as serve; serve(*sys.argv[1:])", storage_url(config, home.root), str(port)],
        env,
    )  # fmt: skip
    stack.urls["Optuna dashboard"] = f"http://127.0.0.1:{port}"


def serve_optuna_dashboard(storage: str, port: str, host: str = "127.0.0.1") -> None:
    """The dashboard's process: the storage opened as tuning opens it (journal or RDB)."""
    from optuna_dashboard import run_server

    from ctloop.model.tune import open_storage

    run_server(open_storage(storage), host=host, port=int(port))


def start_cluster_stack(
    config: Config, config_path: Path, home: Home, options: StackOptions
) -> Stack:
    """The cluster profile on this machine: each component its own process on `cluster.host`.

    Databases are created when missing; a component whose URL is configured
    (`cluster.prefect_api_url`, `mlflow_url`, `dask_address`) is used, not started.
    """
    from deployments import cluster as cl

    c = config.cluster
    stack = Stack(Launcher(home.logs, grace_seconds=STOP_GRACE_SECONDS))
    launcher = stack.launcher
    for key, value in LOCAL_TUNING.items():
        os.environ.setdefault(key, value)
    env = dict(os.environ)
    api_url = c.prefect_api()
    try:
        cl.ensure_databases(c)
        if not c.prefect_api_url:
            cl.start_prefect_server(launcher, config, env)
        launcher.wait_for_url(f"{api_url}/health", "the Prefect server", options.startup_timeout)
        os.environ["PREFECT_API_URL"] = env["PREFECT_API_URL"] = api_url
        stack.urls["Prefect UI"] = api_url.removesuffix("/api")
        mlflow_url = c.mlflow_tracking_url()
        if not c.mlflow_url:
            cl.start_mlflow_server(launcher, config, home, env)
        stack.urls["MLflow"] = mlflow_url
        if not c.dask_address:
            cl.start_dask(launcher, config, env)
        stack.urls["Dask scheduler"] = c.dask_scheduler()
        launcher.wait_for_url(f"{mlflow_url}/health", "the MLflow server", options.startup_timeout)
        cl.deploy_to_pool(config)
        stack.urls["work pool"] = c.work_pool
        for i in range(c.prefect_workers):
            cl.start_prefect_worker(launcher, config, env, i + 1)
        if options.server_port:
            _start_model_server(stack, config_path, options.server_port, env)
        if options.optuna_port is not None:
            _start_optuna_dashboard(stack, config, home, options.optuna_port, env)
        workers = c.dask_workers if not c.dask_address else 1
        launcher.wait_until(lambda: cl.dask_workers_ready(config, workers),
                            "the Dask workers", options.startup_timeout)  # fmt: skip
        launcher.wait_until(lambda: cl.prefect_workers_online(config, c.prefect_workers),
                            "the Prefect workers", options.startup_timeout)  # fmt: skip
        if options.optuna_port is not None:
            launcher.wait_for_url(
                stack.urls["Optuna dashboard"] + "/api/meta",
                "the Optuna dashboard",
                options.startup_timeout,
            )
    except BaseException:
        stack.stop()
        raise
    stack.urls["logs"] = str(home.logs)
    return stack


def _deployments_registered(config: Config) -> bool:
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(INGEST_LANDING)
            return True
    except Exception:  # noqa: BLE001 - not there yet, or the API is still starting
        return False


INGEST_LANDING = "ingest-landing/ingest-landing"


def start_landing_run(files: list[str]) -> None:
    """Start the `ingest-landing` deployment without waiting for it."""
    from prefect.deployments import run_deployment

    run_deployment(
        INGEST_LANDING,
        timeout=0,
        tags=["landing"],
        flow_run_name=f"landing-{files[0]}" + (f"-and-{len(files) - 1}-more" if files[1:] else ""),
    )


def run_stack(
    config: Config,
    config_path: Path,
    home: Home,
    options: StackOptions,
    announce: Callable[[dict[str, str]], None],
) -> None:
    """Start everything, announce the URLs, watch the landing folder until Ctrl-C/SIGTERM."""
    from ctloop.ingest.landing import landing_folder

    folder = landing_folder(config, home, None)
    with stop_on_sigterm():  # SIGTERM as Ctrl-C, from the first child on
        stack = start_stack(config, config_path, home, options)
        folder.mkdir(parents=True, exist_ok=True)
        watcher = LandingWatcher(
            folder, start_landing_run, options.poll_seconds, config.ingest.patterns
        )
        stack.urls["landing folder"] = str(folder)
        try:
            announce(stack.urls)
            watcher.run()
        except KeyboardInterrupt:
            pass
        finally:
            watcher.stop()
            stack.stop()


def run_ui(
    config: Config,
    config_path: Path,
    home: Home,
    options: StackOptions,
    announce: Callable[[dict[str, str]], None],
) -> None:
    """The UIs on a home's state until Ctrl-C/SIGTERM: the Prefect server with every deployment
    served (so "Run" in its UI works), the MLflow UI and the Optuna dashboard; no model
    server and no landing watcher. `announce` gets the URLs once every one answers."""
    from dataclasses import replace

    with stop_on_sigterm():
        stack = start_stack(config, config_path, home, replace(options, server_port=None))
        try:
            announce(stack.urls)
            stack.launcher.wait()
        except KeyboardInterrupt:
            pass
        finally:
            stack.stop()
