"""Typed configuration: one `ctloop.yaml`, validated by pydantic, overridden by env and flags."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ctloop.errors import ConfigError
from ctloop.names import CONFIG_FILENAME, DISTANCE_METHODS, NOTIFIED_EVENTS, P_VALUE_METHODS

ENV_PREFIX = "CTLOOP_"


class Task(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


class Severity(StrEnum):
    BLOCK = "block"
    WARN = "warn"
    OFF = "off"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetConfig(_Strict):
    """What the data is: which column to predict and which columns are not features."""

    target: str | None = None
    task: Task = Task.BINARY
    timestamp: str | None = None
    id: str | None = None
    exclude: list[str] = Field(default_factory=list)

    @field_validator("exclude", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def non_features(self) -> set[str]:
        """Columns that are never model inputs."""
        cols = {self.target, self.timestamp, self.id, *self.exclude}
        return {c for c in cols if c}


class ModelFamily(StrEnum):
    HIST_GRADIENT_BOOSTING = "hist_gradient_boosting"
    LOGISTIC_REGRESSION = "logistic_regression"
    RANDOM_FOREST = "random_forest"


class PrivacyConfig(_Strict):
    """Differentially private training (diffprivlib), for the linear family only."""

    enabled: bool = False
    epsilon: float = Field(default=1.0, gt=0, description="privacy budget of one training run")
    data_norm: float | None = Field(
        default=None,
        gt=0,
        description="bound on the L2 norm of a scaled row; None: measured on the training "
        "data (which leaks a little privacy; set it for a strict guarantee)",
    )


class TrainingConfig(_Strict):
    """Which data a model learns from and how."""

    window_days: float | None = Field(
        default=14, gt=0, description="train on the most recent N days (needs a timestamp)"
    )
    min_rows: int | None = Field(
        default=1000,
        gt=0,
        description="a window of window_days with fewer rows reaches back, whole snapshots, "
        "until it holds this many (a slow stream still trains on enough rows; null: off)",
    )
    max_rows: int | None = Field(default=None, gt=0)
    choose_window: bool = Field(
        default=True,
        description="compare the window rule's model with one on all the data (and, after a "
        "drift, on the recent span) on the newest rows and train on the best (a few more fits "
        "per retrain); false: always the rule's window",
    )
    holdout_fraction: float = Field(default=0.2, gt=0, lt=0.9)
    family: ModelFamily = ModelFamily.HIST_GRADIENT_BOOSTING
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    allow_pickle: bool = Field(
        default=False,
        description="load models saved with pickle/cloudpickle (unsafe: runs code on load)",
    )
    system_metrics: bool = Field(
        default=True, description="sample CPU and memory while training, log them to MLflow"
    )


class TuningConfig(_Strict):
    """Hyperparameter search with Optuna (off by default: a fixed-parameter fit is fast)."""

    enabled: bool = False
    trials: int = Field(default=20, ge=1, description="trials of one study, all workers together")
    timeout_seconds: float | None = Field(
        default=300, gt=0, description="wall-clock budget of one study"
    )
    workers: int = Field(default=1, ge=1, le=64, description="trial processes in parallel")
    folds: int = Field(
        default=3, ge=2, le=10, description="time-ordered folds inside the training part"
    )
    pruning: bool = Field(default=True, description="stop weak trials early (folds as steps)")
    storage: str | None = Field(
        default=None,
        description="Optuna storage: empty = journal file under the home; a path or "
        "journal:///path; or an RDB URL such as postgresql://... (cluster profile)",
    )
    families: list[ModelFamily] = Field(
        default_factory=list,
        description="families the study may choose from; empty = only training.family",
    )
    warm_start: bool = Field(default=True, description="enqueue the champion's parameters first")
    seed: int = 0


class AnalysisConfig(_Strict):
    """What the analyse stage computes beyond the holdout metrics."""

    sensitive_columns: list[str] = Field(
        default_factory=list,
        description="columns (features or not) whose slices are compared for fairness",
    )
    slice_categoricals: bool = Field(
        default=True, description="also slice by every categorical feature"
    )
    min_slice_rows: int = Field(default=20, ge=1, description="smaller slices are not scored")
    max_slice_values: int = Field(default=20, ge=1, description="most frequent values per column")
    permutation_repeats: int = Field(default=3, ge=1)
    max_rows: int = Field(
        default=2000, ge=50, description="rows used for permutation importance and what-if"
    )
    plots: bool = True


# The defaults that follow the task (`ctloop.model.metrics` explains the choice): the primary
# metric and the blessing floors, used when `gates.primary_metric` / `gates.min_metrics` are unset.
TASK_PRIMARY_METRIC = {"binary": "roc_auc", "multiclass": "roc_auc_ovr", "regression": "rmse"}
# what `ctloop.model.evaluate` computes per task (the names a primary metric or floor may use)
TASK_METRICS = {
    "binary": (
        "roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "precision", "recall", "f1",
        "log_loss", "brier", "calibration_error",
    ),
    "multiclass": (
        "roc_auc_ovr", "roc_auc", "accuracy", "balanced_accuracy", "f1_macro", "log_loss",
    ),
    "regression": ("rmse", "mae", "r2"),
}  # fmt: skip
TASK_FLOORS = {
    "binary": {"roc_auc": 0.6},
    "multiclass": {"roc_auc_ovr": 0.6},
    "regression": {"r2": 0.0},
}


class GateConfig(_Strict):
    """Blessing thresholds: absolute floors and ceilings, and the margin over the champion.

    Margins are in units of the metric's scale: amounts of a 0-1 metric (ROC AUC, accuracy,
    R^2), fractions of the champion's value for an error (rmse, mae, log_loss).
    """

    primary_metric: str | None = Field(
        default=None,
        description="empty: the task's default (binary roc_auc, multiclass roc_auc_ovr, "
        "regression rmse)",
    )
    min_metrics: dict[str, float] | None = Field(
        default=None,
        description="floors; empty: the task's (roc_auc >= 0.6, roc_auc_ovr >= 0.6, r2 >= 0)",
    )
    floors_against_champion: bool = Field(
        default=True,
        description="a floor the challenger misses does not refuse it when the champion misses "
        "it too on the same holdout and does no better: the better of two models below the "
        "floor serves, with a warning (false: a floor always refuses; a first model always "
        "meets the floors)",
    )
    max_metrics: dict[str, float] = Field(default_factory=dict)
    leakage: Literal["warn", "block", "off"] = Field(
        default="warn",
        description="a feature that alone nearly predicts the target: named in the blessing "
        "and the model card (warn), or refused (block)",
    )
    min_improvement: float = Field(
        default=0.0,
        description="challenger must beat the champion by this on the primary metric (an "
        "amount of a 0-1 metric; a fraction of the champion's value for an error metric)",
    )
    slice_columns: list[str] = Field(
        default_factory=list,
        description="per slice of these columns the challenger must be >= champion + "
        "slice_min_improvement on the primary metric",
    )
    slice_min_improvement: float = Field(
        default=-0.05,
        description="margin per slice (negative: a tolerated loss), in the same units as "
        "min_improvement",
    )
    min_slice_rows: int = Field(default=30, ge=1, description="smaller slices are not gated")
    max_slice_gap: float | None = Field(
        default=None,
        ge=0,
        description="largest allowed gap of the primary metric between slices of a sensitive "
        "column (fairness floor)",
    )
    review_required: bool = Field(
        default=False,
        description="pause `retrain` before promotion until a person approves in the Prefect UI",
    )
    review_timeout_seconds: int = Field(
        default=3600, ge=1, description="no answer by then: the champion stays"
    )
    promote: bool = Field(
        default=True,
        description="a blessed challenger becomes champion; false: it gets the challenger alias",
    )


class ValidationConfig(_Strict):
    """Data checks on every batch; each check is block, warn or off."""

    max_missing_share: float = Field(default=0.2, ge=0, le=1)
    max_unseen_category_share: float = Field(default=0.05, ge=0, le=1)
    max_out_of_range_share: float = Field(default=0.05, ge=0, le=1)
    range_margin: float = Field(default=0.1, ge=0, description="allowed margin, share of span")
    max_label_shift: float = Field(default=0.15, ge=0, le=1)
    max_duplicate_share: float = Field(default=0.2, ge=0, le=1)
    min_rows: int = Field(default=1, ge=1)
    max_label_parity_gap: float = Field(
        default=0.1, ge=0, le=1, description="largest class-share gap between train and validation"
    )
    max_categories: int = Field(
        default=1000, ge=1, description="distinct values kept per categorical column in the schema"
    )
    reference_rows: int = Field(
        default=50_000, ge=100, description="rows of the reference window sampled for drift checks"
    )
    evidently_report: Literal["on_block", "always", "never"] = Field(
        default="on_block", description="when to write Evidently's data-quality and drift HTML"
    )
    severity: dict[str, Severity] = Field(default_factory=dict)

    @field_validator("severity")
    @classmethod
    def _known_checks(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        unknown = sorted(set(value) - set(DEFAULT_SEVERITY))
        if unknown:
            raise ValueError(f"unknown checks {unknown}; known: {sorted(DEFAULT_SEVERITY)}")
        return value

    def severity_of(self, check: str) -> Severity:
        return self.severity.get(check, DEFAULT_SEVERITY.get(check, Severity.BLOCK))


DEFAULT_SEVERITY: dict[str, Severity] = {
    "unreadable": Severity.BLOCK,
    "empty": Severity.BLOCK,
    "missing_target": Severity.BLOCK,
    "no_features": Severity.BLOCK,
    "missing_column": Severity.BLOCK,
    "extra_column": Severity.WARN,
    "type_error": Severity.BLOCK,
    "non_finite": Severity.WARN,
    "missing_values": Severity.BLOCK,
    "out_of_range": Severity.WARN,
    "unseen_categories": Severity.BLOCK,
    "unknown_label": Severity.BLOCK,
    "label_shift": Severity.WARN,
    "duplicates": Severity.WARN,
    "data_drift": Severity.WARN,
    "label_parity": Severity.WARN,
    "personal_data": Severity.WARN,
}


class DriftConfig(_Strict):
    """When the monitor calls a batch drifted (Evidently per-column tests)."""

    num_method: str = "wasserstein"
    cat_method: str = "jensenshannon"

    @field_validator("num_method", "cat_method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        known = DISTANCE_METHODS | P_VALUE_METHODS
        if value not in known:
            raise ValueError(f"unknown drift method {value!r}; one of {sorted(known)}")
        return value

    threshold: float = Field(default=0.1, gt=0)
    share: float = Field(
        default=0.3, gt=0, le=1, description="drift when this share of columns drifted"
    )
    columns: list[str] = Field(
        default_factory=list, description="drift also when any of these drifted"
    )
    sample_rows: int = Field(
        default=100_000,
        ge=1000,
        description="current rows sampled per column by the fast check (0 error bound: see README)",
    )
    workers: int = Field(default=2, ge=1, description="columns checked in parallel")
    noise_quantile: float = Field(
        default=0.99,
        ge=0,
        lt=1,
        description="a distance (wasserstein, jensenshannon...) drifts only above this quantile "
        "of the distances that batches of the same size drawn from the reference itself reach "
        "(and above the threshold); 0: the threshold alone. Matters for batches of a few "
        "thousand rows or fewer",
    )


class IngestConfig(_Strict):
    """How files are read into the lake, and the watched landing folder."""

    chunk_bytes: int = Field(
        default=16 << 20, ge=1 << 10, description="CSV bytes parsed per chunk (bounds memory)"
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    landing: Path | None = Field(
        default=None, description="watched landing folder; empty: <home>/landing"
    )
    patterns: list[str] = Field(default_factory=lambda: ["*.csv", "*.parquet", "*.pq"])
    done: Literal["move", "mark"] = Field(
        default="move",
        description="after ingestion, move a landing file to landing/.done (or .quarantined), "
        "or leave it and record it in landing/.ctloop-ingested.jsonl",
    )


class PersonalDataConfig(_Strict):
    """Columns that look like personal data: detected at schema inference, then handled."""

    detect: bool = True
    action: Literal["drop", "hash", "keep"] = Field(
        default="hash", description="what happens to a detected column before any snapshot"
    )
    columns: dict[str, Literal["drop", "hash", "keep"]] = Field(
        default_factory=dict, description="per column decisions; they win over detection"
    )
    salt: str | None = Field(
        default=None,
        description="salt of the hashes; empty: a random salt kept in <home>/lake/privacy.salt",
    )


class TriggerConfig(_Strict):
    """The retraining rules shared by the live deployments and the demo."""

    schedule_cron: str | None = Field(
        default="0 3 1 * *",
        description="a cron (UTC) on the retrain deployment: the safety net for what the rules "
        "cannot see. A scheduled run retrains on what arrived whatever the rules say, and is "
        "skipped when nothing arrived since the last retrain; monthly by default, as a nightly "
        "one on daily batches retrains every batch (null: off). `ctloop replay` fires it on "
        "the data's own clock",
    )
    bootstrap_rows: int = Field(default=1000, ge=1, description="labelled rows for a first model")
    min_new_rows: int | None = Field(
        default=5000, ge=1, description="new labelled rows that retrain (null: rule off)"
    )
    drift_min_rows: int = Field(
        default=1000, ge=1, description="post-drift labelled rows a drift retrain waits for"
    )
    cooldown_minutes: float = Field(default=0, ge=0)
    monitor_every_minutes: float | None = Field(
        default=60, gt=0, description="scheduled monitor runs (besides one per accepted batch)"
    )
    performance_drop: float = Field(
        default=0.05,
        ge=0,
        description="retrain when the online primary metric is this much worse than the "
        "champion's holdout value: an amount of a 0-1 metric (0.05 of ROC AUC), a fraction of "
        "the holdout value for an error metric (0.05: rmse 5% higher)",
    )
    performance_noise: float = Field(
        default=2.0,
        ge=0,
        description="the drop must also exceed this many standard errors (from the holdout's "
        "bootstrap spread) of the online-vs-holdout difference; 0: off",
    )
    rollout_min_rows: int = Field(
        default=200, ge=1, description="labelled served rows per version before a canary decision"
    )
    rollout_margin: float = Field(
        default=0.0,
        description="online: challenger better than champion by this promotes, else rolls back "
        "(units as performance_drop)",
    )
    retrain_cost: float = Field(
        default=0.02,
        ge=0,
        description="what one retrain is worth in primary-metric units summed over batches "
        "(alpha): a retrain pays when it raises the metric by more than this over the batches "
        "it serves (0.02: +0.002 ROC AUC on each of 10 batches); units as performance_drop, so "
        "for an error metric a fraction of the champion's holdout value (0.02: 2% of its rmse). "
        "The live decay trigger retrains once the served model's drop, summed over the batches "
        "served since the last retrain, passes it; `ctloop replay` uses it for the "
        "hindsight-optimal schedule and each policy's regret (0: the summed-loss rule is off)",
    )
    performance_min_rows: int = Field(
        default=200, ge=1, description="labelled served rows needed before judging performance"
    )
    drift_needs_estimated_drop: bool = Field(
        default=False,
        description="drift retrains only when the label-free estimate of the champion's metric "
        "says it hurts (its optimistic bound `performance_drop` worse than the holdout value); "
        "harmless drift is reported, not retrained on",
    )


class ServingConfig(_Strict):
    """The model server (`ctloop serve`): what is live, how traffic splits, where predictions go."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    admin_token: str | None = Field(default=None, description="bearer token for admin routes")
    challenger_traffic: float = Field(default=0.0, ge=0, le=1)
    shadow: bool = Field(default=False, description="score the challenger on every request")
    traffic: dict[str, float] = Field(
        default_factory=dict,
        description="weights by target: 'champion', 'challenger' or a pinned version 'v3'; "
        "empty means champion 1 - challenger_traffic, challenger challenger_traffic",
    )
    shadow_target: str = Field(
        default="challenger", description="what shadows when `shadow` is on (alias or 'v3')"
    )
    poll_seconds: float = Field(
        default=2.0, gt=0, description="how often the server looks for moved aliases"
    )
    warmup_rows: int = Field(
        default=32, ge=1, description="rows a new version must score before it is swapped in"
    )
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    keep_alive_seconds: int = Field(
        default=75,
        ge=1,
        description="how long an idle client connection stays open; longer than clients' own "
        "idle timeout (httpx and many pools: 5 s), so that the client closes first and never "
        "sends a request on a connection the server is closing",
    )
    max_records: int = Field(default=10_000, ge=1, description="records per request")
    max_batch: int = Field(default=256, ge=1, description="records per model call (micro-batch)")
    prediction_log: bool = True
    prediction_log_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the prediction log; empty: SQLite under the home "
        "(use postgresql://... in the cluster profile)",
    )
    log_batch_rows: int = Field(default=1000, ge=1, description="rows per prediction-log write")
    log_flush_seconds: float = Field(default=0.5, gt=0)
    log_queue_rows: int = Field(
        default=200_000, ge=1, description="pending log rows before new ones are dropped"
    )
    score_partition_rows: int = Field(
        default=500_000,
        ge=1,
        description="batch scoring (`score-batch`): rows per partition; each partition is one "
        "task on the fan-out task runner (Dask in the cluster profile), so smaller inputs "
        "are scored as one",
    )

    @field_validator("traffic")
    @classmethod
    def _check_traffic(cls, value: dict[str, float]) -> dict[str, float]:
        for target, weight in value.items():
            if weight < 0:
                raise ValueError(f"traffic.{target}: weight {weight} is negative")
        if value and sum(value.values()) <= 0:
            raise ValueError("traffic: the weights sum to zero")
        return value

    def weights(self) -> dict[str, float]:
        """Traffic weights by target, from `traffic` or from `challenger_traffic`."""
        if self.traffic:
            return dict(self.traffic)
        weights = {"champion": 1.0 - self.challenger_traffic}
        if self.challenger_traffic > 0:
            weights["challenger"] = self.challenger_traffic
        return weights


class NotificationConfig(_Strict):
    """A webhook that receives ctloop's alerts as JSON."""

    webhook_url: str | None = None
    token: str | None = Field(default=None, description="sent as a bearer token")
    events: list[str] = Field(
        default_factory=lambda: list(NOTIFIED_EVENTS),
        description="which events are sent (empty: all)",
    )
    retries: int = Field(default=2, ge=0, le=10)
    timeout_seconds: float = Field(default=5, gt=0)


class Profile(StrEnum):
    EMBEDDED = "embedded"
    CLUSTER = "cluster"


class PathsConfig(_Strict):
    """Where state lives. Empty URIs mean: inside the embedded home."""

    home: Path = Path(".ctloop")
    tracking_uri: str | None = None
    registry_name: str | None = None
    lake: str | None = Field(
        default=None,
        description="the data lake (snapshots, manifests, schema versions): a folder or any "
        "fsspec URL (file:///..., memory://..., s3://bucket/prefix, gcs://..., abfs://...); "
        "empty: <home>/lake. Quarantine, reports, MLflow and landing stay in the home",
    )
    lake_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options of the lake URL (key, secret, endpoint_url, "
        "client_kwargs...); empty: fsspec's FSSPEC_<PROTOCOL>[_<OPTION>] environment variables "
        "and config files, then the backend's own (AWS_* and ~/.aws for s3fs). Prefer the "
        "environment for secrets",
    )

    @field_validator("lake")
    @classmethod
    def _check_lake(cls, value: str | None) -> str | None:
        value = (value or "").strip() or None
        if value is None or ("://" not in value and "::" not in value):
            return value
        from fsspec.registry import known_implementations, registry

        for part in value.split("::"):
            protocol = part.split("://", 1)[0] if "://" in part else None
            if protocol and protocol not in known_implementations and protocol not in registry:
                raise ValueError(f"{value}: unknown fsspec protocol {protocol!r}")
        return value


class ClusterConfig(_Strict):
    """The cluster profile: PostgreSQL, a Prefect server with workers, an MLflow server, Dask.

    `ctloop up --profile cluster` starts every component bound to `host`; on real hosts, point
    the URLs at them (`prefect_api_url`, `mlflow_url`, `dask_address`) and `up` starts none of
    those.
    """

    postgres_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432",
        description="server URL without a database; one database per component is created",
    )
    database_prefix: str = Field(
        default="ctloop",
        pattern=r"^[a-z_][a-z0-9_]{0,40}$",
        description="databases are <prefix>_prefect, _mlflow, _optuna, _predictions",
    )
    host: str = "127.0.0.1"
    prefect_port: int = Field(default=4200, ge=1, le=65535)
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    dask_port: int = Field(default=8786, ge=1, le=65535)
    prefect_workers: int = Field(default=2, ge=0, le=64, description="process workers started")
    dask_workers: int = Field(default=2, ge=0, le=64, description="Dask workers started")
    work_pool: str = Field(default="ctloop", min_length=1)
    artifact_root: str | None = Field(
        default=None,
        description="shared artifact store of the MLflow server (a path or URI every host "
        "reaches); empty: <home>/mlflow/artifacts",
    )
    prefect_api_url: str | None = Field(default=None, description="an existing Prefect API")
    mlflow_url: str | None = Field(default=None, description="an existing MLflow server")
    dask_address: str | None = Field(default=None, description="an existing Dask scheduler")
    heartbeat_seconds: int = Field(
        default=30,
        ge=30,
        description="flow runs on the workers send a heartbeat this often (Prefect's minimum: 30)",
    )
    lost_run_seconds: int = Field(
        default=90,
        ge=45,
        description="a running flow run silent this long lost its worker: it is rescheduled for "
        "another worker (must exceed heartbeat_seconds)",
    )

    @model_validator(mode="after")
    def _lost_after_heartbeat(self) -> ClusterConfig:
        if self.lost_run_seconds <= self.heartbeat_seconds:
            raise ValueError(
                f"lost_run_seconds ({self.lost_run_seconds}) must exceed heartbeat_seconds "
                f"({self.heartbeat_seconds})"
            )
        return self

    def database(self, component: str) -> str:
        return f"{self.database_prefix}_{component}"

    def database_url(self, component: str, driver: str = "") -> str:
        """`postgresql[+driver]://.../<prefix>_<component>`."""
        base = self.postgres_url.rstrip("/")
        if driver:
            scheme, rest = base.split("://", 1)
            base = f"{scheme.split('+')[0]}+{driver}://{rest}"
        return f"{base}/{self.database(component)}"

    def prefect_api(self) -> str:
        return self.prefect_api_url or f"http://{self.host}:{self.prefect_port}/api"

    def mlflow_tracking_url(self) -> str:
        return self.mlflow_url or f"http://{self.host}:{self.mlflow_port}"

    def dask_scheduler(self) -> str:
        return self.dask_address or f"tcp://{self.host}:{self.dask_port}"


class Config(_Strict):
    """The whole of `ctloop.yaml`."""

    project: str = "ctloop"
    profile: Profile = Profile.EMBEDDED
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    gates: GateConfig = Field(default_factory=GateConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    triggers: TriggerConfig = Field(default_factory=TriggerConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    personal_data: PersonalDataConfig = Field(default_factory=PersonalDataConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    notifications: NotificationConfig = Field(default_factory=NotificationConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @model_validator(mode="after")
    def _resolve_task_defaults(self) -> Config:
        """Unset metric settings follow the task (explicit values win)."""
        task = str(self.dataset.task)
        if self.gates.primary_metric is None:
            self.gates.primary_metric = TASK_PRIMARY_METRIC[task]
        if self.gates.min_metrics is None:
            self.gates.min_metrics = dict(TASK_FLOORS[task])
        known = TASK_METRICS[task]
        named = {"gates.primary_metric": [self.gates.primary_metric]}
        named["gates.min_metrics"] = list(self.gates.min_metrics)
        named["gates.max_metrics"] = list(self.gates.max_metrics)
        for where, names in named.items():
            for name in names:
                if name not in known:
                    raise ValueError(
                        f"{where}: {name!r} is not computed for a {task} task; one of {list(known)}"
                    )
        return self

    @model_validator(mode="after")
    def _resolve_profile(self) -> Config:
        """The cluster profile points every empty store at its server (explicit values win)."""
        if self.profile == Profile.CLUSTER:
            if not self.paths.tracking_uri:
                self.paths.tracking_uri = self.cluster.mlflow_tracking_url()
            if not self.tuning.storage:
                self.tuning.storage = self.cluster.database_url("optuna", "psycopg")
            if not self.serving.prediction_log_url:
                self.serving.prediction_log_url = self.cluster.database_url(
                    "predictions", "psycopg"
                )
        return self

    @property
    def registry_name(self) -> str:
        return self.paths.registry_name or self.project

    def require_target(self) -> str:
        if not self.dataset.target:
            raise ConfigError("dataset.target: not set (put it in ctloop.yaml or pass --target)")
        return self.dataset.target


def _format_validation_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(root)"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {field}: {first['msg']}{more}"


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[leaf] = value


# the documented short names: `CTLOOP_HOME` is `paths.home`, and so on
SHORT_ENV_NAMES = {
    "home": "paths.home",
    "tracking_uri": "paths.tracking_uri",
    "lake": "paths.lake",
    "registry_name": "paths.registry_name",
    "profile": "profile",
    "project": "project",
    "target": "dataset.target",
    "task": "dataset.task",
    "timestamp": "dataset.timestamp",
    "id": "dataset.id",
    "exclude": "dataset.exclude",
    "admin_token": "serving.admin_token",
}


def _env_layer(environ: dict[str, str] | None):
    """The environment as a pydantic-settings model: the short names above, and every setting
    by its path with `__` between the parts (`CTLOOP_TRAINING__WINDOW_DAYS=7`)."""
    from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

    class _Source(EnvSettingsSource):
        def _load_env_vars(self):  # the given environment, not only `os.environ`
            if environ is None:
                return super()._load_env_vars()
            return {k.lower(): v for k, v in environ.items() if v != ""}

    sections = {
        name: (dict[str, Any] | None, None)
        for name, field in Config.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    fields = {name: (str | None, None) for name in SHORT_ENV_NAMES} | sections

    class EnvLayer(BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX,
            env_nested_delimiter="__",
            env_ignore_empty=True,
            case_sensitive=False,
            extra="ignore",
        )

        @classmethod
        def settings_customise_sources(cls, settings_cls, *args, **kwargs):
            return (_Source(settings_cls),)

    from pydantic import create_model

    return create_model("CtloopEnvironment", __base__=EnvLayer, **fields)()


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, out)
    else:
        out[prefix] = value


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Settings from the environment (`CTLOOP_*`, read by pydantic-settings) as dotted keys.

    The short names (`CTLOOP_HOME`, `CTLOOP_LAKE`, `CTLOOP_TARGET`, ...) and any setting by its
    path, parts joined by `__` (`CTLOOP_TRIGGERS__COOLDOWN_MINUTES=30`,
    `CTLOOP_DATASET__EXCLUDE=a,b`). A short name wins over the long form of the same setting.
    """
    layer = _env_layer(environ)
    out: dict[str, Any] = {}
    for name, value in layer.model_dump(exclude_none=True).items():
        if name not in SHORT_ENV_NAMES:
            _flatten(name, value, out)
    for name, dotted in SHORT_ENV_NAMES.items():
        value = getattr(layer, name)
        if value:
            out[dotted] = value
    return out


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Load `ctloop.yaml` (or defaults), then environment, then explicit overrides.

    Args:
        path: a config file; when None, `./ctloop.yaml` is used if it exists.
        overrides: dotted keys (`dataset.target`) to values, e.g. from CLI flags; None values
            are ignored.
        environ: the environment to read `CTLOOP_*` from (defaults to `os.environ`).

    Raises:
        ConfigError: one line naming the file, the field and the problem.
    """
    source = "defaults"
    data: dict[str, Any] = {}
    if path is None and Path(CONFIG_FILENAME).is_file():
        path = CONFIG_FILENAME
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}:{where} not valid YAML") from None
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: expected a mapping of settings, got {type(loaded).__name__}"
            )
        data = loaded
    merged = dict(env_overrides(environ))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for dotted, value in merged.items():
        _set_dotted(data, dotted, value)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None


def dump_config(config: Config, path: Path) -> None:
    """Write a config as readable YAML."""
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


# -- dataset settings kept in the home: given once (first ingest, `ctloop init`), used after
DATASET_KEYS = ("target", "task", "timestamp", "id", "exclude")
DATASET_FLAGS = {key: f"--{key}" for key in DATASET_KEYS}


def _comparable(key: str, value: Any) -> Any:
    """A dataset value as the config holds it (`exclude` as a list, `task` as its name)."""
    return DatasetConfig.model_validate({key: value}).model_dump(mode="json")[key]


def kept_dataset(path: Path) -> dict[str, Any]:
    """The dataset settings a home keeps (the `dataset:` section of its ctloop.yaml); {} if none.

    Raises:
        ConfigError: the file is not valid YAML or its `dataset:` is not a mapping.
    """
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    section = loaded.get("dataset") if isinstance(loaded, dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: dataset: expected a mapping of settings")
    return {k: _comparable(k, v) for k, v in section.items() if k in DATASET_KEYS and v}


def reconcile_dataset(
    config: Config, kept: dict[str, Any], kept_in: Path, given: dict[str, str]
) -> Config:
    """The config with the home's kept dataset settings; a contradiction is an error.

    Args:
        config: loaded from the file in use, the environment and the flags.
        kept: the home's settings (`kept_dataset`), the values its lake was ingested with.
        kept_in: the file that keeps them (named in the error).
        given: where each explicitly given dataset setting came from (`--target`, a file...).

    Raises:
        ConfigError: names the setting, the kept and the new value, and how to change it.
    """
    current = config.dataset.model_dump(mode="json")
    updates: dict[str, Any] = {}
    for key, old in kept.items():
        if key not in given:
            updates[key] = old
        elif current[key] != old:
            raise ConfigError(
                f"dataset.{key}: this home keeps {old!r} (in {kept_in}) but {given[key]} says "
                f"{current[key]!r}; to change it, edit dataset.{key} in {kept_in} (the lake's "
                "batches were checked with the old value) or use another --home"
            )
    if not updates:
        return config
    # typed as the model types them (a kept `task: binary` is Task.BINARY, not the text)
    typed = type(config.dataset).model_validate({**current, **updates})
    updates = {k: getattr(typed, k) for k in updates}
    return config.model_copy(update={"dataset": config.dataset.model_copy(update=updates)})


def keep_dataset(path: Path, values: dict[str, Any]) -> dict[str, Any]:
    """Write dataset settings the home does not keep yet into its ctloop.yaml.

    Other settings and values already kept are left as they are. Returns what was added.
    """
    kept = kept_dataset(path)
    added = {k: _comparable(k, v) for k, v in values.items() if v is not None and k not in kept}
    if not added:
        return {}
    data = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    section = data.get("dataset") or {}
    section.update(added)
    data["dataset"] = section
    path.parent.mkdir(parents=True, exist_ok=True)
    # one temporary file per writer: commands ingesting into a new home at once each replace
    # the file whole (with the same settings, or the later one stops at the contradiction)
    import os
    import uuid

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)
    return added
