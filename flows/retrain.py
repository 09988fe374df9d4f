"""`retrain`: window → split → train → analyse → bless → register → promote."""

from __future__ import annotations

import json
from typing import Literal

from prefect import flow
from prefect.runtime import flow_run
from prefect.transactions import transaction
from pydantic import BaseModel, Field

from ctloop import lake, triggers
from ctloop.config import Config, load_config
from ctloop.home import home_of
from ctloop.policy import claim_decision
from ctloop.registry import git_commit, next_semver, open_registry
from ctloop.reports import blessing_markdown
from ctloop.training import prepare_features
from flows.ingest import ingest
from tasks.bless import bless_candidate
from tasks.evaluate import evaluate_model
from tasks.register import load_champion, log_candidate, promote, register_version
from tasks.train import load_window, select_window, split_holdout, train_candidate


class RetrainRequest(BaseModel):
    """Why this retrain runs; recorded on the Prefect run, the MLflow run and the version."""

    trigger: Literal["manual", "schedule", "new_data", "drift", "performance"] = "manual"
    reason: str = "manual run"
    since: str | None = Field(
        default=None, description="train only on data after this ISO time (drift onset)"
    )
    check_rules: bool = Field(
        default=False,
        description="event-triggered runs: retrain only when the trigger rules in the config hold",
    )


def _run_name() -> str:
    request = flow_run.parameters.get("request") or {}
    trigger = request.get("trigger") if isinstance(request, dict) else request.trigger
    return f"retrain-{trigger or 'manual'}"


def _trained_on(manifests: dict, ids: list[str], rows: int) -> str:
    starts = [manifests[i].time_min for i in ids if manifests[i].time_min]
    ends = [manifests[i].time_max for i in ids if manifests[i].time_max]
    span = f"{min(starts)[:10]}..{max(ends)[:10]} " if starts and ends else ""
    return f"{span}({len(ids)} snapshots, {rows} rows)"


@flow(name="retrain", flow_run_name=_run_name, log_prints=True)
def retrain(
    request: RetrainRequest | None = None,
    config: Config | None = None,
    paths: list[str] | None = None,
) -> dict:
    """Train a challenger on the newest window, gate it against the champion, promote if blessed.

    Args:
        request: trigger and reason (and the drift onset for a drift retrain).
        config: the project config (defaults to `ctloop.yaml` and the environment).
        paths: landing files to ingest first.
    """
    request = request or RetrainRequest()
    config = config or load_config()
    ingested = ingest(paths, config) if paths else None
    if request.check_rules:
        decision = claim_decision(config)
        if not decision.retrain:
            print(f"skipped: {decision.reason}")
            return {
                "skipped": True,
                "blessed": False,
                "promoted": False,
                "version": None,
                "semver": None,
                "reasons": [decision.reason],
                "trigger": request.trigger,
            }
        request = request.model_copy(
            update={"trigger": decision.trigger, "reason": decision.reason, "since": decision.since}
        )

    # -- data: the window, and a recent holdout that tuning never sees
    ids = select_window(config, request.since)
    frame = load_window(ids, config)
    split = split_holdout(frame, config)

    # -- train
    candidate = train_candidate(split.train, config)

    # -- analyse: challenger and champion on the same rows
    challenger_metrics = evaluate_model(
        candidate.pipeline, candidate.numeric, candidate.categorical, split.holdout, config
    )
    champion = load_champion(config)
    champion_metrics = None
    if champion is not None:
        ref, model = champion
        numeric = [n for n, kind in ref.signature if kind == "numeric"]
        categorical = [n for n, kind in ref.signature if kind == "categorical"]
        champion_metrics = evaluate_model(model, numeric, categorical, split.holdout, config)

    # -- bless
    blessing = bless_candidate(challenger_metrics, champion_metrics, config.gates)

    # -- register and promote (atomic), or record the refusal
    registry = open_registry(config)
    signature = [[n, "numeric"] for n in candidate.numeric] + [
        [n, "categorical"] for n in candidate.categorical
    ]
    semver = next_semver(registry.latest(), signature) if blessing.blessed else None
    manifests = {m.snapshot: m for m in lake.list_snapshots(home_of(config))}
    tags = {
        "ctloop.trigger": request.trigger,
        "ctloop.reason": request.reason,
        "ctloop.snapshots": ",".join(ids),
        "ctloop.git_commit": git_commit(),
        "ctloop.signature": json.dumps(signature),
        "ctloop.trained_on": _trained_on(manifests, ids, len(frame)),
        "ctloop.split": split.strategy,
        "ctloop.blessed": str(blessing.blessed).lower(),
        "ctloop.blessing": "; ".join(blessing.reasons),
        "ctloop.prefect_flow_run": str(flow_run.id or ""),
    }
    metrics = {f"holdout_{k}": v for k, v in challenger_metrics.items()}
    if champion_metrics:
        metrics.update({f"champion_holdout_{k}": v for k, v in champion_metrics.items()})
    run_id, model_uri = log_candidate(
        candidate.pipeline,
        prepare_features(split.holdout.head(50), candidate.numeric, candidate.categorical),
        {**candidate.params, "train_rows": candidate.train_rows, "since": request.since},
        metrics,
        tags,
        {
            "blessing.json": json.dumps(blessing.as_dict(), indent=2),
            "blessing.md": blessing_markdown(blessing, None),
        },
        config,
        f"{request.trigger}-{semver or 'refused'}",
    )
    version = None
    if blessing.blessed:
        with transaction():
            ref = register_version(model_uri, run_id, {**tags, "semver": semver}, config)
            promote(ref, config)
        version = ref.version
    if request.trigger == "drift":
        triggers.save_pending(home_of(config), None)  # answered; the monitor re-raises it if needed
    return {
        "version": version,
        "semver": semver,
        "blessed": blessing.blessed,
        "reasons": list(blessing.reasons),
        "promoted": version is not None,
        "trigger": request.trigger,
        "reason": request.reason,
        "run_id": run_id,
        "snapshots": ids,
        "metrics": challenger_metrics,
        "champion_metrics": champion_metrics,
        "ingested": ingested,
    }
