"""Traffic routing: weighted targets, sticky by a request key, and the names of targets."""

from __future__ import annotations

import bisect
import hashlib
import random
import re
from dataclasses import dataclass

from ctloop.registry.store import CHALLENGER, CHAMPION

_PINNED = re.compile(r"^v?([1-9][0-9]{0,8})$")


def parse_target(name: str) -> tuple[str, int | None]:
    """A target is an alias (`champion`, `challenger`) or a pinned version (`v3` or `3`).

    Returns:
        (canonical name, pinned version or None).

    Raises:
        ValueError: naming the target.
    """
    if name in (CHAMPION, CHALLENGER):
        return name, None
    match = _PINNED.match(str(name))
    if match:
        version = int(match.group(1))
        return f"v{version}", version
    raise ValueError(f"target {name!r}: expected 'champion', 'challenger' or a version like 'v3'")


def key_point(key: str) -> float:
    """A stable point in [0, 1) for a request key (the same in every process and run)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Router:
    """Chooses a target by weight: a random point per request, or the key's point when sticky."""

    targets: tuple[str, ...]
    bounds: tuple[float, ...]

    @classmethod
    def from_weights(cls, weights: dict[str, float]) -> Router:
        kept = [(t, w) for t, w in weights.items() if w > 0]
        total = sum(w for _, w in kept)
        if not kept or total <= 0:
            raise ValueError("no target has a positive weight")
        bounds, acc = [], 0.0
        for _, weight in kept:
            acc += weight / total
            bounds.append(acc)
        bounds[-1] = 1.0
        return cls(tuple(t for t, _ in kept), tuple(bounds))

    def shares(self) -> dict[str, float]:
        previous, out = 0.0, {}
        for target, bound in zip(self.targets, self.bounds, strict=True):
            out[target] = round(bound - previous, 6)
            previous = bound
        return out

    def choose(self, key: str | None = None) -> str:
        point = key_point(key) if key else random.random()
        return self.targets[min(bisect.bisect_right(self.bounds, point), len(self.targets) - 1)]
