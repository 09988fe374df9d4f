"""Start named child processes, wait until they answer, stop them all together.

One launcher serves `ctloop up` (`deployments/stack.py`) and `ctloop ui`. Each child writes its
stdout and stderr to `<log_dir>/<name>.log`; a child that exits while the others start is
reported with its exit code, its log file and the log's last line. Used as a context manager,
SIGTERM behaves like Ctrl-C, and leaving the block stops every child, the last started first:
each runs in its own process group, which is terminated first and killed after the grace period,
so no grandchild (a uvicorn worker of `mlflow ui`, say) is left behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ctloop.errors import CtloopError


@dataclass(frozen=True)
class Child:
    """A started process, the name it is reported by and the file its output goes to."""

    name: str
    process: subprocess.Popen
    log: Path | None

    def describe_exit(self) -> str:
        """`NAME exited with code N (log: FILE: last line)`."""
        where = ""
        if self.log is not None:
            last = _last_line(self.log)
            where = f" (log: {self.log}" + (f": {last}" if last else "") + ")"
        return f"{self.name} exited with code {self.process.returncode}{where}"


def _last_line(path: Path, limit: int = 300) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(handle.tell() - 8192, 0))
            lines = [x.strip() for x in handle.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [x for x in lines if x]
    return lines[-1][:limit] if lines else ""


def url_answers(url: str, timeout: float = 2.0) -> bool:
    """True when a GET of `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (the OS picks it)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def log_name(name: str) -> str:
    """The log file name of a child: `prefect server` -> `prefect-server.log`."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-").lower() + ".log"


class Launcher:
    """The child processes of one command, started and stopped together.

    Args:
        log_dir: folder for one log file per child (created on the first start); None sends
            the children's output to this process's console.
        grace_seconds: how long `stop` waits after terminating before it kills.
    """

    def __init__(self, log_dir: Path | None = None, grace_seconds: float = 15.0):
        self.log_dir = log_dir
        self.grace_seconds = grace_seconds
        self.children: dict[str, Child] = {}

    def start(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> subprocess.Popen:
        """Start `command` as the child `name`, its output in the child's log file."""
        if name in self.children:
            raise ValueError(f"a child named {name!r} is already started")
        log: Path | None = None
        handle: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = self.log_dir / log_name(name)
            handle = open(log, "wb")  # noqa: SIM115 - the child holds its own copy
        try:
            process = subprocess.Popen(
                list(command),
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT if handle is not None else None,
                start_new_session=True,  # its own process group: stopped with its children
            )
        finally:
            if handle is not None:
                handle.close()
        self.children[name] = Child(name, process, log)
        return process

    def check(self) -> None:
        """Raise when a child has exited.

        Raises:
            CtloopError: names the child, its exit code and its log file.
        """
        for child in self.children.values():
            if child.process.poll() is not None:
                raise CtloopError(f"{child.describe_exit()} during start-up")

    def wait_until(
        self, ready: Callable[[], bool], what: str, timeout: float, poll: float = 0.5
    ) -> None:
        """Wait until `ready()` holds, checking that every child still runs.

        Raises:
            CtloopError: a child exited, or `what` was not ready within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            self.check()
            time.sleep(poll)
        raise CtloopError(f"{what} did not become ready within {timeout:.0f} s")

    def wait_for_url(self, url: str, what: str, timeout: float) -> None:
        """Wait until `url` answers 200 (see `wait_until`)."""
        self.wait_until(lambda: url_answers(url), what, timeout)

    def wait(self) -> None:
        """Block until every child has exited (Ctrl-C or SIGTERM ends it earlier)."""
        for child in self.children.values():
            child.process.wait()

    def stop(self) -> None:
        """Terminate every child with what it started (its process group), the last started
        first, each once the ones started after it have exited; kill what still runs after
        the grace period.

        The reverse order keeps what a child needs to shut down: the deployment runner of
        `up` cancels its runs and pauses its schedules through the Prefect server started
        before it (stopped together, the runner retried a gone server until it was killed,
        15 s later). A second Ctrl-C or SIGTERM while stopping is ignored, so no child is
        left behind.
        """
        with _shielded():
            children = list(self.children.values())
            deadline = time.monotonic() + self.grace_seconds
            for child in reversed(children):
                _signal_group(child.process, signal.SIGTERM)
                try:
                    child.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    pass
            for child in children:  # what still runs, the child or one it started: killed
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait()

    def __enter__(self) -> Launcher:
        guard_descendants()  # a SIGKILL of this process takes the children too
        self._sigterm = stop_on_sigterm()
        self._sigterm.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self.stop()
        finally:
            self._sigterm.__exit__(None, None, None)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    """Send `sig` to the process group a child leads (it and what it started)."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Inside the block SIGTERM acts as Ctrl-C (KeyboardInterrupt), so `finally` clauses and
    `with` blocks stop what was started (signal handlers exist in the main thread only)."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextmanager
def _shielded() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM inside the block (main thread only)."""
    if not _in_main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


# -- a watchdog for what a command leaves behind ------------------------------------------------

_GUARD: tuple[subprocess.Popen, int] | None = None


def guard_descendants() -> None:
    """Start a watchdog that stops this process's descendants once it has exited, even by
    SIGKILL: Prefect's ephemeral API server, started by the first flow run of a command, is
    otherwise left running (re-parented to init) when the command is killed.

    The watchdog holds the read end of a pipe whose write end only this process has (Python's
    pipes are not inherited by children); the pipe reports end-of-file when this process is
    gone, however it ended. Until then the watchdog notes the descendants twice a second.
    """
    global _GUARD
    if _GUARD is not None or not hasattr(os, "getpgid"):
        return
    import sys

    read_end, write_end = os.pipe()
    try:
        watchdog = subprocess.Popen(
            [sys.executable, "-c", "from ctloop.launcher import watch_parent; watch_parent()"],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C or a signal to our group does not reach it
        )
    finally:
        os.close(read_end)
    _GUARD = (watchdog, write_end)


def watch_parent(poll_seconds: float = 0.5, grace_seconds: float = 10.0) -> None:
    """The watchdog's body (see `guard_descendants`)."""
    import select
    import sys

    import psutil

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    me = os.getpid()
    parent = psutil.Process(os.getppid())
    seen: dict[int, float] = {}
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], poll_seconds)
        if ready:  # end of file: the parent has exited
            break
        try:
            for child in parent.children(recursive=True):
                if child.pid != me:
                    seen.setdefault(child.pid, child.create_time())
        except psutil.Error:
            break
    left = []
    for pid, created in seen.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == created:  # the same process, not a reused pid
                left.append(process)
        except psutil.Error:
            continue
    for process in left:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(left, timeout=grace_seconds)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
