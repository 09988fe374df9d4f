"""Retraining rules: the one decision shared by the live deployments, the CLI and the demo."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from ctloop.config import TriggerConfig
from ctloop.home import Home
from ctloop.lake import Manifest

MANUAL = "manual"
SCHEDULE = "schedule"
NEW_DATA = "new_data"
DRIFT = "drift"
PERFORMANCE = "performance"
TRIGGERS = (MANUAL, SCHEDULE, NEW_DATA, DRIFT, PERFORMANCE)


@dataclass(frozen=True)
class PendingDrift:
    """Drift seen on unlabelled features; a retrain waits for labelled rows from `since` on."""

    since: str
    detected_at: str
    reasons: list[str]


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    trigger: str
    reason: str
    since: str | None = None


def rows_after(manifests: list[Manifest], since: str | None) -> int:
    """Labelled rows in snapshots whose data ends after `since` (all rows when None)."""
    return sum(m.rows for m in manifests if since is None or (m.time_max or "") > since)


def decide_retrain(
    manifests: list[Manifest],
    champion_data_end: str | None,
    has_champion: bool,
    pending: PendingDrift | None,
    rules: TriggerConfig,
) -> RetrainDecision:
    """Should new labelled data start a retrain, and with which trigger and reason?

    Args:
        manifests: every accepted snapshot.
        champion_data_end: the newest timestamp the champion was trained on.
        has_champion: whether a champion is registered.
        pending: drift detected by the monitor and not yet answered by a retrain.
        rules: thresholds from `triggers` in the config.
    """
    total = rows_after(manifests, None)
    if not has_champion:
        if total >= rules.bootstrap_rows:
            return RetrainDecision(
                True, NEW_DATA, f"no champion yet; {total} labelled rows >= {rules.bootstrap_rows}"
            )
        return RetrainDecision(
            False, NEW_DATA, f"waiting for {rules.bootstrap_rows} labelled rows (have {total})"
        )
    if pending is not None:
        after = rows_after(manifests, pending.since)
        if after >= rules.drift_min_rows:
            return RetrainDecision(
                True,
                DRIFT,
                f"drift since {pending.since[:10]} ({'; '.join(pending.reasons)}); "
                f"{after} labelled rows since then >= {rules.drift_min_rows}",
                since=pending.since,
            )
        return RetrainDecision(
            False,
            DRIFT,
            f"drift pending since {pending.since[:10]}: {after} of {rules.drift_min_rows} "
            "labelled rows arrived",
        )
    new = rows_after(manifests, champion_data_end)
    if new >= rules.min_new_rows:
        return RetrainDecision(
            True, NEW_DATA, f"{new} new labelled rows since the champion >= {rules.min_new_rows}"
        )
    return RetrainDecision(
        False, NEW_DATA, f"{new} new labelled rows since the champion < {rules.min_new_rows}"
    )


def _state_path(home: Home):
    return home.root / "triggers.json"


def load_pending(home: Home) -> PendingDrift | None:
    path = _state_path(home)
    if not path.exists():
        return None
    data = json.loads(path.read_text()).get("pending_drift")
    return PendingDrift(**data) if data else None


def save_pending(home: Home, pending: PendingDrift | None) -> None:
    path = _state_path(home)
    body = {
        "pending_drift": asdict(pending) if pending else None,
        "updated_at": datetime.now(UTC).isoformat(),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2))
    tmp.replace(path)
