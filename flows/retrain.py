"""`retrain`: ingest → rules → window → split → tune → train → analyse → gates → record →
register → promote → publish. Wiring only: the work is in `tasks/`, the logic in `ctloop/`."""

from __future__ import annotations

import pandas as pd
from prefect import flow, get_run_logger
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Completed, State
from prefect.transactions import transaction
from pydantic import Field

from ctloop.config.settings import Config, load_config
from ctloop.gates.blessing import Blessing
from ctloop.gates.review import review_request, review_verdict
from ctloop.gates.verdict import Verdict, combine
from ctloop.lake import snapshots as lake
from ctloop.loop import triggers
from ctloop.loop.events import publish
from ctloop.loop.policy import claim_decision, scheduled_decision
from ctloop.loop.queue import WAITING, QueuedRun, cancel_message, covered_runs, covers_queue
from ctloop.loop.record import RunRecord, build_run_record, skipped_answer
from ctloop.loop.triggers import RetrainRequest
from ctloop.model.analyse import Analysis, slice_columns
from ctloop.model.train import Candidate, Split
from ctloop.model.tune import TuningResult
from ctloop.names import DEFAULT_PREFECT_UI
from ctloop.registry.lineage import run_link
from ctloop.registry.store import ModelRef, git_commit, open_registry
from ctloop.runlog import quiet_completed_tasks
from ctloop.stores.home import home_of
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
    choose_window,
    load_window,
    select_window,
    snapshot_digests,
    split_holdout,
    train_candidate,
)
from tasks.validate import check_split_parity

__all__ = ["RetrainRequest", "Review", "retrain"]


def _flow_run_page() -> str | None:
    """This run's page in the Prefect UI. A command's ephemeral API has no UI (Prefect's
    `flow_run.ui_url` would read `None/flow-runs/...` there): its runs are in the home's Prefect
    database, which `ctloop ui` serves at its default address, so the link points there."""
    from prefect.settings import PREFECT_UI_URL

    if not flow_run.id:
        return None
    base = PREFECT_UI_URL.value() or DEFAULT_PREFECT_UI
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run.id}"


def _run_name() -> str:
    request = flow_run.parameters.get("request") or {}
    trigger = request.get("trigger") if isinstance(request, dict) else request.trigger
    return f"retrain-{trigger or 'manual'}"


class Review(RunInput):
    """The reviewer's answer (a form in the Prefect UI)."""

    approve: bool = Field(default=False, description="promote this challenger")
    reason: str = Field(default="", description="why (recorded on the model run)")


def await_review(blessing: Blessing, trained_on: str, config: Config) -> Verdict:
    """Pause this run until a person approves or rejects it; a timeout leaves the champion."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    timeout = config.gates.review_timeout_seconds
    try:
        answer = pause_flow_run(
            wait_for_input=Review.with_initial_data(
                description=review_request(blessing, trained_on)
            ),
            timeout=timeout,
            poll_interval=min(5, timeout),
        )
    except FlowPauseTimeout:
        return review_verdict(None, timeout=timeout)
    return review_verdict(answer.approve, answer.reason)


def _logger():
    """The run's logger (its lines reach the Prefect UI); a plain one outside a flow run."""
    import logging

    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("ctloop.retrain")


def apply_rules(request: RetrainRequest, config: Config) -> tuple[RetrainRequest, State | None]:
    """A rule-checked run: the request as the trigger rules decided it, or the final state of a
    run they did not let train (Completed, named Skipped, the reason as its message). A
    scheduled run trains on what arrived whatever the rules say, and is skipped only when
    nothing arrived since the last retrain (`triggers.decide_scheduled`).

    The rules may answer another trigger than the event's (a batch arrives, a pending drift
    is now ready): the run is renamed after the trigger its version is registered with."""
    logger = _logger()
    if request.trigger == triggers.SCHEDULE and not request.check_rules:
        decision = scheduled_decision(config)  # skips only when there is nothing new
    elif not request.check_rules:
        logger.info("decision: train (%s, rules not checked): %s", request.trigger, request.reason)
        return request, None
    else:
        decision = claim_decision(config, claimant=flow_run.id or None)
        if covers_queue(decision):  # a run that trains keeps one queued until it has succeeded
            cancel_covered_runs(keep=1 if decision.retrain else 0)
    if not decision.retrain:
        logger.info("decision: skip (%s): %s", request.trigger, decision.reason)
        answer = skipped_answer(request.trigger, decision.reason)
        return request, Completed(name="Skipped", message=decision.reason, data=answer)
    answered = request.answering(decision)
    if request.trigger == triggers.SCHEDULE:  # the schedule's own reason, and what it found
        answered = request.model_copy(update={"reason": f"{request.reason}: {decision.reason}"})
    if answered.trigger != request.trigger:
        rename_run(f"retrain-{answered.trigger}")
    logger.info("decision: train (%s): %s", answered.trigger, answered.reason)
    return answered, None


def cancel_covered_runs(keep: int = 0) -> list[str]:
    """Cancel the queued rule-checked runs of this deployment this run's decision covers
    (`ctloop.loop.queue`): created before this run started (the API's clock on both sides),
    still waiting for the slot; `keep` of the newest stay. Returns the ids cancelled.

    An API error is logged, never raised: the run's own work does not depend on it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )
    from prefect.states import Cancelled

    if not flow_run.id:
        return []
    cancelled: list[str] = []
    try:
        with get_client(sync_client=True) as client:
            this = client.read_flow_run(flow_run.id)
            if this.deployment_id is None:
                return []  # not a deployment's run: nothing queues behind it
            waiting = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[this.deployment_id]),
                    state=FlowRunFilterState(name=FlowRunFilterStateName(any_=sorted(WAITING))),
                ),
                limit=200,
            )
            queued = [
                QueuedRun(str(r.id), r.created, r.state.name if r.state else "", r.parameters,
                          str(r.deployment_id) if r.deployment_id else None, r.name)
                for r in waiting if r.created is not None
            ]  # fmt: skip
            chosen = covered_runs(
                queued,
                this_run=str(this.id),
                deployment=str(this.deployment_id),
                decided_at=this.start_time or this.created,
                parameters=this.parameters,
                keep=keep,
            )
            message = cancel_message(this.name, str(this.id))
            for run in chosen:
                try:
                    client.set_flow_run_state(run.id, Cancelled(message=message))
                    cancelled.append(run.id)
                except Exception as exc:  # one run may have started meanwhile: the others still go
                    _logger().warning("could not cancel covered run %s: %s", run.name, exc)
    except Exception as exc:  # fewer queued runs is an economy: an API error must not fail the run
        _logger().warning("could not cancel the queued runs this decision covers: %s", exc)
    if cancelled:
        _logger().info("cancelled %d queued run(s) this decision covers", len(cancelled))
    return cancelled


def answer_request(request: RetrainRequest, trained_on: list[str], config: Config) -> None:
    """A finished retrain answers its trigger (`loop.triggers.answered`); a rule-checked one
    then cancels the run it kept queued in case it failed (its decision covered it)."""
    triggers.answered(home_of(config), request.trigger, trained_on)
    if request.check_rules:
        cancel_covered_runs()


def rename_run(name: str) -> None:
    """Rename this flow run (its name says the trigger it answers)."""
    from prefect.client.orchestration import get_client

    if not flow_run.id:
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=name)
    except Exception as exc:  # the name is for people: an API hiccup must not fail the run
        _logger().warning("could not rename the run to %s: %s", name, exc)


def log_outcome(record: RunRecord, run_id: str, version: int | None, config: Config) -> None:
    """The run's outcome in its Prefect logs: blessing, metrics and where its MLflow run is."""
    logger = _logger()
    verdict = f"blessed as {record.semver}" if record.blessed else "not blessed"
    where = f", version {version}" if version is not None else ""
    logger.info("blessing: %s%s: %s", verdict, where, "; ".join(record.reasons))
    metrics = record.summary.get("metrics") or {}
    champion = record.summary.get("champion_metrics") or {}
    shown = [
        f"{k} {v:.4g}" + (f" (champion {champion[k]:.4g})" if k in champion else "")
        for k, v in metrics.items()
    ]
    logger.info("holdout metrics: %s", ", ".join(shown))
    registry = open_registry(config)
    logger.info("MLflow: %s", run_link(registry.tracking_uri, registry.experiment_id, run_id))


def tune(
    train: pd.DataFrame, config: Config, champion: tuple[ModelRef, object] | None, label: str
) -> tuple[TuningResult | None, tuple[str | None, dict | None]]:
    """The tuning study when tuning is on (its shares of trials fan out, `flows/fanout.py`),
    and the family and parameters it chose ((None, None) without tuning)."""
    if not config.tuning.enabled:
        return None, (None, None)
    tuned = tune_study(train, config, champion[0] if champion else None, label)
    return tuned, (tuned.best_family, tuned.best_params)


def analyse(candidate: Candidate, split: Split, config: Config) -> Analysis:
    """The challenger on the holdout, with one `slice-metrics` task per slice column, and the
    leakage check (one-feature models fitted on the training part)."""
    features, holdout = (candidate.numeric, candidate.categorical), split.holdout
    columns = slice_columns(holdout, candidate.categorical, config)
    by_slice = evaluate_slices(candidate.pipeline, *features, holdout, columns, config)
    return analyse_challenger(candidate.pipeline, *features, holdout, config, by_slice, split.train)


def evaluate_champion(
    champion: tuple[ModelRef, object] | None, holdout: pd.DataFrame, config: Config
) -> tuple[dict[str, float] | None, dict | None]:
    """The champion's metrics on the holdout, and per gated slice column (None without one)."""
    if champion is None:
        return None, None
    ref, model = champion
    metrics = evaluate_model(model, ref.numeric, ref.categorical, holdout, config)
    by_slice = None
    if config.gates.slice_columns:
        by_slice = evaluate_slices(
            model, ref.numeric, ref.categorical, holdout, config.gates.slice_columns, config
        )
    return metrics, by_slice


def gate_candidate(
    parity: Verdict,
    analysis: Analysis,
    champion_metrics: dict[str, float] | None,
    champion_by_slice: dict | None,
    trained_on: str,
    config: Config,
) -> tuple[Blessing, Verdict]:
    """Split parity, the blessing against the champion, then (optional) a person: combined."""
    blessing = bless_candidate(
        analysis.metrics,
        champion_metrics,
        config.gates,
        analysis.slices,
        champion_by_slice,
        analysis.gaps_of(config.analysis.sensitive_columns),
        analysis.warnings,
    )
    verdict = combine(parity, blessing.verdict())
    if verdict.passed and config.gates.review_required:
        verdict = combine(verdict, await_review(blessing, trained_on, config))
    return blessing, verdict


def register_and_promote(
    record: RunRecord, run_id: str, model_uri: str, config: Config
) -> tuple[int | None, bool]:
    """Register a blessed run and move its alias, atomically; (version, promoted). The outcome
    goes to the run's logs.

    A refused run stays a run only: (None, False).
    """
    if not record.blessed:
        log_outcome(record, run_id, None, config)
        return None, False
    with transaction():
        ref = register_version(model_uri, run_id, record.version_tags, config)
        if config.gates.promote:
            promote(ref, config)
        else:
            mark_challenger(ref, config)
    log_outcome(record, run_id, ref.version, config)
    return ref.version, config.gates.promote


@flow(name="retrain", flow_run_name=_run_name, log_prints=True, on_running=[quiet_completed_tasks])
def retrain(
    request: RetrainRequest | None = None,
    config: Config | None = None,
    paths: list[str] | None = None,
) -> dict | State:
    """Train a challenger on the newest window, gate it against the champion, promote if blessed.

    Args:
        request: trigger and reason (and the drift onset for a drift retrain).
        config: the project config (defaults to `ctloop.yaml` and the environment).
        paths: landing files to ingest first.
    """
    request, config = request or RetrainRequest(), config or load_config()
    # -- ingest: landing files first, when given
    ingested = ingest(paths, config) if paths else None

    # -- check rules: an event-triggered run trains only when they hold (else: state Skipped)
    request, skipped = apply_rules(request, config)
    if skipped is not None:
        return skipped

    # -- window: the rule's, or a better one on the newest rows; its digests, its rows
    window = choose_window(select_window(config, request.since), config, request.since)
    digests = snapshot_digests(ids := list(window.ids), config)
    frame = load_window(ids, config)

    # -- split: a recent holdout that tuning never sees; the label parity of the two parts
    split = split_holdout(frame, config)
    parity = check_split_parity(split.train, split.holdout, config)
    champion = load_champion(config)

    # -- tune (optional): folds inside the training part, warm-started from the champion
    tuned, best = tune(split.train, config, champion, request.trigger)

    # -- train
    candidate, system_samples = train_candidate(split.train, config, *best)

    # -- analyse: challenger and champion on the same rows, overall and per slice column
    analysis = analyse(candidate, split, config)
    champion_metrics, champion_by_slice = evaluate_champion(champion, split.holdout, config)

    # -- gates: split parity, the blessing against the champion, then (optional) a person
    trained_on = lake.window_span(lake.list_snapshots(home_of(config)), ids, len(frame))
    blessing, verdict = gate_candidate(
        parity, analysis, champion_metrics, champion_by_slice, trained_on, config
    )

    # -- record: the run with its lineage, analysis, plots and card, blessed or not
    record = build_run_record(
        request=request,
        config=config,
        candidate=candidate,
        split=split,
        rows=len(frame),
        analysis=analysis,
        blessing=blessing,
        decision=verdict,
        champion_metrics=champion_metrics,
        snapshots=ids,
        digests=digests,
        trained_on=trained_on,
        latest=open_registry(config).latest(),
        commit=git_commit(),
        flow_run_id=flow_run.id,
        tuned=tuned,
        system_samples=system_samples,
        flow_run_url=_flow_run_page(),
        window=window.reason,
    )
    publish_model_card(record.model_card)
    example = candidate.input_example(split.holdout)
    run_id, model_uri = log_candidate(record, candidate.pipeline, example, config)

    # -- register and promote (atomic), or keep the refusal on the run only
    version, promoted = register_and_promote(record, run_id, model_uri, config)

    # -- publish: the event; a drift or performance retrain answers the pending change
    publish(config, *record.event(version=version, promoted=promoted, run_id=run_id))
    answer_request(request, ids, config)
    return record.answer(version=version, promoted=promoted, run_id=run_id, ingested=ingested)
