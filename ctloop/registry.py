"""The MLflow edge: tracking runs, the model registry, aliases and semantic versions."""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_LIMIT = 4000
# Types outside skops' defaults that ctloop's own model families need; reviewed, nothing else.
TRUSTED_TYPES = frozenset(
    {
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.tree._tree.Tree",
    }
)


def trusted_types_of(pipeline) -> list[str]:
    """The non-default types a pipeline needs at load time; refuses any not on the list."""
    import skops.io as sio

    from ctloop.errors import CtloopError

    needed = set(sio.get_untrusted_types(data=sio.dumps(pipeline)))
    unknown = needed - TRUSTED_TYPES
    if unknown:
        raise CtloopError(f"model holds types outside the trusted list: {sorted(unknown)}")
    return sorted(needed)


@dataclass(frozen=True)
class ModelRef:
    """A registered model version as ctloop sees it."""

    name: str
    version: int
    semver: str
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def snapshots(self) -> list[str]:
        return [s for s in self.tags.get("ctloop.snapshots", "").split(",") if s]

    @property
    def signature(self) -> list[list[str]]:
        return json.loads(self.tags.get("ctloop.signature", "[]"))

    @property
    def trained_on(self) -> str:
        return self.tags.get("ctloop.trained_on", "")

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "semver": self.semver,
            "trained_on": self.trained_on,
            "trigger": self.tags.get("ctloop.trigger"),
            "reason": self.tags.get("ctloop.reason"),
            "snapshots": self.snapshots,
            "run_id": self.run_id,
        }


def git_commit(cwd: Path | None = None) -> str:
    """The code version: the git commit of the working tree, or 'unknown' outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def next_semver(
    previous: ModelRef | None, signature: list[list[str]] | list[tuple[str, str]]
) -> str:
    """Major when the input signature changes (or for the first model), minor otherwise."""
    signature = [list(x) for x in signature]
    if previous is None:
        return "1.0.0"
    major, minor, _patch = (int(x) for x in previous.semver.split("."))
    if previous.signature != signature:
        return f"{major + 1}.0.0"
    return f"{major}.{minor + 1}.0"


class Registry:
    """One MLflow registered model per project, with `champion` and `challenger` aliases."""

    def __init__(self, tracking_uri: str, name: str, artifact_root: str | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.mlflow = mlflow
        self.tracking_uri = tracking_uri
        self.name = name
        self.artifact_root = artifact_root
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.name)
        if experiment is not None:
            return experiment.experiment_id
        return self.client.create_experiment(self.name, artifact_location=self.artifact_root)

    def _ref(self, mv) -> ModelRef:
        tags = dict(mv.tags or {})
        return ModelRef(self.name, int(mv.version), tags.get("semver", "0.0.0"), mv.run_id, tags)

    def by_alias(self, alias: str) -> ModelRef | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._ref(self.client.get_model_version_by_alias(self.name, alias))
        except MlflowException:
            return None

    def version(self, version: int) -> ModelRef | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._ref(self.client.get_model_version(self.name, str(version)))
        except MlflowException:
            return None

    def versions(self) -> list[ModelRef]:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name='{self.name}'")
        except MlflowException:
            return []
        return sorted((self._ref(mv) for mv in found), key=lambda r: r.version)

    def latest(self) -> ModelRef | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def load(self, ref: ModelRef):
        return self.mlflow.sklearn.load_model(ref.uri)

    def log_candidate(
        self,
        *,
        pipeline,
        input_example,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        artifacts: dict[str, str] | None = None,
        run_name: str | None = None,
    ) -> tuple[str, str]:
        """Log one training run with its model; returns (run_id, model_uri)."""
        import sklearn
        from mlflow.models import infer_signature

        mlflow = self.mlflow
        experiment_id = self.experiment_id()
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            mlflow.set_tags({k: str(v)[:TAG_LIMIT] for k, v in tags.items()})
            for name, text in (artifacts or {}).items():
                mlflow.log_text(text, name)
            signature = infer_signature(input_example, pipeline.predict(input_example))
            info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                signature=signature,
                input_example=input_example.head(3),
                pip_requirements=[f"scikit-learn=={sklearn.__version__}", "pandas", "numpy"],
                serialization_format="skops",
                skops_trusted_types=trusted_types_of(pipeline),
            )
            return run.info.run_id, info.model_uri

    def register(self, model_uri: str, run_id: str, tags: dict[str, str]) -> ModelRef:
        """Register a logged model as a new version with its tags; undone on failure."""
        mv = self.mlflow.register_model(model_uri, self.name, tags=None)
        try:
            for key, value in tags.items():
                self.client.set_model_version_tag(
                    self.name, mv.version, key, str(value)[:TAG_LIMIT]
                )
        except Exception:
            self.client.delete_model_version(self.name, mv.version)
            raise
        return self._ref(self.client.get_model_version(self.name, mv.version))

    def delete_version(self, version: int) -> None:
        self.client.delete_model_version(self.name, str(version))

    def set_alias(self, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(self.name, alias, str(version))

    def delete_alias(self, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model_alias(self.name, alias)
        except MlflowException:
            pass


def open_registry(config) -> Registry:
    """The registry of a config: the embedded SQLite store unless a tracking URI is set."""
    from ctloop.home import home_of

    home = home_of(config).ensure()
    return Registry(home.tracking_uri(config), config.registry_name, home.artifact_root())
