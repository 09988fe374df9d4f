"""The model server's core: live versions by target, routing, micro-batching, hot swap, shadow.

Routing state is one immutable `Live` object; a swap builds a new one off the request path (load,
warm up) and replaces it with a single assignment, so a request always sees one consistent state
and keeps the model it started with. Concurrent requests to a version are scored together in one
model call (micro-batching) on a worker thread, so the event loop keeps reading requests.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ctloop.config.settings import Config
from ctloop.registry.store import CHALLENGER, CHAMPION, ModelRef
from ctloop.serving import admin
from ctloop.serving.inputs import Records, RequestError, check_records, concat_columns
from ctloop.serving.metrics import ServingMetrics
from ctloop.serving.models import (
    LoadedModel,
    Scores,
    WarmupFailed,
    load_version,
    read_dataset_inputs,
    warm_up,
)
from ctloop.serving.routing import Router, parse_target
from ctloop.stores.predlog import SERVED, SHADOW, LoggedPrediction, PredictionLog

log = logging.getLogger("ctloop.serving")
CACHE_VERSIONS = 6


@dataclass(frozen=True)
class Live:
    """What serves now: a model per target, the router over them, and the shadow."""

    models: dict[str, LoadedModel] = field(default_factory=dict)
    router: Router | None = None
    shadow: tuple[str, LoadedModel] | None = None


def _one_thread() -> None:
    """Scoring threads use one OpenMP/BLAS thread: a small batch gains nothing from more, and
    on a busy machine OpenMP's spinning workers make a one-row predict many times slower."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


class Batcher:
    """Scores the requests that wait for one model together, one model call at a time."""

    def __init__(self, model: LoadedModel, executor: ThreadPoolExecutor, max_rows: int):
        self.model = model
        self.executor = executor
        self.max_rows = max_rows
        self.pending: list[tuple[dict[str, list], int, asyncio.Future]] = []
        self.running = False

    async def submit(self, columns: dict[str, list], n: int) -> Scores:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((columns, n, future))
        if not self.running:
            self.running = True
            loop.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[dict[str, list], int, asyncio.Future]]:
        taken, rows = [], 0
        while self.pending and (not taken or rows + self.pending[0][1] <= self.max_rows):
            item = self.pending.pop(0)
            taken.append(item)
            rows += item[1]
        return taken

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                batch = self._take()
                names = self.model.schema.features
                try:
                    merged = concat_columns([c for c, _, _ in batch], names)
                    scores = await loop.run_in_executor(
                        self.executor, self.model.score_columns, merged
                    )
                except Exception:
                    if len(batch) == 1:
                        _, _, future = batch[0]
                        if not future.done():
                            future.set_exception(self._unscorable(batch[0][0]))
                        continue
                    # one request spoiled the batch: score each alone so only it fails
                    for columns, _, future in batch:
                        try:
                            alone = await loop.run_in_executor(
                                self.executor, self.model.score_columns, columns
                            )
                        except Exception:
                            alone = None
                        if not future.done():
                            if alone is None:
                                future.set_exception(self._unscorable(columns))
                            else:
                                future.set_result(alone)
                    continue
                start = 0
                for _, n, future in batch:
                    if not future.done():
                        future.set_result(scores.slice(start, start + n))
                    start += n
        finally:
            self.running = False

    def _unscorable(self, columns: dict[str, list]) -> RequestError:
        return RequestError(
            f"version {self.model.version} could not score these records "
            "(check the values of the categorical fields)",
            422,
        )


class ModelServer:
    """Several registered versions live at once, with weights, shadow, hot swap and a log."""

    def __init__(
        self,
        config: Config,
        registry=None,
        prediction_log: PredictionLog | None = None,
    ):
        self.config = config
        self.serving = config.serving
        self.registry = registry
        self.log = prediction_log
        dataset = config.dataset
        self.passthrough = tuple(
            c
            for c in (dataset.id, dataset.timestamp, *dataset.exclude)
            if c and c != dataset.target
        )
        self.metrics = ServingMetrics()
        self.weights: dict[str, float] = {}
        for target, weight in self.serving.weights().items():
            self.weights[parse_target(target)[0]] = weight
        self.shadow_target = (
            parse_target(self.serving.shadow_target)[0] if self.serving.shadow else None
        )
        self.live = Live()
        self.cache: dict[int, LoadedModel] = {}
        self.failed: dict[int, str] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=50)
        self.started_at = time.time()
        self._refresh_lock = threading.RLock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix="ctloop-predict", initializer=_one_thread
        )
        self._shadow_executor = ThreadPoolExecutor(
            1, thread_name_prefix="ctloop-shadow", initializer=_one_thread
        )
        self._batchers: dict[tuple[int, str], Batcher] = {}
        self._background: set[asyncio.Task] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, watch: bool = True) -> ModelServer:
        """Open the registry and the log, load what the aliases name, watch them move."""
        if self.registry is None:
            from ctloop.registry.store import open_registry

            self.registry = open_registry(self.config)
        if self.log is None and self.serving.prediction_log:
            from ctloop.stores.home import home_of
            from ctloop.stores.predlog import default_log_url

            url = self.serving.prediction_log_url or default_log_url(home_of(self.config).root)
            self.log = PredictionLog(
                url,
                self.serving.log_batch_rows,
                self.serving.log_flush_seconds,
                self.serving.log_queue_rows,
            )
        if self.log is not None:
            self.log.start()
        self.refresh()
        if watch and self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="ctloop-watch", daemon=True)
            self._watcher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
            self._watcher = None
        self._executor.shutdown(wait=True)
        self._shadow_executor.shutdown(wait=True)
        if self.log is not None:
            self.log.close()

    def _watch(self) -> None:
        while not self._stop.wait(self.serving.poll_seconds):
            try:
                self.refresh()
            except Exception:  # the registry is unreachable: keep serving what is live
                log.exception("model server: refresh failed; keeping the live versions")

    # -- versions -------------------------------------------------------------------------------

    def _resolve(self, target: str) -> ModelRef | None:
        name, version = parse_target(target)
        if version is not None:
            return self.registry.version(version)
        return self.registry.by_alias(name)

    def obtain(self, ref: ModelRef) -> LoadedModel:
        """A loaded, warmed-up model for a version (cached).

        Raises:
            WarmupFailed: it cannot be loaded or fails warm-up (remembered: not retried).
        """
        if ref.version in self.cache:
            return self.cache[ref.version]
        if ref.version in self.failed:
            raise WarmupFailed(ref.version, self.failed[ref.version])
        try:
            # the lake's schema as it is now: id, booleans and personal data of the dataset
            inputs = read_dataset_inputs(self.config)
            model = warm_up(
                load_version(self.registry, ref, self.passthrough, inputs),
                self.serving.warmup_rows,
            )
        except WarmupFailed as exc:
            self._failed(ref.version, exc.reason)
            raise
        except Exception as exc:
            reason = f"load failed: {type(exc).__name__}: {exc}"
            self._failed(ref.version, reason)
            raise WarmupFailed(ref.version, reason) from exc
        self.cache[ref.version] = model
        return model

    def _failed(self, version: int, reason: str) -> None:
        self.failed[version] = reason
        self.metrics.swaps.labels("warmup_failed").inc()
        self.events.append({"time": time.time(), "version": version, "ok": False, "reason": reason})
        log.warning("version %s not swapped in: %s", version, reason)

    def refresh(self) -> list[dict[str, Any]]:
        """Look up every target, load and warm up what moved, then swap atomically.

        A target whose new version fails warm-up keeps serving its current version.
        """
        with self._refresh_lock:
            current = self.live
            old = dict(current.models)
            if current.shadow is not None:
                old.setdefault(current.shadow[0], current.shadow[1])
            wanted = list(self.weights)
            if self.shadow_target and self.shadow_target not in wanted:
                wanted.append(self.shadow_target)
            models: dict[str, LoadedModel] = {}
            changes: list[dict[str, Any]] = []
            for target in wanted:
                ref = self._resolve(target)
                before = old.get(target)
                if ref is None:
                    continue
                if before is not None and before.version == ref.version:
                    models[target] = before
                    continue
                try:
                    models[target] = self.obtain(ref)
                except WarmupFailed:
                    if before is not None:
                        models[target] = before
                    continue
                changes.append(
                    {
                        "time": time.time(),
                        "target": target,
                        "version": ref.version,
                        "previous": before.version if before else None,
                        "ok": True,
                    }
                )
            routed = {t: w for t, w in self.weights.items() if t in models and w > 0}
            router = Router.from_weights(routed) if routed else None
            shadow = None
            if self.shadow_target and self.shadow_target in models:
                shadow = (self.shadow_target, models[self.shadow_target])
            self.live = Live(
                {t: m for t, m in models.items() if t in routed}, router, shadow
            )  # the swap: one assignment
            for change in changes:
                self.events.append(change)
                self.metrics.swaps.labels("ok").inc()
                log.info("%s is now version %s", change["target"], change["version"])
            self._update_gauges()
            self._evict()
            return changes

    def _evict(self) -> None:
        live = {m.version for m in self.live.models.values()}
        if self.live.shadow:
            live.add(self.live.shadow[1].version)
        spare = [v for v in self.cache if v not in live]
        for version in spare[: max(0, len(self.cache) - CACHE_VERSIONS)]:
            self.cache.pop(version, None)
            for key in [k for k in self._batchers if k[0] == version]:
                self._batchers.pop(key, None)

    def _update_gauges(self) -> None:
        self.metrics.live_version.clear()
        self.metrics.traffic.clear()
        for target, model in self.live.models.items():
            self.metrics.live_version.labels(target).set(model.version)
        if self.live.shadow:
            self.metrics.live_version.labels(f"shadow:{self.live.shadow[0]}").set(
                self.live.shadow[1].version
            )
        if self.live.router:
            for target, share in self.live.router.shares().items():
                self.metrics.traffic.labels(target).set(share)

    # -- admin ----------------------------------------------------------------------------------

    def _validate(self, ref: ModelRef) -> None:
        try:
            self.obtain(ref)
        except WarmupFailed as exc:
            raise admin.AdminError(str(exc), 409) from None

    def set_traffic(self, weights: dict[str, float], shadow: str | None) -> dict[str, Any]:
        """New weights (and shadow target); every target must resolve and pass warm-up."""
        parsed: dict[str, float] = {}
        for target, weight in weights.items():
            try:
                name = parse_target(target)[0]
            except ValueError as exc:
                raise admin.AdminError(f"weights.{target}: {exc}", 422) from None
            if weight < 0:
                raise admin.AdminError(f"weights.{target}: {weight} is negative", 422)
            parsed[name] = parsed.get(name, 0.0) + float(weight)
        if sum(parsed.values()) <= 0:
            raise admin.AdminError("weights: no target has a positive weight", 422)
        shadow_name = None
        if shadow:
            try:
                shadow_name = parse_target(shadow)[0]
            except ValueError as exc:
                raise admin.AdminError(f"shadow: {exc}", 422) from None
        with self._refresh_lock:
            for target in [t for t, w in parsed.items() if w > 0] + (
                [shadow_name] if shadow_name else []
            ):
                ref = self._resolve(target)
                if ref is None:
                    raise admin.AdminError(f"target {target}: no such alias or version", 404)
                self._validate(ref)
            self.weights, self.shadow_target = parsed, shadow_name
            self.refresh()
        return self.describe()

    def promote(self, version: int) -> dict[str, Any]:
        with self._refresh_lock:
            result = admin.promote(self.registry, version, validate=self._validate)
            self.refresh()
        self._notify("ctloop.model.promoted", result)
        return {**result, "live": self.describe()}

    def rollback(self) -> dict[str, Any]:
        with self._refresh_lock:
            result = admin.rollback(self.registry, validate=self._validate)
            self.refresh()
        self._notify("ctloop.model.rolled_back", result)
        return {**result, "live": self.describe()}

    def _notify(self, event: str, result: dict[str, Any]) -> None:
        from ctloop.loop.notify import notify_in_background

        if result.get("changed", True):
            payload = {**result, "by": "model server"}
            notify_in_background(self.config.notifications, event, payload, self.config.project)

    # -- scoring --------------------------------------------------------------------------------

    def _batcher(self, model: LoadedModel, role: str) -> Batcher:
        key = (model.version, role)
        batcher = self._batchers.get(key)
        if batcher is None or batcher.model is not model:
            executor = self._shadow_executor if role == SHADOW else self._executor
            batcher = Batcher(model, executor, self.serving.max_batch)
            self._batchers[key] = batcher
        return batcher

    def route(self, key: str | None) -> tuple[str, LoadedModel, Live]:
        live = self.live
        if live.router is None:
            raise RequestError("no model version is live yet (is there a champion?)", 503)
        target = live.router.choose(key)
        return target, live.models[target], live

    async def score(
        self,
        payload: Any,
        *,
        where: str,
        key: str | None = None,
        request_id: str | None = None,
    ) -> tuple[str, str, LoadedModel, Scores, Records]:
        """Route, check and score records; log them and hand them to the shadow.

        Returns:
            (request id, target, model, scores, records).
        """
        target, model, live = self.route(key)
        records = check_records(payload, model.schema, where, self.serving.max_records)
        if request_id is not None and self.log is not None:
            await self._claim(request_id)
            try:
                scores = await self._batcher(model, SERVED).submit(records.columns, records.n)
            except BaseException:
                self.log.release(request_id)
                raise
        else:
            scores = await self._batcher(model, SERVED).submit(records.columns, records.n)
        request_id = request_id or uuid.uuid4().hex
        self.metrics.predictions.labels(str(model.version), SERVED).inc(records.n)
        now = time.time()
        if self.log is not None:
            self._log(request_id, now, model, target, SERVED, records, scores, key)
        if live.shadow is not None:
            task = asyncio.get_running_loop().create_task(
                self._shadow(live.shadow, payload, where, request_id, now, key)
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return request_id, target, model, scores, records

    async def _claim(self, request_id: str) -> None:
        """A client's request id names one request: a reused one is refused (409)."""
        if not await asyncio.to_thread(self.log.claim, request_id):
            raise RequestError(
                f"request_id: {request_id!r} was already used; a request id names one "
                "request (send a new one, or none and the server makes one)",
                409,
                "request_id",
            )

    async def _shadow(self, shadow, payload, where, request_id, now, key) -> None:
        target, model = shadow
        try:
            records = check_records(payload, model.schema, where, self.serving.max_records)
            scores = await self._batcher(model, SHADOW).submit(records.columns, records.n)
        except Exception as exc:  # never reaches the client; counted and logged
            self.metrics.shadow_errors.labels(str(model.version)).inc()
            log.debug("shadow version %s failed: %s", model.version, exc)
            return
        self.metrics.predictions.labels(str(model.version), SHADOW).inc(records.n)
        if self.log is not None:
            self._log(request_id, now, model, target, SHADOW, records, scores, key)

    def _log(self, request_id, now, model, target, role, records, scores, key) -> None:
        rows = records.rows(model.schema)
        probs = scores.probabilities
        self.log.append(
            [
                LoggedPrediction(
                    request_id,
                    i,
                    now,
                    model.version,
                    target,
                    role,
                    rows[i],
                    scores.predictions[i],
                    probs[i] if probs is not None and not isinstance(probs[i], dict) else None,
                    key,
                )
                for i in range(records.n)
            ]
        )

    # -- reads ----------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        live = self.live
        shares = live.router.shares() if live.router else {}
        return {
            "models": [
                {"target": t, "traffic": shares.get(t, 0.0), **m.describe()}
                for t, m in live.models.items()
            ],
            "shadow": (
                {"target": live.shadow[0], **live.shadow[1].describe()} if live.shadow else None
            ),
            "weights": dict(self.weights),
            "failed": [{"version": v, "reason": r} for v, r in self.failed.items()],
            "events": list(self.events)[-10:],
        }

    def health(self) -> dict[str, Any]:
        live = self.live
        return {
            "status": "ok" if live.router is not None else "no_model",
            "versions": {t: m.version for t, m in live.models.items()},
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "prediction_log": self.log.stats if self.log is not None else None,
        }


__all__ = ["CHAMPION", "CHALLENGER", "Live", "ModelServer"]
