"""`retrain`: window → split → tune → train → analyse → bless → register → promote."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from typing import Literal

from prefect import flow
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.transactions import transaction
from pydantic import BaseModel, Field

from ctloop.config.home import home_of
from ctloop.config.settings import Config, load_config
from ctloop.gates.reports import blessing_markdown
from ctloop.lake import snapshots as lake
from ctloop.loop import triggers
from ctloop.loop.events import MODEL_CHALLENGER, MODEL_PROMOTED, MODEL_REFUSED, publish
from ctloop.loop.policy import claim_decision
from ctloop.model.analyse import model_card, slice_columns
from ctloop.model.train import prepare_features
from ctloop.registry.lineage import RECIPE_FILE, make_recipe
from ctloop.registry.store import git_commit, next_semver, open_registry
from flows.fanout import evaluate_slices, tune_study
from flows.ingest import ingest
from tasks.analyse import analyse_challenger, publish_model_card
from tasks.bless import bless_candidate
from tasks.evaluate import evaluate_model
from tasks.register import (
    load_champion,
    log_candidate,
    mark_challenger,
    promote,
    register_version,
)
from tasks.train import (
    load_window,
    select_window,
    snapshot_digests,
    split_holdout,
    train_candidate,
)
from tasks.validate import check_split_parity


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


class Review(RunInput):
    """The reviewer's answer (a form in the Prefect UI)."""

    approve: bool = Field(default=False, description="promote this challenger")
    reason: str = Field(default="", description="why (recorded on the model run)")


def await_review(blessing, trained_on: str, config: Config) -> dict:
    """Pause this run until a person approves or rejects it; a timeout leaves the champion."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    description = (
        "## Review the challenger before promotion\n\n"
        + blessing_markdown(blessing, None)
        + f"\n\nTrained on {trained_on}. The model card is in this run's artifacts."
    )
    timeout = config.gates.review_timeout_seconds
    try:
        answer = pause_flow_run(
            wait_for_input=Review.with_initial_data(description=description),
            timeout=timeout,
            poll_interval=min(5, timeout),
        )
    except FlowPauseTimeout:
        return {
            "approved": False,
            "verdict": "timeout",
            "reason": f"review timed out after {timeout} s: the champion stays",
        }
    if answer.approve:
        return {"approved": True, "verdict": "approved", "reason": answer.reason or "approved"}
    return {
        "approved": False,
        "verdict": "rejected",
        "reason": f"rejected in review: {answer.reason or 'no reason given'}",
    }


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
        decision = claim_decision(config, claimant=flow_run.id or None)
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
    digests = snapshot_digests(ids, config)
    frame = load_window(ids, config)
    split = split_holdout(frame, config)
    parity = check_split_parity(split.train, split.holdout, config)
    champion = load_champion(config)
    champion_ref = champion[0] if champion is not None else None

    # -- tune (optional): folds inside the training part, warm-started from the champion;
    #    shares of trials fan out as tasks (flows/fanout.py), all into one Optuna study
    tuned = None
    family = params = None
    if config.tuning.enabled:
        tuned = tune_study(split.train, config, champion_ref, request.trigger)
        family, params = tuned.best_family, tuned.best_params

    # -- train
    candidate, system_samples = train_candidate(split.train, config, family, params)

    # -- analyse: challenger and champion on the same rows, overall and per slice (one
    #    slice-metrics task per column, fanned out)
    challenger_by_slice = evaluate_slices(
        candidate.pipeline,
        candidate.numeric,
        candidate.categorical,
        split.holdout,
        slice_columns(split.holdout, candidate.categorical, config),
        config,
    )
    analysis = analyse_challenger(
        candidate.pipeline,
        candidate.numeric,
        candidate.categorical,
        split.holdout,
        config,
        challenger_by_slice,
    )
    challenger_metrics = analysis.metrics
    champion_metrics = champion_by_slice = None
    if champion is not None:
        ref, model = champion
        numeric = [n for n, kind in ref.signature if kind == "numeric"]
        categorical = [n for n, kind in ref.signature if kind == "categorical"]
        champion_metrics = evaluate_model(model, numeric, categorical, split.holdout, config)
        if config.gates.slice_columns:
            champion_by_slice = evaluate_slices(
                model, numeric, categorical, split.holdout, config.gates.slice_columns, config
            )
    sensitive = set(config.analysis.sensitive_columns)
    fairness_gaps = tuple(g for g in analysis.gaps if g.column in sensitive)

    # -- bless: every value threshold, and beat the champion (per slice where configured)
    blessing = bless_candidate(
        challenger_metrics,
        champion_metrics,
        config.gates,
        analysis.slices,
        champion_by_slice,
        fairness_gaps,
    )

    if parity is not None and parity.severity == "block":
        failed = () if blessing.blessed else blessing.reasons  # drop the passed checks
        blessing = dataclasses.replace(blessing, blessed=False, reasons=(parity.message, *failed))

    # -- human review (optional): pause until approved in the Prefect UI, before anything is made
    manifests = {m.snapshot: m for m in lake.list_snapshots(home_of(config))}
    trained_on = _trained_on(manifests, ids, len(frame))
    review = None
    if blessing.blessed and config.gates.review_required:
        review = await_review(blessing, trained_on, config)
        if not review["approved"]:
            blessing = dataclasses.replace(blessing, blessed=False, reasons=(review["reason"],))

    # -- record: the run with its lineage, analysis, plots and card, blessed or not
    registry = open_registry(config)
    signature = candidate.signature
    semver = next_semver(registry.latest(), signature) if blessing.blessed else None
    commit = git_commit()
    recipe = make_recipe(
        candidate,
        config,
        ids,
        digests,
        commit,
        split.strategy,
        len(frame),
        challenger_metrics,
        tuned.summary() if tuned else None,
    )
    card = model_card(
        analysis,
        project=config.project,
        family=candidate.family,
        params=candidate.params,
        trained_on=trained_on,
        snapshots=ids,
        train_rows=candidate.train_rows,
        holdout_rows=len(split.holdout),
        split=split.strategy,
        config=config,
        blessing_reasons=list(blessing.reasons),
        blessed=blessing.blessed,
        semver=semver,
        dp_epsilon=candidate.dp_epsilon,
    )
    publish_model_card(card)
    tags = {
        "ctloop.trigger": request.trigger,
        "ctloop.reason": request.reason,
        "ctloop.snapshots": ",".join(ids),
        "ctloop.snapshot_digests": json.dumps({i: d[:16] for i, d in digests.items()}),
        "ctloop.git_commit": commit,
        "ctloop.signature": json.dumps(signature),
        "ctloop.trained_on": trained_on,
        "ctloop.split": split.strategy,
        "ctloop.family": candidate.family,
        "ctloop.params": json.dumps(candidate.params, default=str),
        "ctloop.recipe_params": json.dumps(candidate.recipe_params, default=str),
        "ctloop.blessed": str(blessing.blessed).lower(),
        "ctloop.blessing": "; ".join(blessing.reasons),
        "ctloop.prefect_flow_run": str(flow_run.id or ""),
    }
    if review is not None:
        tags["ctloop.review"] = review["verdict"]
        tags["ctloop.review_reason"] = review["reason"]
    if parity is not None:
        tags["ctloop.split_warning"] = parity.message
    if candidate.dp_epsilon is not None:
        tags["ctloop.dp_epsilon"] = str(candidate.dp_epsilon)
    if tuned is not None:
        tags["ctloop.tuning_study"] = tuned.study_name
    metrics = {f"holdout_{k}": v for k, v in challenger_metrics.items()}
    if champion_metrics:
        metrics.update({f"champion_holdout_{k}": v for k, v in champion_metrics.items()})
    metrics.update({f"importance_{k}": v for k, v in analysis.importances.items()})
    metrics.update({f"slice_gap_{g.column}": g.gap for g in analysis.gaps})
    if tuned is not None:
        metrics["tuning_best_cv_score"] = tuned.best_value
        metrics.update({f"param_importance_{k}": v for k, v in tuned.importances.items()})
    artifacts = {
        "blessing.json": json.dumps(blessing.as_dict(), indent=2, default=str),
        "blessing.md": blessing_markdown(blessing, semver),
        "model_card.md": card,
        "analysis.json": json.dumps(analysis.as_dict(), indent=2, default=str),
        RECIPE_FILE: recipe.to_json(),
        "config.json": config.model_dump_json(indent=2),
    }
    if tuned is not None:
        artifacts["tuning.json"] = json.dumps(tuned.summary(), indent=2, default=str)
    run_id, model_uri = log_candidate(
        candidate.pipeline,
        prepare_features(split.holdout.head(50), candidate.numeric, candidate.categorical),
        {**candidate.params, "train_rows": candidate.train_rows, "since": request.since},
        metrics,
        tags,
        artifacts,
        config,
        f"{request.trigger}-{semver or 'refused'}",
        analysis.plots,
        system_samples,
        [asdict(t) for t in tuned.trials] if tuned else None,
        ids,
    )

    # -- register and move the alias (atomic), or keep the refusal on the run only
    version = None
    promoted = False
    if blessing.blessed:
        with transaction():
            ref = register_version(model_uri, run_id, {**tags, "semver": semver}, config)
            if config.gates.promote:
                promote(ref, config)
                promoted = True
            else:
                mark_challenger(ref, config)
        version = ref.version
    publish(
        config,
        MODEL_PROMOTED if promoted else MODEL_CHALLENGER if blessing.blessed else MODEL_REFUSED,
        f"ctloop.model.{config.registry_name}",
        {
            "reason": "; ".join(blessing.reasons),
            "version": version,
            "semver": semver,
            "blessed": blessing.blessed,
            "trigger": request.trigger,
            "run_id": run_id,
        },
    )
    if request.trigger in ("drift", "performance"):
        triggers.save_pending(home_of(config), None)  # answered; the monitor re-raises it if needed
    return {
        "version": version,
        "semver": semver,
        "blessed": blessing.blessed,
        "reasons": list(blessing.reasons),
        "promoted": promoted,
        "trigger": request.trigger,
        "reason": request.reason,
        "run_id": run_id,
        "snapshots": ids,
        "metrics": challenger_metrics,
        "champion_metrics": champion_metrics,
        "family": candidate.family,
        "params": candidate.recipe_params,
        "tuning": tuned.summary() if tuned else None,
        "gaps": [{"column": g.column, "gap": g.gap} for g in analysis.gaps],
        "ingested": ingested,
    }
