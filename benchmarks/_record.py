"""What every benchmark records beside its figures: the commit, the load, the results file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (empty where /proc is missing)."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def commit() -> str:
    """The checkout's short commit, or "unknown" outside git."""
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def machine() -> dict:
    """The fields that say where and when a figure was measured."""
    return {"commit": commit(), "loadavg": loadavg(), "cpus": os.cpu_count()}


def emit(result: dict, name: str, record: bool) -> None:
    """Print `result` as the last line; with `record`, also append it to results/NAME.jsonl."""
    line = json.dumps(result)
    if record:
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(RESULTS / f"{name}.jsonl", "a") as handle:
            handle.write(line + "\n")
    print(line)
