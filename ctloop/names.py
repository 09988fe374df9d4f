"""Shared names: events, aliases, run tags, drift methods, the config file. No imports, no logic.

Every module that emits, matches or lists one of these names takes it from here, so an event
name or an alias is written once.
"""

# -- events (Prefect events, webhook notifications, deployment triggers)
BATCH_ACCEPTED = "ctloop.batch.accepted"
BATCH_QUARANTINED = "ctloop.batch.quarantined"
DRIFT_DETECTED = "ctloop.drift.detected"
PERFORMANCE_DEGRADED = "ctloop.performance.degraded"
# the label-free estimate of the champion's metric dropped (before the labels came)
PERFORMANCE_ESTIMATED_DROP = "ctloop.performance.estimated_drop"
MODEL_REFUSED = "ctloop.model.refused"
MODEL_PROMOTED = "ctloop.model.promoted"
MODEL_CHALLENGER = "ctloop.model.challenger"
MODEL_ROLLED_BACK = "ctloop.model.rolled_back"

# the events a webhook receives unless `notifications.events` says otherwise
NOTIFIED_EVENTS = (
    BATCH_QUARANTINED,
    DRIFT_DETECTED,
    PERFORMANCE_DEGRADED,
    PERFORMANCE_ESTIMATED_DROP,
    MODEL_REFUSED,
    MODEL_PROMOTED,
    MODEL_ROLLED_BACK,
)

# the resource label that ties an event to its project
PROJECT_LABEL = "ctloop.project"

# -- registry aliases
CHAMPION = "champion"
CHALLENGER = "challenger"

# -- run and version tags (the MLflow training run; a registered version carries them too)
TAG_TRIGGER = "ctloop.trigger"
TAG_REASON = "ctloop.reason"
TAG_SNAPSHOTS = "ctloop.snapshots"
TAG_SNAPSHOT_DIGESTS = "ctloop.snapshot_digests"
TAG_GIT_COMMIT = "ctloop.git_commit"
TAG_SIGNATURE = "ctloop.signature"
TAG_TRAINED_ON = "ctloop.trained_on"
TAG_WINDOW = "ctloop.window"  # which candidate window was chosen, and every one's score
TAG_SPLIT = "ctloop.split"
TAG_FAMILY = "ctloop.family"
TAG_PARAMS = "ctloop.params"
TAG_RECIPE_PARAMS = "ctloop.recipe_params"
TAG_BLESSED = "ctloop.blessed"
TAG_BLESSING = "ctloop.blessing"
TAG_PREFECT_FLOW_RUN = "ctloop.prefect_flow_run"
TAG_PREFECT_FLOW_RUN_URL = "ctloop.prefect_flow_run_url"
# where `ctloop ui` / `ctloop up` serve a home's Prefect UI by default (`--prefect-port`)
DEFAULT_PREFECT_PORT = 4200
DEFAULT_PREFECT_UI = f"http://127.0.0.1:{DEFAULT_PREFECT_PORT}"
# MLflow shows this run tag as the run's description
TAG_NOTE = "mlflow.note.content"
TAG_REVIEW = "ctloop.review"
TAG_REVIEW_REASON = "ctloop.review_reason"
TAG_SPLIT_WARNING = "ctloop.split_warning"
TAG_DP_EPSILON = "ctloop.dp_epsilon"
TAG_TUNING_STUDY = "ctloop.tuning_study"
# on the registered version only: its semantic version
TAG_SEMVER = "semver"
# sha256 of a version's MLmodel and model file, recorded at registration, checked at load
TAG_ARTIFACT_DIGEST = "ctloop.artifact_digest"

# Evidently's stat tests by how their score reads: a distance drifts at or above the threshold,
# a p-value below it. `DriftConfig` only accepts names from these two sets.
DISTANCE_METHODS = frozenset({"wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "ed"})
P_VALUE_METHODS = frozenset(
    {
        "ks",
        "chisquare",
        "z",
        "t_test",
        "mannw",
        "anderson",
        "cramer_von_mises",
        "es",
        "fisher_exact",
        "g_test",
        "TVD",
        "empirical_mmd",
    }
)

# -- the config file (`./ctloop.yaml`, or the one in the home)
CONFIG_FILENAME = "ctloop.yaml"
