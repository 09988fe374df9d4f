"""Shared names: events, registry aliases, drift methods, the config file. No imports, no logic.

Every module that emits, matches or lists one of these names takes it from here, so an event
name or an alias is written once.
"""

# -- events (Prefect events, webhook notifications, deployment triggers)
BATCH_ACCEPTED = "ctloop.batch.accepted"
BATCH_QUARANTINED = "ctloop.batch.quarantined"
DRIFT_DETECTED = "ctloop.drift.detected"
PERFORMANCE_DEGRADED = "ctloop.performance.degraded"
MODEL_REFUSED = "ctloop.model.refused"
MODEL_PROMOTED = "ctloop.model.promoted"
MODEL_CHALLENGER = "ctloop.model.challenger"
MODEL_ROLLED_BACK = "ctloop.model.rolled_back"

# the events a webhook receives unless `notifications.events` says otherwise
NOTIFIED_EVENTS = (
    BATCH_QUARANTINED,
    DRIFT_DETECTED,
    PERFORMANCE_DEGRADED,
    MODEL_REFUSED,
    MODEL_PROMOTED,
    MODEL_ROLLED_BACK,
)

# the resource label that ties an event to its project
PROJECT_LABEL = "ctloop.project"

# -- registry aliases
CHAMPION = "champion"
CHALLENGER = "challenger"

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
