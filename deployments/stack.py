"""`ctloop up`: the whole loop running on one machine, started and stopped together.

It starts (or connects to) a Prefect server, serves every deployment of `definitions.py` in a
runner process, starts the model server and the MLflow UI, and watches the landing folder: a
file that lands there starts the `ingest-landing` deployment; an accepted batch emits
`ctloop.batch.accepted`, whose triggers start `monitor` and, when the rules hold, `retrain`.
Ctrl-C (or SIGTERM) stops everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ctloop.config.home import Home
from ctloop.config.settings import Config, Profile
from ctloop.errors import CtloopError

LOCAL_TUNING = {
    "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "3",
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "10",
}


@dataclass(frozen=True)
class StackOptions:
    prefect_port: int = 4200
    mlflow_port: int | None = 5000
    server_port: int | None = 8000
    poll_seconds: float = 1.0
    startup_timeout: float = 180.0


@dataclass
class Stack:
    """What `up` started, to be stopped together."""

    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 15
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _wait_until(check: Callable[[], bool], what: str, timeout: float, procs: Stack) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for name, proc in procs.processes.items():
            if proc.poll() is not None:
                raise CtloopError(f"{name} exited with code {proc.returncode} during start-up")
        time.sleep(0.5)
    raise CtloopError(f"{what} did not become ready within {timeout:.0f} s")


class LandingWatcher:
    """Polls the landing folder; a new file whose size held still for one poll starts the
    `ingest-landing` deployment (which ingests each file exactly once)."""

    def __init__(self, folder: Path, start_run: Callable[[list[str]], None], poll: float = 1.0):
        self.folder = folder
        self.start_run = start_run
        self.poll = poll
        self._seen: dict[str, tuple[int, float]] = {}
        self._submitted: set[tuple[str, int, float]] = set()
        self._stop = threading.Event()

    def scan_once(self) -> list[str]:
        """Files ready now (not hidden, size unchanged since the last scan, not yet submitted)."""
        ready = []
        current: dict[str, tuple[int, float]] = {}
        if self.folder.is_dir():
            for path in sorted(self.folder.iterdir()):
                if not path.is_file() or path.name.startswith("."):
                    continue
                stat = path.stat()
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
    """Start every component; returns when they answer. Sets `PREFECT_API_URL` here."""
    if config.profile == Profile.CLUSTER:
        return start_cluster_stack(config, config_path, home, options)
    stack = Stack()
    # one machine: poll and retry often, so a landed file reaches the champion in seconds
    for key, value in LOCAL_TUNING.items():
        os.environ.setdefault(key, value)
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    api_url = os.environ.get("PREFECT_API_URL")
    try:
        if not api_url:
            stack.processes["prefect server"] = subprocess.Popen(
                [str(bindir / "prefect"), "server", "start", "--host", "127.0.0.1",
                 "--port", str(options.prefect_port)],
                env={**env, "PREFECT_UI_API_URL": f"http://127.0.0.1:{options.prefect_port}/api"},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            api_url = f"http://127.0.0.1:{options.prefect_port}/api"
            _wait_until(
                lambda: _healthy(f"{api_url}/health"),
                "the Prefect server",
                options.startup_timeout,
                stack,
            )
        os.environ["PREFECT_API_URL"] = env["PREFECT_API_URL"] = api_url
        stack.urls["Prefect UI"] = api_url.removesuffix("/api")
        stack.processes["deployments"] = subprocess.Popen(
            [sys.executable, "-m", "deployments.serve", "--config", str(config_path)], env=env
        )
        if options.mlflow_port:
            stack.processes["mlflow ui"] = subprocess.Popen(
                [str(bindir / "mlflow"), "ui", "--host", "127.0.0.1", "--port",
                 str(options.mlflow_port), "--backend-store-uri", home.tracking_uri(config)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            stack.urls["MLflow UI"] = f"http://127.0.0.1:{options.mlflow_port}"
        if options.server_port:
            _start_model_server(stack, config_path, options.server_port, env)
        _wait_until(
            lambda: _deployments_registered(config), "the deployments", options.startup_timeout,
            stack,
        )  # fmt: skip
        if options.mlflow_port:
            _wait_until(lambda: _healthy(stack.urls["MLflow UI"]), "the MLflow UI", 60, stack)
    except BaseException:
        stack.stop()
        raise
    return stack


def _start_model_server(stack: Stack, config_path: Path, port: int, env: dict) -> None:
    bindir = Path(sys.executable).parent
    stack.processes["model server"] = subprocess.Popen(
        [str(bindir / "ctloop"), "serve", "--config", str(config_path), "--port", str(port)],
        env=env,
    )
    stack.urls["model server"] = f"http://127.0.0.1:{port}"


def start_cluster_stack(
    config: Config, config_path: Path, home: Home, options: StackOptions
) -> Stack:
    """The cluster profile on this machine: each component its own process on `cluster.host`.

    Databases are created when missing; a component whose URL is configured
    (`cluster.prefect_api_url`, `mlflow_url`, `dask_address`) is used, not started.
    """
    from deployments import cluster as cl

    c = config.cluster
    stack = Stack()
    for key, value in LOCAL_TUNING.items():
        os.environ.setdefault(key, value)
    env = dict(os.environ)
    api_url = c.prefect_api()
    try:
        cl.ensure_databases(c)
        if not c.prefect_api_url:
            stack.processes["prefect server"] = cl.start_prefect_server(config, env)
        _wait_until(lambda: _healthy(f"{api_url}/health"), "the Prefect server",
                    options.startup_timeout, stack)  # fmt: skip
        os.environ["PREFECT_API_URL"] = env["PREFECT_API_URL"] = api_url
        stack.urls["Prefect UI"] = api_url.removesuffix("/api")
        mlflow_url = c.mlflow_tracking_url()
        if not c.mlflow_url:
            stack.processes["mlflow server"] = cl.start_mlflow_server(config, home, env)
        stack.urls["MLflow"] = mlflow_url
        if not c.dask_address:
            for name, proc in cl.start_dask(config, env):
                stack.processes[name] = proc
        stack.urls["Dask scheduler"] = c.dask_scheduler()
        _wait_until(lambda: _healthy(f"{mlflow_url}/health"), "the MLflow server",
                    options.startup_timeout, stack)  # fmt: skip
        cl.deploy_to_pool(config)
        stack.urls["work pool"] = c.work_pool
        for i in range(c.prefect_workers):
            stack.processes[f"prefect worker {i + 1}"] = cl.start_prefect_worker(config, env, i + 1)
        if options.server_port:
            _start_model_server(stack, config_path, options.server_port, env)
        _wait_until(lambda: cl.dask_workers_ready(config, c.dask_workers if not c.dask_address
                                                  else 1),
                    "the Dask workers", options.startup_timeout, stack)  # fmt: skip
        _wait_until(lambda: cl.prefect_workers_online(config, c.prefect_workers),
                    "the Prefect workers", options.startup_timeout, stack)  # fmt: skip
    except BaseException:
        stack.stop()
        raise
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
    stack = start_stack(config, config_path, home, options)
    from ctloop.ingest.landing import landing_folder

    folder = landing_folder(config, home, None)
    folder.mkdir(parents=True, exist_ok=True)
    watcher = LandingWatcher(folder, start_landing_run, options.poll_seconds)
    stack.urls["landing folder"] = str(folder)

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        announce(stack.urls)
        watcher.run()
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()
        stack.stop()
