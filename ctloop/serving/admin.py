"""Promotion and rollback of the `champion` alias, shared by the server's admin routes and the CLI.

A promotion remembers the champion it replaced (a tag on the registered model), so a rollback
returns to it; before the first remembered promotion, rollback falls back to the newest blessed
version older than the champion. A version is validated (loaded and warmed up) before the
alias moves, so a version that cannot serve is never promoted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ctloop.errors import CtloopError
from ctloop.registry.store import CHALLENGER, CHAMPION, ModelRef

HISTORY_TAG = "ctloop.champion_history"
HISTORY_LIMIT = 50


class AdminError(CtloopError):
    """An admin action that cannot be done; `status` is its HTTP status."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


def champion_history(registry) -> list[int]:
    """Previous champions, oldest first."""
    from mlflow.exceptions import MlflowException

    try:
        tags = registry.client.get_registered_model(registry.name).tags or {}
    except MlflowException:
        return []
    return [int(v) for v in tags.get(HISTORY_TAG, "").split(",") if v.strip().isdigit()]


def _save_history(registry, history: list[int]) -> None:
    value = ",".join(str(v) for v in history[-HISTORY_LIMIT:])
    registry.client.set_registered_model_tag(registry.name, HISTORY_TAG, value)


def promote(
    registry, version: int, validate: Callable[[ModelRef], Any] | None = None
) -> dict[str, Any]:
    """Make `version` the champion (after `validate(ref)` passes); the old one is remembered.

    Raises:
        AdminError: 404 for an unknown version; `validate`'s own error when it fails.
    """
    ref = registry.version(version)
    if ref is None:
        raise AdminError(f"version {version}: not in the registry '{registry.name}'", 404)
    current = registry.by_alias(CHAMPION)
    if current is not None and current.version == ref.version:
        return {"champion": ref.version, "previous": current.version, "changed": False}
    if validate is not None:
        validate(ref)
    if current is not None:
        _save_history(registry, [*champion_history(registry), current.version])
    registry.set_alias(CHAMPION, ref.version)
    challenger = registry.by_alias(CHALLENGER)
    if challenger is not None and challenger.version == ref.version:
        registry.delete_alias(CHALLENGER)
    return {
        "champion": ref.version,
        "semver": ref.semver,
        "previous": current.version if current else None,
        "changed": True,
    }


def rollback_target(registry) -> tuple[ModelRef, list[int]]:
    """The version a rollback returns to, and the history left after it."""
    current = registry.by_alias(CHAMPION)
    if current is None:
        raise AdminError("no champion: nothing to roll back", 409)
    history = champion_history(registry)
    while history:
        candidate = history.pop()
        if candidate == current.version:
            continue
        ref = registry.version(candidate)
        if ref is not None:
            return ref, history
    older = [
        v
        for v in registry.versions()
        if v.version < current.version and v.tags.get("ctloop.blessed", "true") == "true"
    ]
    if older:
        return older[-1], []
    raise AdminError(f"version {current.version} is the only champion there has been", 409)


def rollback(registry, validate: Callable[[ModelRef], Any] | None = None) -> dict[str, Any]:
    """Return the champion alias to the previous champion (validated first)."""
    current = registry.by_alias(CHAMPION)
    target, history = rollback_target(registry)
    if validate is not None:
        validate(target)
    registry.set_alias(CHAMPION, target.version)
    _save_history(registry, history)
    return {
        "champion": target.version,
        "semver": target.semver,
        "previous": current.version if current else None,
        "changed": True,
    }
