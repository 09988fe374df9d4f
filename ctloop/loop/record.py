"""The run record: what a retrain writes to its MLflow run and answers, built from values only.

`build_run_record` takes what the retrain flow has at the end of its gates (the request, the
candidate, the split, the analysis, the tuning result, the blessing and the decision of all
gates, the champion's metrics, the window's lineage) and returns one frozen `RunRecord`. One
task logs it (`tasks/register.py:log_candidate`); nothing here touches MLflow or disk.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ctloop.config.settings import Config
from ctloop.gates.blessing import Blessing
from ctloop.gates.reports import blessing_markdown
from ctloop.gates.verdict import Verdict
from ctloop.loop.triggers import RetrainRequest
from ctloop.model.analyse import Analysis, model_card
from ctloop.model.train import Candidate, Split
from ctloop.model.tune import TuningResult
from ctloop.names import (
    MODEL_CHALLENGER,
    MODEL_PROMOTED,
    MODEL_REFUSED,
    TAG_BLESSED,
    TAG_BLESSING,
    TAG_DP_EPSILON,
    TAG_FAMILY,
    TAG_GIT_COMMIT,
    TAG_NOTE,
    TAG_PARAMS,
    TAG_PREFECT_FLOW_RUN,
    TAG_PREFECT_FLOW_RUN_URL,
    TAG_REASON,
    TAG_RECIPE_PARAMS,
    TAG_REVIEW,
    TAG_REVIEW_REASON,
    TAG_SEMVER,
    TAG_SIGNATURE,
    TAG_SNAPSHOT_DIGESTS,
    TAG_SNAPSHOTS,
    TAG_SPLIT,
    TAG_SPLIT_WARNING,
    TAG_TRAINED_ON,
    TAG_TRIGGER,
    TAG_TUNING_STUDY,
    TAG_WINDOW,
)
from ctloop.registry.lineage import RECIPE_FILE, describe_run, make_recipe
from ctloop.registry.store import ModelRef, next_semver


@dataclass(frozen=True)
class RunRecord:
    """Everything one retrain records on its MLflow run (and its version, when blessed).

    Attributes:
        run_name: `<trigger>-<semver>`, or `<trigger>-refused`.
        tags: `ctloop.*` tags (keys in `ctloop.names`): trigger, lineage, decision, review.
        params: the model's parameters, the training rows and the data onset.
        metrics: holdout metrics of challenger and champion, importances, slice gaps, tuning.
        artifacts: file name -> text (blessing, model card, analysis, recipe, config, tuning).
        model_card: the markdown model card (also in `artifacts`).
        semver: the version it is registered as, None for a refusal.
        decision: the verdict of all the gates together.
        window: the snapshot ids it was trained on (the run's dataset input).
        images: plot name -> PNG bytes.
        histories: CPU and memory samples taken while fitting.
        trials: the tuning trials (logged as nested runs), None without tuning.
        summary: the flow's answer without what registering adds (see `answer`).
        resource: the resource id of the run's events (`ctloop.model.<registered name>`).
    """

    run_name: str
    tags: dict[str, str]
    params: dict[str, Any]
    metrics: dict[str, float]
    artifacts: dict[str, str]
    model_card: str
    semver: str | None
    decision: Verdict
    window: tuple[str, ...]
    images: dict[str, bytes] = field(default_factory=dict, repr=False)
    histories: list = field(default_factory=list, repr=False)
    trials: list[dict[str, Any]] | None = field(default=None, repr=False)
    summary: dict[str, Any] = field(default_factory=dict, repr=False)
    resource: str = ""

    @property
    def blessed(self) -> bool:
        return self.decision.passed

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.decision.reasons

    @property
    def version_tags(self) -> dict[str, str]:
        """The tags of the registered version: the run's, and the semantic version."""
        return {**self.tags, TAG_SEMVER: self.semver}

    def event(
        self, *, version: int | None, promoted: bool, run_id: str
    ) -> tuple[str, str, dict[str, Any]]:
        """The event this run ends with (promoted, blessed as challenger, or refused), as
        (event name, resource id, payload) for `ctloop.loop.events.publish`."""
        name = MODEL_PROMOTED if promoted else MODEL_CHALLENGER if self.blessed else MODEL_REFUSED
        payload = {
            "reason": "; ".join(self.reasons),
            "version": version,
            "semver": self.semver,
            "blessed": self.blessed,
            "trigger": self.summary.get("trigger"),
            "run_id": run_id,
        }
        return name, self.resource, payload

    def answer(
        self, *, version: int | None, promoted: bool, run_id: str, ingested: Any = None
    ) -> dict[str, Any]:
        """The flow's answer: the summary with the registry's part filled in."""
        return {
            **self.summary,
            "version": version,
            "promoted": promoted,
            "run_id": run_id,
            "ingested": ingested,
        }


def skipped_answer(trigger: str, reason: str) -> dict[str, Any]:
    """The answer of a rule-checked run that the trigger rules did not let train."""
    return {
        "skipped": True,
        "blessed": False,
        "promoted": False,
        "version": None,
        "semver": None,
        "reasons": [reason],
        "trigger": trigger,
    }


def _tags(
    request: RetrainRequest,
    candidate: Candidate,
    split: Split,
    decision: Verdict,
    snapshots: list[str],
    digests: dict[str, str],
    trained_on: str,
    commit: str,
    flow_run_id: str | None,
    tuned: TuningResult | None,
) -> dict[str, str]:
    tags = {
        TAG_TRIGGER: request.trigger,
        TAG_REASON: request.reason,
        TAG_SNAPSHOTS: ",".join(snapshots),
        TAG_SNAPSHOT_DIGESTS: json.dumps({i: d[:16] for i, d in digests.items()}),
        TAG_GIT_COMMIT: commit,
        TAG_SIGNATURE: json.dumps(candidate.signature),
        TAG_TRAINED_ON: trained_on,
        TAG_SPLIT: split.strategy,
        TAG_FAMILY: candidate.family,
        TAG_PARAMS: json.dumps(candidate.params, default=str),
        TAG_RECIPE_PARAMS: json.dumps(candidate.recipe_params, default=str),
        TAG_BLESSED: str(decision.passed).lower(),
        TAG_BLESSING: "; ".join(decision.reasons),
        TAG_PREFECT_FLOW_RUN: str(flow_run_id or ""),
    }
    review = decision.part("review")
    if review is not None:
        tags[TAG_REVIEW] = review.details["answer"]
        tags[TAG_REVIEW_REASON] = review.details["reason"]
    parity = decision.part("split_parity")
    if parity is not None and not parity.passed:
        tags[TAG_SPLIT_WARNING] = "; ".join(parity.reasons)
    if candidate.dp_epsilon is not None:
        tags[TAG_DP_EPSILON] = str(candidate.dp_epsilon)
    if tuned is not None:
        tags[TAG_TUNING_STUDY] = tuned.study_name
    return tags


def _metrics(
    analysis: Analysis, champion_metrics: dict[str, float] | None, tuned: TuningResult | None
) -> dict[str, float]:
    metrics = {f"holdout_{k}": v for k, v in analysis.metrics.items()}
    if champion_metrics:
        metrics.update({f"champion_holdout_{k}": v for k, v in champion_metrics.items()})
    metrics.update({f"importance_{k}": v for k, v in analysis.importances.items()})
    metrics.update({f"slice_gap_{g.column}": g.gap for g in analysis.gaps})
    if tuned is not None:
        metrics["tuning_best_cv_score"] = tuned.best_value
        metrics.update({f"param_importance_{k}": v for k, v in tuned.importances.items()})
    return metrics


def _summary(
    request: RetrainRequest,
    candidate: Candidate,
    analysis: Analysis,
    decision: Verdict,
    champion_metrics: dict[str, float] | None,
    snapshots: list[str],
    semver: str | None,
    tuning: dict | None,
) -> dict[str, Any]:
    """The flow's answer before registration (version, run id and promotion come later)."""
    return {
        "version": None,
        "semver": semver,
        "blessed": decision.passed,
        "reasons": list(decision.reasons),
        "promoted": False,
        "trigger": request.trigger,
        "reason": request.reason,
        "run_id": None,
        "snapshots": list(snapshots),
        "metrics": analysis.metrics,
        "champion_metrics": champion_metrics,
        "family": candidate.family,
        "params": candidate.recipe_params,
        "tuning": tuning,
        "gaps": [{"column": g.column, "gap": g.gap} for g in analysis.gaps],
        "ingested": None,
    }


def _card(
    analysis: Analysis,
    config: Config,
    candidate: Candidate,
    split: Split,
    snapshots: list[str],
    trained_on: str,
    decision: Verdict,
    semver: str | None,
) -> str:
    return model_card(
        analysis,
        project=config.project,
        family=candidate.family,
        params=candidate.params,
        trained_on=trained_on,
        snapshots=snapshots,
        train_rows=candidate.train_rows,
        holdout_rows=len(split.holdout),
        split=split.strategy,
        config=config,
        blessing_reasons=list(decision.reasons),
        blessed=decision.passed,
        semver=semver,
        dp_epsilon=candidate.dp_epsilon,
    )


def _artifacts(
    config: Config,
    blessing: Blessing,
    decision: Verdict,
    analysis: Analysis,
    card: str,
    recipe: str,
    semver: str | None,
) -> dict[str, str]:
    return {
        "blessing.json": json.dumps(blessing.as_dict(decision), indent=2, default=str),
        "blessing.md": blessing_markdown(blessing, semver, decision),
        "model_card.md": card,
        "analysis.json": json.dumps(analysis.as_dict(), indent=2, default=str),
        RECIPE_FILE: recipe,
        "config.json": config.model_dump_json(indent=2),
    }


def build_run_record(
    *,
    request: RetrainRequest,
    config: Config,
    candidate: Candidate,
    split: Split,
    rows: int,
    analysis: Analysis,
    blessing: Blessing,
    decision: Verdict,
    champion_metrics: dict[str, float] | None,
    snapshots: list[str],
    digests: dict[str, str],
    trained_on: str,
    latest: ModelRef | None,
    commit: str,
    flow_run_id: str | None = None,
    tuned: TuningResult | None = None,
    system_samples: list | None = None,
    flow_run_url: str | None = None,
    window: str | None = None,
) -> RunRecord:
    """The record of one retrain, from the values its stages produced.

    Args:
        request: trigger, reason and data onset of the run.
        config: the project config (recorded as `config.json`).
        candidate: the fitted challenger.
        split: the train part and the holdout (its strategy is recorded).
        rows: the rows of the whole window.
        analysis: the challenger's analysis on the holdout.
        blessing: the blessing gate's report (the metrics it compared).
        decision: the verdict of all the gates together (`ctloop.gates.verdict.combine`).
        champion_metrics: the champion's metrics on the same holdout, None without a champion.
        snapshots: the snapshot ids of the window.
        digests: snapshot id -> sha256.
        trained_on: the window as a person reads it (`lake.window_span`).
        latest: the newest registered version, from which the semantic version follows.
        commit: the code's git commit.
        flow_run_id: the Prefect flow run, when there is one.
        tuned: the tuning study's result, None when tuning is off.
        system_samples: CPU and memory samples taken while fitting.
        flow_run_url: the Prefect flow run's page (tagged, and linked from the description).
        window: why this window (`ctloop.loop.window.WindowChoice.reason`), tagged.
    """
    semver = next_semver(latest, candidate.signature) if decision.passed else None
    tuning = tuned.summary() if tuned else None
    recipe = make_recipe(
        candidate,
        config,
        snapshots,
        digests,
        commit,
        split.strategy,
        rows,
        analysis.metrics,
        tuning,
    )
    card = _card(analysis, config, candidate, split, snapshots, trained_on, decision, semver)
    artifacts = _artifacts(config, blessing, decision, analysis, card, recipe.to_json(), semver)
    if tuned is not None:
        artifacts["tuning.json"] = json.dumps(tuning, indent=2, default=str)
    tags = _tags(
        request,
        candidate,
        split,
        decision,
        snapshots,
        digests,
        trained_on,
        commit,
        flow_run_id,
        tuned,
    )
    tags[TAG_NOTE] = describe_run(
        request.trigger,
        request.reason,
        decision.passed,
        decision.reasons,
        semver,
        flow_run_url,
        str(flow_run_id) if flow_run_id else None,
    )
    if flow_run_url:
        tags[TAG_PREFECT_FLOW_RUN_URL] = flow_run_url
    if window:
        tags[TAG_WINDOW] = window
    return RunRecord(
        run_name=f"{request.trigger}-{semver or 'refused'}",
        tags=tags,
        params={**candidate.params, "train_rows": candidate.train_rows, "since": request.since},
        metrics=_metrics(analysis, champion_metrics, tuned),
        artifacts=artifacts,
        model_card=card,
        semver=semver,
        decision=decision,
        window=tuple(snapshots),
        images=analysis.plots,
        histories=list(system_samples or []),
        trials=[asdict(t) for t in tuned.trials] if tuned else None,
        summary=_summary(
            request, candidate, analysis, decision, champion_metrics, snapshots, semver, tuning
        ),
        resource=f"ctloop.model.{config.registry_name}",
    )
