"""The demo: a scripted stream of daily batches through the real flows, with a final table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefect import tags

from ctloop.config.settings import Config
from ctloop.data.demo import DemoScript, demo_stream, write_event
from ctloop.ingest import landing
from ctloop.loop.policy import current_decision
from ctloop.stores.home import home_of
from flows.ingest import ingest, ingest_one
from flows.monitor import monitor
from flows.retrain import RetrainRequest, retrain


@dataclass
class DemoRow:
    day: int
    file: str
    episode: str
    outcome: str
    why: str


def _after_labels(config: Config, rows: list[DemoRow], event) -> None:
    """After a labelled batch is accepted: the shared retrain rule decides, the demo obeys."""
    decision = current_decision(config)
    if not decision.retrain:
        return
    request = RetrainRequest(trigger=decision.trigger, reason=decision.reason, since=decision.since)
    with tags("demo", f"trigger:{decision.trigger}"):
        result = retrain(request, config)
    if result["promoted"]:
        outcome = f"retrain ({decision.trigger}) → v{result['version']} {result['semver']} promoted"
    else:
        outcome = f"retrain ({decision.trigger}) → not blessed"
    rows.append(
        DemoRow(event.arrival_day, "", event.episode, outcome, "; ".join(result["reasons"])[:300])
    )


def _landing_config(config: Config) -> Config:
    """The config the demo's landing scans use: files stay where they landed (`mark`), so the
    folder keeps the stream, and the ledger records each one for the landing watcher."""
    ingest_settings = config.ingest.model_copy(update={"done": "mark"})
    return config.model_copy(update={"ingest": ingest_settings})


def _monitor_row(event, path: str, config: Config) -> tuple[dict, DemoRow]:
    with tags("demo"):
        result = monitor(path, config, html_when="on_drift")
    outcome = "drift detected" if result["drift"] else "monitored: no drift"
    if result["reasons"] == ["no champion yet: nothing to compare against"]:
        outcome = "monitor skipped"
    why = "; ".join(result["reasons"])
    row = DemoRow(event.arrival_day, event.filename, event.episode, outcome, why)
    return {"status": "monitored", "path": path, "reasons": result["reasons"]}, row


def _ingest_row(event, path: str, config: Config) -> tuple[dict, DemoRow]:
    with tags("demo"):
        result = ingest([path], config)
    if result["quarantined"]:
        quarantined = result["quarantined"][0]
        blocking = [r["message"] for r in quarantined["reasons"] if r["severity"] == "block"]
        row = DemoRow(
            event.arrival_day, event.filename, event.episode, "quarantined", "; ".join(blocking)
        )
        return {"status": "quarantined", **quarantined}, row
    accepted = result["accepted"][0]
    warns = "; ".join(w["message"] for w in accepted["warnings"]) or "all checks passed"
    outcome = f"accepted {accepted['rows']} rows → {accepted['snapshot']}"
    row = DemoRow(event.arrival_day, event.filename, event.episode, outcome, warns)
    return {"status": "accepted", **accepted}, row


def run_demo(
    config: Config,
    script: DemoScript | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[DemoRow]:
    """Replay the demo stream: land each file, ingest or monitor it, retrain when a rule holds.

    Each file is taken from the landing folder through the landing watcher's own scan
    (`process_landing`), so its ledger lists every file of the stream and `ctloop up` on the
    same home ingests none of them again.
    """
    script = script or DemoScript()
    home = home_of(config).ensure()
    folder = landing.landing_folder(config, home)
    scan_config = _landing_config(config)
    events = list(demo_stream(script))
    rows: list[DemoRow] = []
    for index, event in enumerate(events):
        path = write_event(event, folder)
        if progress:
            progress(index, len(events), f"day {event.arrival_day}: {event.filename}")
        landed: list[tuple[str, DemoRow]] = []

        def take(found: Path, event=event, path=path, landed=landed) -> dict:
            if found != path:  # a file someone else dropped: what the watcher would do
                return ingest_one(str(found), config)
            take_one = _monitor_row if event.kind == "features" else _ingest_row
            outcome, row = take_one(event, str(path), config)
            landed.append((outcome["status"], row))
            return outcome

        landing.process_landing(folder, scan_config, take)
        rows.extend(row for _status, row in landed)
        if any(status == "accepted" for status, _row in landed):
            _after_labels(config, rows, event)
    if progress:
        progress(len(events), len(events), "done")
    return rows
