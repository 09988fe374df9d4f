"""Drive a stream of files through a running ctloop stack (`ctloop up`, either profile).

The demo stream, fed the way production feeds it: each labelled batch is dropped into the
landing folder (the watcher starts `ingest-landing`; `ctloop.batch.accepted` then triggers
`monitor` and `retrain` by their deployment triggers), and each unlabelled features batch is
handed to the `monitor` deployment (as an upstream job would on arrival). Nothing here decides
anything: the deployments, their triggers and the shared retrain rule do.

One step at a time: after each file the driver waits until the flow runs it caused have all
finished and no new run appeared for `quiet` seconds, so the outcome of a step never depends
on how fast the machine is. That is what makes a run on the cluster profile comparable,
decision by decision, with the embedded demo (`tests/test_cluster.py`, `benchmarks/cluster.py`).
A flow run rescheduled after its worker was lost is still active: the driver waits for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ctloop.config.settings import Config
from ctloop.data.demo import DemoEvent, write_event
from ctloop.ingest.landing import LEDGER

ACTIVE = ["SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"]
MONITOR = "monitor/monitor"


@dataclass
class StreamStep:
    """What one file led to."""

    file: str
    kind: str  # "features" or "labels"
    outcome: str  # monitored / accepted / quarantined
    snapshot: str | None
    runs: int  # flow runs the step caused
    seconds: float


class StreamError(RuntimeError):
    """The stack did not settle in time, or a flow run of the stream ended badly."""


def _all_runs(project: str) -> list:
    """Every flow run of the project (paged: a stream makes hundreds)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    found, offset = [], 0
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[project])),
                limit=200,
                offset=offset,
            )
            found += page
            if len(page) < 200:
                return found
            offset += 200


def _state(run) -> str:
    return run.state.type.value if run.state else "SCHEDULED"


def wait_settled(
    project: str,
    known: set[str],
    expect_new: int,
    quiet: float,
    timeout: float,
    liveness: Callable[[], None] | None = None,
) -> list:
    """Wait until at least `expect_new` runs beyond `known` exist, none of the project's runs is
    active, and that has held for `quiet` seconds. Returns the new runs.

    Raises StreamError on timeout, or when a new run ended FAILED or CRASHED.
    """
    deadline = time.monotonic() + timeout
    calm_since = None
    while time.monotonic() < deadline:
        if liveness:
            liveness()
        runs = _all_runs(project)
        new = [r for r in runs if str(r.id) not in known]
        active = [r for r in runs if _state(r) in ACTIVE]
        if len(new) >= expect_new and not active:
            calm_since = calm_since or time.monotonic()
            if time.monotonic() - calm_since >= quiet:
                # a last look: nothing appeared during the quiet window
                if len(_all_runs(project)) == len(runs):
                    ended = [(r.name, _state(r)) for r in new]
                    bad = [f"{n}: {s}" for n, s in ended if s in ("FAILED", "CRASHED")]
                    if bad:
                        raise StreamError("flow runs ended badly: " + ", ".join(bad))
                    return new
                calm_since = None
        else:
            calm_since = None
        time.sleep(0.5)
    stuck = [_describe(r) for r in _all_runs(project) if _state(r) in ACTIVE]
    raise StreamError(f"the stack did not settle within {timeout:.0f} s; still active: {stuck}")


def _describe(run) -> str:
    """A run's name, state (type and name), message and run count: what a stuck run waits for
    (a `Scheduled` run may be `AwaitingRetry`, `AwaitingConcurrencySlot` or `Late`)."""
    state = run.state
    if state is None:
        return f"{run.name} (no state)"
    message = f": {state.message}" if state.message else ""
    return (
        f"{run.name} {run.id} {state.type.value}/{state.name} run_count={run.run_count} "
        f"since {state.timestamp:%H:%M:%S}{message}"
    )


def _ledger_entry(landing: Path, name: str) -> dict | None:
    ledger = landing / LEDGER
    if not ledger.exists():
        return None
    for line in reversed(ledger.read_text().splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("file") == name:
            return entry
    return None


def drive_stream(
    config: Config,
    events: Iterable[DemoEvent],
    landing: Path,
    features: Path,
    *,
    quiet: float = 3.0,
    step_timeout: float = 900.0,
    on_step: Callable[[int, StreamStep], None] | None = None,
    liveness: Callable[[], None] | None = None,
) -> list[StreamStep]:
    """Feed the events one by one to the stack whose API is `PREFECT_API_URL`; returns the steps.

    Args:
        config: the project config the stack runs (its project tag names the runs).
        events: the files, in arrival order (e.g. `ctloop.data.demo.demo_stream`).
        landing: the landing folder the stack's watcher watches.
        features: where unlabelled batches are written for the `monitor` deployment.
        quiet: seconds without any active or new run before the next file.
        step_timeout: seconds one step may take, retries after a lost worker included.
        on_step: called after each step (index, step).
        liveness: called while waiting; raise from it to stop (e.g. `ctloop up` exited).
    """
    from prefect.deployments import run_deployment

    project = config.project
    steps: list[StreamStep] = []
    known = {str(r.id) for r in _all_runs(project)}
    for index, event in enumerate(events):
        started = time.monotonic()
        if event.kind == "features":
            path = write_event(event, features)
            run_deployment(
                MONITOR,
                parameters={"path": str(path), "html_when": "on_drift"},
                timeout=0,
                tags=["stream", project],
                flow_run_name=f"monitor-{event.filename}",
            )
            new = wait_settled(project, known, 1, quiet, step_timeout, liveness)
            step = StreamStep(event.filename, event.kind, "monitored", None, len(new), 0.0)
        else:
            # written beside the landing folder, then renamed in: the watcher sees it whole
            write_event(event, features / ".staging").rename(landing / event.filename)
            deadline = time.monotonic() + step_timeout
            while (entry := _ledger_entry(landing, event.filename)) is None:
                if time.monotonic() > deadline:
                    raise StreamError(f"{event.filename} was not ingested in {step_timeout} s")
                if liveness:
                    liveness()
                time.sleep(0.5)
            accepted = entry["status"] == "accepted"
            # accepted: ingest-landing, then monitor and retrain from `ctloop.batch.accepted`
            new = wait_settled(project, known, 3 if accepted else 1, quiet, step_timeout, liveness)
            outcome = "accepted" if accepted else "quarantined"
            step = StreamStep(
                event.filename, event.kind, outcome, entry.get("snapshot"), len(new), 0.0
            )
        known |= {str(r.id) for r in new}
        step.seconds = round(time.monotonic() - started, 2)
        steps.append(step)
        if on_step:
            on_step(index, step)
    return steps
