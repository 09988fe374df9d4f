"""A test hook for fault tests: `CTLOOP_FAULT_PAUSE=<point>` stops the process at that point.

The process writes `<point>` to the file `CTLOOP_FAULT_MARK` (when set) and to stderr, then
sleeps until it is killed, so a test can SIGKILL it exactly at a stage boundary. Unset (the
default), `pause` is one environment lookup. Points:

- `ingest.staged`: a batch staged, not committed;
- `lake.data`: a snapshot's data in place, its manifest (the commit mark) not yet written;
- `quarantine.copied`: a rejected file and its record in a temporary folder, not yet renamed;
- `train.logged`: the candidate's MLflow run logged, nothing registered;
- `register.created`: a version created (whole), its description not yet set;
- `promote.alias`: about to move an alias.
"""

from __future__ import annotations

import os
import sys
import time


def pause(point: str) -> None:
    """Stop here for good when `CTLOOP_FAULT_PAUSE` names this point (fault tests only)."""
    if os.environ.get("CTLOOP_FAULT_PAUSE") != point:
        return
    marker = os.environ.get("CTLOOP_FAULT_MARK")
    if marker:
        # written whole, then renamed: a test that sees the mark and kills at once must never
        # find it empty (open-then-write raced: the mark existed before it held the point)
        staging = f"{marker}.{os.getpid()}.tmp"
        with open(staging, "w") as handle:
            handle.write(point)
        os.replace(staging, marker)
    print(f"ctloop: paused at {point} (CTLOOP_FAULT_PAUSE)", file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)
