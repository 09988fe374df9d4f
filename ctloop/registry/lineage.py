"""Lineage: which data, code and parameters made a model version, and rebuilding it from that."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from ctloop.config.settings import Config
from ctloop.errors import InputError
from ctloop.model.evaluate import evaluate_with_spread
from ctloop.model.train import Candidate, prepare_features, split_holdout, train_candidate
from ctloop.names import TAG_BLESSED, TAG_BLESSING, TAG_GIT_COMMIT, TAG_SPLIT

RECIPE_FILE = "lineage.json"
VERSION_HELP = "a version: 3, v3, a semver such as 1.2.0, or an alias (champion, challenger)"
_NUMBER = re.compile(r"[vV]?(\d+)")
_SEMVER = re.compile(r"[vV]?(\d+\.\d+\.\d+)")
_ALIAS = re.compile(r"[A-Za-z][\w-]*")


def resolve_version(registry: Any, text: str) -> int:
    """The version number a person means by `3`, `v3`, `1.2.0` or an alias (`champion`).

    Args:
        registry: anything with `version(n)`, `versions()` and `by_alias(name)` (the MLflow
            registry or its read-only view).

    Raises:
        InputError: not a version, or no such version / semver / alias in the registry.
    """
    raw = text.strip()
    if number := _NUMBER.fullmatch(raw):
        version = int(number[1])
        if registry.version(version) is None:
            known = ", ".join(f"v{r.version}" for r in registry.versions()) or "none yet"
            raise InputError(f"version {raw}: no such version (registered: {known})")
        return version
    if semver := _SEMVER.fullmatch(raw):
        found = [r.version for r in registry.versions() if r.semver == semver[1]]
        if not found:
            known = ", ".join(r.semver or f"v{r.version}" for r in registry.versions())
            raise InputError(f"version {raw}: no version has this semver ({known or 'none yet'})")
        return found[-1]
    if _ALIAS.fullmatch(raw):
        ref = registry.by_alias(raw.lower())
        if ref is None:
            raise InputError(f"version {raw}: no version has the alias {raw.lower()!r}")
        return ref.version
    raise InputError(f"version {raw!r}: not a version ({VERSION_HELP})")


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """Where a person finds an MLflow run: its page on a tracking server, else the run id and
    the store (the embedded profile's SQLite file has no page until `ctloop ui` serves it)."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"run {run_id} in {tracking_uri} (`ctloop ui` serves it)"


def describe_run(
    trigger: str,
    reason: str,
    blessed: bool,
    reasons: list[str] | tuple[str, ...],
    semver: str | None,
    flow_run_url: str | None = None,
    flow_run_id: str | None = None,
) -> str:
    """The markdown description of a retrain's MLflow run and model version: trigger, reason,
    blessing and where its Prefect run is."""
    verdict = f"blessed as {semver}" if blessed else "not blessed"
    lines = [f"**{trigger}** retrain: {reason}", "", f"**{verdict}**:"]
    lines += [f"- {r}" for r in reasons]
    if flow_run_url:
        lines += ["", f"Prefect flow run: [{flow_run_id or flow_run_url}]({flow_run_url})"]
    elif flow_run_id:
        lines += ["", f"Prefect flow run: {flow_run_id}"]
    return "\n".join(lines)


@dataclass(frozen=True)
class Recipe:
    """Everything needed to fit a version again: data, code, configuration and parameters."""

    snapshots: list[str]
    digests: dict[str, str]
    git_commit: str
    family: str
    params: dict[str, Any]
    seed: int
    dataset: dict[str, Any]
    training: dict[str, Any]
    split: str
    rows: int
    tuning: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def config(self, base: Config) -> Config:
        """The base config with the dataset and training settings this version was made with."""
        data = base.model_dump(mode="json")
        data["dataset"] = dict(self.dataset)
        training = {**data["training"], **self.training}
        training.update(family=self.family, params=self.params, seed=self.seed)
        data["training"] = training
        return Config.model_validate(data)


def make_recipe(
    candidate: Candidate,
    config: Config,
    snapshots: list[str],
    digests: dict[str, str],
    git_commit: str,
    split: str,
    rows: int,
    metrics: dict[str, float],
    tuning: dict[str, Any] | None = None,
) -> Recipe:
    """The recipe of a freshly trained candidate (recorded on its run and version)."""
    training = config.training.model_dump(mode="json")
    kept = {k: training[k] for k in ("holdout_fraction", "privacy", "window_days", "max_rows")}
    return Recipe(
        snapshots=list(snapshots),
        digests=dict(digests),
        git_commit=git_commit,
        family=candidate.family,
        params=dict(candidate.recipe_params),
        seed=config.training.seed,
        dataset=config.dataset.model_dump(mode="json"),
        training=kept,
        split=split,
        rows=rows,
        tuning=tuning,
        metrics=dict(metrics),
    )


@dataclass(frozen=True)
class Rebuild:
    """A version fitted again, with its holdout metrics next to the recorded ones."""

    candidate: Candidate
    metrics: dict[str, float]
    recorded: dict[str, float]
    split: str

    @property
    def differences(self) -> dict[str, tuple[float | None, float | None]]:
        """Metrics that differ from the recorded ones (beyond float noise of 1e-9)."""
        out = {}
        for name in sorted(set(self.metrics) | set(self.recorded)):
            a, b = self.metrics.get(name), self.recorded.get(name)
            if a is None or b is None or abs(a - b) > 1e-9:
                out[name] = (a, b)
        return out

    @property
    def identical(self) -> bool:
        return not self.differences


def check_digests(recipe: Recipe, current: dict[str, str]) -> None:
    """The snapshots must still be the bytes the version learned from.

    Raises:
        InputError: a snapshot is missing from the lake or its digest changed.
    """
    for snapshot in recipe.snapshots:
        have, want = current.get(snapshot), recipe.digests.get(snapshot)
        if have is None:
            raise InputError(f"snapshot {snapshot}: missing from the lake, cannot rebuild")
        if want and have != want:
            raise InputError(
                f"snapshot {snapshot}: digest {have[:12]} differs from the recorded {want[:12]}"
            )


def rebuild(frame: pd.DataFrame, recipe: Recipe, base: Config) -> Rebuild:
    """Fit the recipe's family and parameters on the same window and score the same holdout.

    Args:
        frame: the recipe's snapshots, concatenated in the recorded order.
        recipe: what `ctloop lineage` records for the version.
        base: settings the recipe does not fix (paths, gates).
    """
    config = recipe.config(base)
    split = split_holdout(frame, config)
    candidate = train_candidate(split.train, config, recipe.family, recipe.params)
    target = config.require_target()
    X = prepare_features(split.holdout, candidate.numeric, candidate.categorical)
    metrics = evaluate_with_spread(candidate.pipeline, X, split.holdout[target], config)
    return Rebuild(candidate, metrics, dict(recipe.metrics), split.strategy)


def describe(
    summary: dict[str, Any], recipe: Recipe | None, manifests: dict[str, Any]
) -> dict[str, Any]:
    """The answer of `ctloop lineage`: which data, which code, which parameters made it."""
    tags = summary.get("tags", {})
    data = []
    for snapshot in recipe.snapshots if recipe else summary.get("snapshots", []):
        m = manifests.get(snapshot)
        data.append(
            {
                "snapshot": snapshot,
                "sha256": (recipe.digests.get(snapshot) if recipe else None)
                or (m.sha256 if m else None),
                "in_lake": m is not None,
                "rows": m.rows if m else None,
                "source": m.source if m else None,
                "time_min": m.time_min if m else None,
                "time_max": m.time_max if m else None,
            }
        )
    return {
        "version": summary.get("version"),
        "semver": summary.get("semver"),
        "run_id": summary.get("run_id"),
        "trigger": summary.get("trigger"),
        "reason": summary.get("reason"),
        "trained_on": summary.get("trained_on"),
        "blessed": tags.get(TAG_BLESSED),
        "blessing": tags.get(TAG_BLESSING),
        "data": data,
        "code": {"git_commit": recipe.git_commit if recipe else tags.get(TAG_GIT_COMMIT)},
        "model": {
            "family": recipe.family if recipe else None,
            "params": recipe.params if recipe else None,
            "seed": recipe.seed if recipe else None,
            "split": recipe.split if recipe else tags.get(TAG_SPLIT),
            "tuning": recipe.tuning if recipe else None,
        },
        "config": {"dataset": recipe.dataset, "training": recipe.training} if recipe else None,
        "holdout_metrics": recipe.metrics if recipe else {},
    }


# --- the edge: read a version's record from MLflow and its data from the lake --------------


def _recorded(config: Config, version: int):
    from ctloop.lake import snapshots as lake
    from ctloop.registry.store import open_registry
    from ctloop.stores.home import home_of

    registry = open_registry(config)
    ref = registry.version(version)
    if ref is None:
        known = [r.version for r in registry.versions()]
        raise InputError(f"version {version}: not registered (versions: {known or 'none'})")
    text = registry.run_text(ref.run_id, RECIPE_FILE)
    recipe = Recipe.from_json(text) if text else None
    manifests = {m.snapshot: m for m in lake.list_snapshots(home_of(config))}
    return ref, recipe, manifests


def lineage_of(config: Config, version: int) -> dict[str, Any]:
    """`ctloop lineage VERSION`: the data (snapshots and digests), code and parameters."""
    ref, recipe, manifests = _recorded(config, version)
    return describe({**ref.summary(), "tags": ref.tags}, recipe, manifests)


def rebuild_version(config: Config, version: int) -> Rebuild:
    """Fit a registered version again from its lineage record (`ctloop lineage --rebuild`).

    Raises:
        InputError: no lineage record, or its snapshots are missing or changed.
    """
    from ctloop.lake import snapshots as lake
    from ctloop.stores.home import home_of

    _ref, recipe, manifests = _recorded(config, version)
    if recipe is None:
        raise InputError(f"version {version}: its run has no {RECIPE_FILE}, cannot rebuild")
    check_digests(recipe, {k: m.sha256 for k, m in manifests.items()})
    from ctloop.data.privacy import without_identifying

    home = home_of(config)
    frame = without_identifying(
        lake.load_snapshots(home, recipe.snapshots), lake.current_schema(home)
    )  # as the retrain flow's load-window reads it
    return rebuild(frame, recipe, config)
