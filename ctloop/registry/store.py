"""The MLflow edge: tracking runs, the model registry, aliases and semantic versions."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctloop.faults import pause
from ctloop.names import (  # noqa: F401 (re-exported)
    CHALLENGER,
    CHAMPION,
    TAG_ARTIFACT_DIGEST,
    TAG_NOTE,
    TAG_REASON,
    TAG_SEMVER,
    TAG_SIGNATURE,
    TAG_SNAPSHOTS,
    TAG_TRAINED_ON,
    TAG_TRIGGER,
)

TAG_LIMIT = 4000
# registry reads tried this many times (0.5 s, 1 s apart) before the store counts as down
READ_ATTEMPTS = 3
# A tracking server that does not answer is reported within seconds, not after MLflow's
# defaults (120 s a request, 7 retries with backoff up to minutes). Set them to override.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
}
# Types outside skops' defaults that ctloop's own model families need; reviewed, nothing else.
TRUSTED_TYPES = frozenset(
    {
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.tree._tree.Tree",
    }
)
# diffprivlib's linear models, for the optional differentially private family (extra `dp`).
DP_TRUSTED_TYPES = frozenset(
    {
        "diffprivlib.models.logistic_regression.LogisticRegression",
        "diffprivlib.models.linear_regression.LinearRegression",
        "diffprivlib.accountant.BudgetAccountant",
    }
)


def _is_missing(exc) -> bool:
    """MLflow's answer for a registered model, version or alias that does not exist (an
    alias that is not set comes back as an invalid parameter)."""
    code = getattr(exc, "error_code", "")
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc)
    )


def _without_credentials(text: str) -> str:
    import re

    return re.sub(r"//[^/@\s]*@", "//", text)


def _cause(exc: Exception) -> str:
    """One line on why a store call failed, without credentials or the HTTP client's chain."""
    text = _without_credentials(str(exc).strip())
    for needle, short in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
        ("database is locked", "database is locked"),
    ):
        if needle in text:
            return short
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def model_file(path: Path) -> tuple[Path, str]:
    """The model data file an MLflow sklearn folder names (MLmodel's `pickled_model`) and its
    serialization format; the file must lie inside the folder.

    Raises:
        ArtifactTampered: the MLmodel is unreadable or names a file outside the folder.
    """
    import yaml

    from ctloop.errors import ArtifactTampered

    try:
        meta = yaml.safe_load((path / "MLmodel").read_text(encoding="utf-8")) or {}
        flavor = (meta.get("flavors") or {}).get("sklearn") or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError) as exc:
        raise ArtifactTampered(f"{path}: unreadable MLmodel ({exc})") from exc
    name = str(flavor.get("pickled_model", "model.pkl"))
    data = (path / name).resolve()
    if not data.is_relative_to(path.resolve()) or not data.is_file():
        raise ArtifactTampered(f"{path}: MLmodel names a model file outside its folder: {name!r}")
    return data, str(flavor.get("serialization_format", "pickle"))


def artifact_digest(path: str | Path) -> str:
    """sha256 over a model folder's MLmodel and model file: what loading it trusts."""
    import hashlib

    path = Path(path)
    data, _fmt = model_file(path)
    digest = hashlib.sha256()
    for part in (path / "MLmodel", data):
        digest.update(part.name.encode() + b"\0" + hashlib.sha256(part.read_bytes()).digest())
    return digest.hexdigest()


def load_model_dir(path: str | Path, allow_pickle: bool = False):
    """Load an MLflow sklearn model folder with ctloop's own trusted-type list.

    The list saved inside the model (MLmodel) is ignored: a crafted model could trust anything
    there. Pickled models run code when loaded and are refused unless `allow_pickle`.

    Raises:
        CtloopError: pickled and not allowed, or holding types outside the trusted list.
        ArtifactTampered: the MLmodel names a file outside the folder.
    """
    from ctloop.errors import CtloopError

    path = Path(path)
    data, fmt = model_file(path)
    if fmt == "skops":
        import skops.io as sio

        needed = set(sio.get_untrusted_types(file=data))
        unknown = needed - TRUSTED_TYPES - DP_TRUSTED_TYPES
        if unknown:
            raise CtloopError(
                f"{path}: model holds types outside the trusted list: {sorted(unknown)}"
            )
        return sio.load(data, trusted=sorted(needed))
    if not allow_pickle:
        raise CtloopError(
            f"{path}: model is saved with {fmt}, which runs code when loaded; refused "
            "(set training.allow_pickle: true only for models you trust)"
        )
    import pickle

    with open(data, "rb") as handle:
        if fmt == "cloudpickle":
            import cloudpickle

            return cloudpickle.load(handle)
        return pickle.load(handle)  # noqa: S301 - explicitly allowed by config


def trusted_types_of(pipeline) -> list[str]:
    """The non-default types a pipeline needs at load time; refuses any not on the list."""
    import skops.io as sio

    from ctloop.errors import CtloopError

    needed = set(sio.get_untrusted_types(data=sio.dumps(pipeline)))
    unknown = needed - TRUSTED_TYPES - DP_TRUSTED_TYPES
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
    def complete(self) -> bool:
        """Registered whole by ctloop: its semver tag was written with the version."""
        return TAG_SEMVER in self.tags

    @property
    def snapshots(self) -> list[str]:
        return [s for s in self.tags.get(TAG_SNAPSHOTS, "").split(",") if s]

    @property
    def signature(self) -> list[list[str]]:
        return json.loads(self.tags.get(TAG_SIGNATURE, "[]"))

    @property
    def numeric(self) -> list[str]:
        """The numeric inputs of its signature, in the order the pipeline reads them."""
        return [n for n, kind in self.signature if kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        """The categorical inputs of its signature, in the order the pipeline reads them."""
        return [n for n, kind in self.signature if kind == "categorical"]

    @property
    def trained_on(self) -> str:
        return self.tags.get(TAG_TRAINED_ON, "")

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "semver": self.semver,
            "trained_on": self.trained_on,
            "trigger": self.tags.get(TAG_TRIGGER),
            "reason": self.tags.get(TAG_REASON),
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


@contextmanager
def _no_mlflow_chatter() -> Iterator[None]:
    """Silence the lines MLflow prints to stderr past its loggers ("Successfully registered
    model ...", "Created version ..."): ctloop reports the version itself."""
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

    before = MLFLOW_LOGGING_STREAM.enabled
    MLFLOW_LOGGING_STREAM.enabled = False
    try:
        yield
    finally:
        MLFLOW_LOGGING_STREAM.enabled = before


class Registry:
    """One MLflow registered model per project, with `champion` and `challenger` aliases."""

    def __init__(
        self,
        tracking_uri: str,
        name: str,
        artifact_root: str | None = None,
        allow_pickle: bool = False,
    ):
        import mlflow
        from mlflow.tracking import MlflowClient

        for key, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)  # MLflow reads them per request; yours win
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.mlflow = mlflow
        self.tracking_uri = tracking_uri
        self.name = name
        self.artifact_root = artifact_root
        self.allow_pickle = allow_pickle
        # every call names its store: opening a registry leaves MLflow's process-wide URIs alone
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @contextmanager
    def _fluent(self) -> Iterator[Any]:
        """MLflow's fluent API (runs, `log_model`, `register_model`) reads only the
        process-wide URIs: they are pointed at this store right before each such call (and stay
        so until another store's call points them elsewhere); every other call names its store."""
        self.mlflow.set_tracking_uri(self.tracking_uri)
        self.mlflow.set_registry_uri(self.tracking_uri)
        yield self.mlflow

    def experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.name)
        if experiment is not None:
            return experiment.experiment_id
        return self.client.create_experiment(self.name, artifact_location=self.artifact_root)

    def log_report(
        self,
        kind: str,
        name: str,
        markdown: str,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        files: list[str] | None = None,
    ) -> str:
        """Record a data report (validation, quarantine, drift) as a run of the project's
        `<name>-data` experiment, so MLflow shows data quality and drift over time."""
        experiment_id = self._data_experiment_id()
        run = self.client.create_run(
            experiment_id,
            run_name=f"{kind}-{name}"[:250],
            tags={"ctloop.report": kind, **(tags or {})},
        )
        run_id = run.info.run_id
        try:
            for key, value in (metrics or {}).items():
                self.client.log_metric(run_id, key, float(value))
            self.client.log_text(run_id, markdown, f"{kind}.md")
            for path in files or []:
                self.client.log_artifact(run_id, path)
        finally:
            self.client.set_terminated(run_id)
        return run_id

    def _data_experiment_id(self) -> str:
        """The `<name>-data` experiment (data reports, estimate lines), made on first use."""
        experiment = self.client.get_experiment_by_name(f"{self.name}-data")
        if experiment is not None:
            return experiment.experiment_id
        return self.client.create_experiment(
            f"{self.name}-data", artifact_location=self.artifact_root
        )

    def log_series(self, series: str, metrics: dict[str, float], tags: dict[str, str]) -> str:
        """Append one point to each metric of a long-lived run of the `<name>-data`
        experiment, found by its `ctloop.series` tag and made on first use: MLflow charts the
        points as lines over time (one run per check would be one bar each)."""
        import time

        experiment_id = self._data_experiment_id()
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`ctloop.series` = '{series}'", max_results=1
        )
        if found:
            run_id = found[0].info.run_id
        else:
            run = self.client.create_run(
                experiment_id, run_name=series, tags={"ctloop.series": series, **tags}
            )
            run_id = run.info.run_id
        first = next(iter(metrics), None)
        step = len(self.client.get_metric_history(run_id, first)) if first else 0
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, float(value), timestamp=now, step=step)
        return run_id

    def _ref(self, mv) -> ModelRef:
        tags = dict(mv.tags or {})
        return ModelRef(self.name, int(mv.version), tags.get("semver", "0.0.0"), mv.run_id, tags)

    @property
    def where(self) -> str:
        """The store for messages, without credentials."""
        return _without_credentials(self.tracking_uri)

    def _read(self, what: str, call, missing=None):
        """Run a registry read; `missing` when the thing does not exist, a `StoreUnavailable`
        after a bounded retry when the store fails (an outage is never read as absence)."""
        import time

        from mlflow.exceptions import MlflowException

        from ctloop.errors import StoreUnavailable

        for attempt in range(READ_ATTEMPTS):
            try:
                return call()
            except MlflowException as exc:
                if _is_missing(exc):
                    return missing
                failure: Exception = exc
            except OSError as exc:  # the HTTP client's connection errors, a locked SQLite file
                failure = exc
            if attempt + 1 < READ_ATTEMPTS:
                time.sleep(0.5 * 2**attempt)
        raise StoreUnavailable(
            f"model registry {self.where}: cannot read {what} "
            f"(after {READ_ATTEMPTS} attempts): {_cause(failure)}"
        ) from failure

    def by_alias(self, alias: str) -> ModelRef | None:
        """The version behind an alias; None when there is none (or it is incomplete).

        Raises:
            StoreUnavailable: the registry cannot be read; never taken as "no champion".
        """
        mv = self._read(
            f"alias {alias!r}", lambda: self.client.get_model_version_by_alias(self.name, alias)
        )
        ref = None if mv is None else self._ref(mv)
        return ref if ref is not None and ref.complete else None

    def version(self, version: int) -> ModelRef | None:
        mv = self._read(
            f"version {version}", lambda: self.client.get_model_version(self.name, str(version))
        )
        ref = None if mv is None else self._ref(mv)
        return ref if ref is not None and ref.complete else None

    def _all_versions(self) -> list[ModelRef]:
        found = self._read(
            "versions", lambda: self.client.search_model_versions(f"name='{self.name}'"), []
        )
        return sorted((self._ref(mv) for mv in found), key=lambda r: r.version)

    def versions(self) -> list[ModelRef]:
        """The complete versions, oldest first (a half-made one is left out)."""
        return [ref for ref in self._all_versions() if ref.complete]

    def latest(self) -> ModelRef | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def sweep_incomplete(self) -> list[int]:
        """Delete the versions ctloop began to register and never finished (a process killed
        between creating the version and tagging it, before registration was one call); a
        version some other tool registered under this name is left alone."""
        removed = []
        for ref in self._all_versions():
            if ref.complete or not ref.run_id:
                continue
            run = self._read(f"run {ref.run_id}", lambda r=ref: self.client.get_run(r.run_id))
            if run is not None and TAG_TRIGGER in (run.data.tags or {}):
                self.client.delete_model_version(self.name, str(ref.version))
                removed.append(ref.version)
        return removed

    def load(self, ref: ModelRef):
        """The fitted pipeline of a version, loaded with the trusted-type list (see
        `load_model_dir`)."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return load_model_dir(self.download(ref, tmp), self.allow_pickle)

    def download(self, ref: ModelRef, dst: str) -> str:
        """A version's model folder, downloaded under `dst` and checked against the digest
        recorded at registration; returns its local path.

        The version's storage location is asked of this store first: MLflow resolves a
        `models:/` URI through the process-wide registry URI whatever the call names (3.x
        `ModelsArtifactRepository._get_model_uri_infos`), so a process that never set it would
        look in `./mlflow.db`.

        Raises:
            ArtifactTampered: the files differ from the recorded digest.
            StoreUnavailable: the registry cannot be read.
        """
        from mlflow.artifacts import download_artifacts

        from ctloop.errors import ArtifactTampered

        source = self._read(
            f"the location of version {ref.version}",
            lambda: self.client.get_model_version_download_uri(ref.name, str(ref.version)),
        )
        local = download_artifacts(
            artifact_uri=source,
            dst_path=dst,
            tracking_uri=self.tracking_uri,
            registry_uri=self.tracking_uri,
        )
        recorded = ref.tags.get(TAG_ARTIFACT_DIGEST)
        if recorded and artifact_digest(local) != recorded:
            raise ArtifactTampered(
                f"model {ref.name} version {ref.version}: its files at {source} do not match "
                f"the digest recorded at registration ({recorded[:12]}...); refused"
            )
        return local

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    def run_text(self, run_id: str, path: str) -> str | None:
        """A text artifact of a run, or None when it is not there."""
        import tempfile

        from mlflow.exceptions import MlflowException

        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = self.client.download_artifacts(run_id, path, tmp)
                return Path(local).read_text(encoding="utf-8")
        except (MlflowException, OSError, UnicodeDecodeError):
            return None

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
        images: dict[str, bytes] | None = None,
        histories: list[tuple[str, float, int, int]] | None = None,
        trials: list[dict[str, Any]] | None = None,
        inputs: list[tuple[Any, str]] | None = None,
    ) -> tuple[str, str]:
        """Log one training run with its model; returns (run_id, model_uri).

        Args:
            images: binary artifacts (plots) by file name, under `plots/`.
            histories: metric samples `(key, value, timestamp_ms, step)`, e.g. the CPU and
                memory sampled while training (`system/...`).
            trials: tuning trials, each logged as a nested run (`TrialRecord` as a dict).
            inputs: MLflow datasets with their context (`mlflow.log_input`), e.g. the window.
        """
        import sklearn
        from mlflow.models import infer_signature

        experiment_id = self.experiment_id()
        with (
            self._fluent() as mlflow,
            mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run,
        ):
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            mlflow.set_tags({k: str(v)[:TAG_LIMIT] for k, v in tags.items()})
            for dataset, context in inputs or []:
                mlflow.log_input(dataset, context=context)
            for name, text in (artifacts or {}).items():
                mlflow.log_text(text, name)
            self._log_images(run.info.run_id, images or {})
            self._log_histories(run.info.run_id, histories or [])
            self._log_trials(experiment_id, run.info.run_id, trials or [])
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
            pause("train.logged")
            return run.info.run_id, info.model_uri

    def _log_images(self, run_id: str, images: dict[str, bytes]) -> None:
        import tempfile

        if not images:
            return
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in images.items():
                (Path(tmp) / name).write_bytes(data)
            self.client.log_artifacts(run_id, tmp, artifact_path="plots")

    def _log_histories(self, run_id: str, samples: list[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in samples]
        for start in range(0, len(metrics), 900):
            self.client.log_batch(run_id, metrics=metrics[start : start + 900])

    def _log_trials(self, experiment_id: str, parent_id: str, trials: list[dict]) -> None:
        """Each tuning trial as a nested run: its parameters, fold scores and final value."""
        from mlflow.entities import Metric, Param, RunTag

        for t in trials:
            start_ms = int((t.get("started") or 0) * 1000) or None
            end_ms = int((t.get("finished") or 0) * 1000) or None
            run = self.client.create_run(
                experiment_id,
                start_time=start_ms,
                tags={"mlflow.parentRunId": parent_id, "ctloop.trial_state": t["state"]},
                run_name=f"trial-{t['number']}",
            )
            params = [Param("family", str(t["family"]))]
            params += [Param(k, str(v)[:500]) for k, v in t["params"].items()]
            ts = end_ms or start_ms or 0
            metrics = [Metric("fold_score", v, ts, int(k)) for k, v in t["intermediate"].items()]
            if t.get("value") is not None:
                metrics.append(Metric("cv_score", float(t["value"]), ts, 0))
            self.client.log_batch(
                run.info.run_id, metrics=metrics, params=params, tags=[RunTag("trial", "1")]
            )
            status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(t["state"], "FAILED")
            self.client.set_terminated(run.info.run_id, status=status, end_time=end_ms)

    def register(self, model_uri: str, run_id: str, tags: dict[str, str]) -> ModelRef:
        """Register a logged model as a new version, whole: its tags (semver among them) and
        the digest of its files are written in the one call that creates it, so no process
        ever sees it half-made; a version an earlier, killed process left half-made is
        deleted first."""
        import tempfile

        from mlflow.artifacts import download_artifacts

        self.sweep_incomplete()
        with tempfile.TemporaryDirectory(prefix="ctloop-digest-") as tmp, self._fluent():
            local = download_artifacts(
                artifact_uri=model_uri,
                dst_path=tmp,
                tracking_uri=self.tracking_uri,
                registry_uri=self.tracking_uri,
            )
            digest = artifact_digest(local)
        whole = {k: str(v)[:TAG_LIMIT] for k, v in tags.items() if k != TAG_NOTE}
        whole[TAG_ARTIFACT_DIGEST] = digest
        with self._fluent() as mlflow, _no_mlflow_chatter():
            mv = mlflow.register_model(model_uri, self.name, tags=whole)
        pause("register.created")
        if tags.get(TAG_NOTE):  # the run's description is the version's too
            self.client.update_model_version(self.name, mv.version, description=tags[TAG_NOTE])
        return self._ref(self.client.get_model_version(self.name, mv.version))

    def delete_version(self, version: int) -> None:
        self.client.delete_model_version(self.name, str(version))

    def set_alias(self, alias: str, version: int) -> None:
        pause("promote.alias")
        self.client.set_registered_model_alias(self.name, alias, str(version))

    def delete_alias(self, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model_alias(self.name, alias)
        except MlflowException:
            pass


_OPEN: dict[tuple[Any, ...], Registry] = {}
_OPEN_LOCK = threading.Lock()


def open_registry(config) -> Registry:
    """The registry of a config: the embedded SQLite store unless a tracking URI is set.

    Opened once per process and store: later calls (every task of a run) get the same
    `Registry`, without creating the home's folders again. It is opened anew when the embedded
    store's folder has gone (a `ctloop demo --fresh` in the same process)."""
    from ctloop.stores.home import home_of

    home = home_of(config)
    key = (
        home.tracking_uri(config),
        config.registry_name,
        config.cluster.artifact_root or home.artifact_root(),
        config.training.allow_pickle,
    )
    with _OPEN_LOCK:
        registry = _OPEN.get(key)
        if registry is None or not home.mlflow.is_dir():
            home.ensure()
            registry = _OPEN[key] = Registry(*key[:3], allow_pickle=key[3])
        return registry
