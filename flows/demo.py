"""The demo: a scripted stream of daily batches through the real flows, with a final table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prefect import tags

from ctloop.config.settings import Config
from ctloop.data.demo import DemoScript, demo_stream, write_event
from ctloop.loop.policy import current_decision
from ctloop.stores.home import home_of
from flows.ingest import ingest
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


def run_demo(
    config: Config,
    script: DemoScript | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[DemoRow]:
    """Replay the demo stream: land each file, ingest or monitor it, retrain when a rule holds."""
    script = script or DemoScript()
    home = home_of(config).ensure()
    landing = home.root / "landing"
    events = list(demo_stream(script))
    rows: list[DemoRow] = []
    for index, event in enumerate(events):
        path = str(write_event(event, landing))
        if progress:
            progress(index, len(events), f"day {event.arrival_day}: {event.filename}")
        if event.kind == "features":
            with tags("demo"):
                result = monitor(path, config, html_when="on_drift")
            outcome = "drift detected" if result["drift"] else "monitored: no drift"
            if result["reasons"] == ["no champion yet: nothing to compare against"]:
                outcome = "monitor skipped"
            rows.append(
                DemoRow(
                    event.arrival_day,
                    event.filename,
                    event.episode,
                    outcome,
                    "; ".join(result["reasons"]),
                )
            )
            continue
        with tags("demo"):
            result = ingest([path], config)
        if result["quarantined"]:
            reasons = result["quarantined"][0]["reasons"]
            blocking = [r["message"] for r in reasons if r["severity"] == "block"]
            rows.append(
                DemoRow(
                    event.arrival_day,
                    event.filename,
                    event.episode,
                    "quarantined",
                    "; ".join(blocking),
                )
            )
            continue
        accepted = result["accepted"][0]
        warns = "; ".join(w["message"] for w in accepted["warnings"]) or "all checks passed"
        rows.append(
            DemoRow(
                event.arrival_day,
                event.filename,
                event.episode,
                f"accepted {accepted['rows']} rows → {accepted['snapshot']}",
                warns,
            )
        )
        _after_labels(config, rows, event)
    if progress:
        progress(len(events), len(events), "done")
    return rows
