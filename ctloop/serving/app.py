"""The HTTP face of the model server: FastAPI routes, OpenAPI, errors that name the field."""

from __future__ import annotations

import hmac
import re
import time
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError

from ctloop.serving.admin import AdminError
from ctloop.serving.inputs import (
    MLFLOW_FORMATS,
    FeatureSchema,
    RequestError,
    csv_records,
    describe,
    mlflow_records,
    parse_json,
    shown,
)
from ctloop.serving.server import ModelServer
from ctloop.stores.predlog import SERVED, online_metrics

JSON = "application/json"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ROUTES = {
    "/predict",
    "/invocations",
    "/feedback",
    "/feedback/metrics",
    "/models",
    "/health",
    "/ping",
    "/metrics",
    "/admin/traffic",
    "/admin/promote",
    "/admin/rollback",
    "/admin/reload",
}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    return Response(body, status_code=status, media_type=JSON, headers=headers)


# -- request and response bodies (documentation and typed routes) ------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictResponse(BaseModel):
    request_id: str
    version: int
    semver: str
    target: str = Field(description="champion, challenger or a pinned version 'vN'")
    predictions: list[Any]
    probabilities: list[Any] | None = Field(
        default=None, description="binary: P(positive class); multiclass: {class: p}"
    )
    id_column: str | None = Field(default=None, description="the dataset's declared id column")
    ids: list[Any] | None = Field(
        default=None, description="each record's id as sent (null when a record has none)"
    )


class InvocationsResponse(BaseModel):
    predictions: list[Any]


class FeedbackItem(_Body):
    request_id: StrictStr = Field(min_length=1, max_length=128)
    row: StrictInt = Field(default=0, ge=0, le=1_000_000, description="record index in the request")
    label: StrictBool | StrictInt | StrictFloat | StrictStr = Field(description="the true label")


class TrafficRequest(_Body):
    weights: dict[str, float] = Field(
        description="target -> weight; targets: champion, challenger, or a version 'v3'",
        min_length=1,
    )
    shadow: str | None = Field(default=None, description="target scoring every request, unseen")


class PromoteRequest(_Body):
    version: StrictInt = Field(ge=1, le=10**9)


class ErrorBody(BaseModel):
    detail: str
    field: str | None = None


ERRORS = {
    400: {"model": ErrorBody, "description": "malformed body"},
    401: {"model": ErrorBody, "description": "missing or wrong admin token"},
    413: {"model": ErrorBody, "description": "body or record count over the limit"},
    422: {"model": ErrorBody, "description": "a field is missing, unknown or of the wrong type"},
    503: {"model": ErrorBody, "description": "no model version is live"},
}


def _request_body(schema_ref: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {JSON: {"schema": schema_ref}},
        }
    }


def _predict_schema(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "records": {
                "oneOf": [
                    {"type": "array", "items": record, "minItems": 1, "maxItems": 100},
                    record,
                ]
            },
            "key": {"type": "string", "maxLength": 256, "description": "sticky routing key"},
            "request_id": {"type": "string", "pattern": REQUEST_ID.pattern},
        },
        "required": ["records"],
        "additionalProperties": False,
    }


def _invocations_schema(record: dict[str, Any], features: list[str]) -> dict[str, Any]:
    records = {"type": "array", "items": record, "minItems": 1, "maxItems": 100}
    return {
        "oneOf": [
            {
                "type": "object",
                "properties": {"dataframe_records": records},
                "required": ["dataframe_records"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "dataframe_split": {
                        "type": "object",
                        "properties": {
                            "columns": {
                                "type": "array",
                                "items": {"type": "string", "enum": features},
                                "minItems": len(features),
                                "maxItems": len(features),
                                "uniqueItems": True,
                            },
                            "data": {"type": "array", "items": {"type": "array"}},
                        },
                        "required": ["columns", "data"],
                        "additionalProperties": False,
                    }
                },
                "required": ["dataframe_split"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"instances": records},
                "required": ["instances"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"inputs": records},
                "required": ["inputs"],
                "additionalProperties": False,
            },
        ]
    }


def _feedback_schema() -> dict[str, Any]:
    item = {"$ref": "#/components/schemas/FeedbackItem"}
    return {"oneOf": [item, {"type": "array", "items": item, "minItems": 1}]}


# -- the app ------------------------------------------------------------------------------------


class _Instrument:
    """Pure ASGI middleware: latency, status and version of every request, for /metrics."""

    def __init__(self, app, server: ModelServer):
        self.app = app
        self.server = server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        seen: dict[str, Any] = {"status": 500, "version": "none"}

        async def capture(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-model-version":
                        seen["version"] = value.decode()
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            path = scope.get("path", "")
            route = path if path in ROUTES else "other"
            self.server.metrics.observe(
                route, seen["status"], seen["version"], time.perf_counter() - start
            )


DRAIN_FACTOR = 4  # an oversized body is read and discarded up to this many times the limit


async def _discard(request: Request, bound: int, seen: int = 0) -> None:
    """Read what the client still sends, up to `bound` bytes in all, and drop it.

    A server that answers before reading the body closes a connection with unread bytes, so
    the client's kernel resets it: most clients (urllib, requests) then report a broken pipe or
    a reset instead of the answer. Reading the rest first lets them see the 413.
    """
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > bound:
                return
    except Exception:  # the client went away: nothing left to answer
        return


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 naming the limit (after the client has finished sending)."""
    bound = DRAIN_FACTOR * limit
    # `Expect: 100-continue`: the client waits for a go-ahead, which reading would send
    waiting = request.headers.get("expect", "").lower() == "100-continue"
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        if not waiting and int(length) <= bound:
            await _discard(request, bound)
        raise RequestError(f"body of {int(length)} bytes is over the limit of {limit} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            await _discard(request, bound, size)
            raise RequestError(f"body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _check_json_type(request: Request) -> None:
    kind = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
    if kind not in (JSON, "", "*/*"):
        raise RequestError(f"content type {kind!r}: send application/json", 415)


def create_app(server: ModelServer, manage: bool = True) -> FastAPI:
    """The FastAPI app over a model server.

    Args:
        server: the core; its registry is opened and its versions loaded at startup.
        manage: start the server (and its watcher) with the app and stop it on shutdown.
    """

    @asynccontextmanager
    async def lifespan(_app):
        if manage:
            await run_in_threadpool(server.start)
        try:
            yield
        finally:
            if manage:
                await run_in_threadpool(server.stop)

    app = FastAPI(
        title="ctloop model server",
        version="1",
        description="Several registered versions live: weighted A/B routing (sticky by key), "
        "shadow scoring, hot swap on alias moves, a prediction log and feedback.",
        lifespan=lifespan,
        responses={k: v for k, v in ERRORS.items() if k in (400, 422)},
    )
    app.state.server = server
    _add_error_handlers(app)
    _add_scoring_routes(app, server)
    _add_feedback_routes(app, server)
    _add_state_routes(app, server)
    _add_admin_routes(app, server)
    app.openapi = lambda: _openapi_with_records(app, server)
    app.add_middleware(_Instrument, server=server)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error a client can cause answers 4xx with the field it names."""

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        if request.url.path == "/invocations":  # answered like `mlflow models serve`
            code = "BAD_REQUEST" if exc.status < 500 else "TEMPORARILY_UNAVAILABLE"
            return _json({"error_code": code, "message": exc.message}, exc.status)
        return _json({"detail": exc.message, "field": exc.field}, exc.status)

    @app.exception_handler(AdminError)
    async def _admin_error(_request: Request, exc: AdminError):
        return _json({"detail": str(exc), "field": None}, exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        field = ".".join(loc) or None
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        message = f"{field}: {first['msg']}{more}" if field else f"{first['msg']}{more}"
        return _json({"detail": message, "field": field}, 422)


def _require_admin(request: Request, token: str | None) -> None:
    if not token:
        raise AdminError("admin routes are off: set serving.admin_token (CTLOOP_ADMIN_TOKEN)", 403)
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode(), token.encode()
    ):
        raise AdminError("admin routes need 'Authorization: Bearer <serving.admin_token>'", 401)


def _model_headers(model, request_id: str, target: str) -> dict[str, str]:
    return {
        "x-model-version": str(model.version),
        "x-request-id": request_id,
        "x-model-target": target,
    }


def _predict_arguments(payload: Any, request: Request) -> tuple[Any, str | None, str | None]:
    """The records, routing key and request id of a `/predict` body, each checked."""
    if not isinstance(payload, dict):
        raise RequestError(
            f"body: expected a JSON object with 'records', got {describe(payload)}", 422, "body"
        )
    unknown = [shown(k) for k in payload if k not in ("records", "key", "request_id")]
    if unknown:
        raise RequestError(
            f"{unknown[0]}: unknown key (expected records, key, request_id)", 422, unknown[0]
        )
    if "records" not in payload:
        raise RequestError("records: missing field", 422, "records")
    key = payload.get("key") or request.headers.get("x-routing-key")
    if key is not None and (not isinstance(key, str) or len(key) > 256):
        raise RequestError("key: expected a string of at most 256 characters", 422, "key")
    request_id = payload.get("request_id")
    if request_id is not None and (
        not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id)
    ):
        raise RequestError(
            "request_id: expected 1 to 128 characters of A-Z a-z 0-9 . _ : -",
            422,
            "request_id",
        )
    return payload["records"], key, request_id


def _parse_feedback(payload: Any, max_records: int) -> list[FeedbackItem]:
    """One feedback item or a list of them, each validated; the error names the item."""
    single = not isinstance(payload, list)
    raw = [payload] if single else payload
    if not raw:
        raise RequestError("body: empty list, send at least one feedback item", 422, "body")
    if len(raw) > max_records:
        raise RequestError(f"feedback: at most {max_records} items", 413)
    items: list[FeedbackItem] = []
    for i, entry in enumerate(raw):
        try:
            items.append(FeedbackItem.model_validate(entry))
        except PydanticValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"][:1])
            prefix = "" if single else f"[{i}]"
            field = (f"{prefix}.{loc}".strip(".") if loc else prefix) or "body"
            raise RequestError(f"{field}: {first['msg']}", 422, field) from None
    return items


def _add_scoring_routes(app: FastAPI, server: ModelServer) -> None:
    serving = server.serving

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses={
            **{k: v for k, v in ERRORS.items() if k in (413, 503)},
            409: {"model": ErrorBody, "description": "the request_id was used before"},
        },
        openapi_extra=_request_body(
            {"$ref": "#/components/schemas/PredictRequest"},
            "One record or a list of records; `key` makes routing sticky.",
        ),
        summary="Score records with the version the router picks",
    )
    async def predict(request: Request):
        _check_json_type(request)
        payload = parse_json(await _read_body(request, serving.max_body_bytes))
        records, key, request_id = _predict_arguments(payload, request)
        request_id, target, model, scores, checked = await server.score(
            records, where="records", key=key, request_id=request_id
        )
        body = {
            "request_id": request_id,
            "version": model.version,
            "semver": model.semver,
            "target": target,
            "predictions": scores.predictions,
            "probabilities": scores.probabilities,
        }
        if checked.ids is not None:  # the declared id of each record, as sent
            body["id_column"] = model.schema.id_column
            body["ids"] = checked.ids
        return _json(body, headers=_model_headers(model, request_id, target))

    @app.post(
        "/invocations",
        response_model=InvocationsResponse,
        responses={k: v for k, v in ERRORS.items() if k in (413, 503)},
        openapi_extra=_request_body(
            {"$ref": "#/components/schemas/InvocationsRequest"},
            "MLflow scoring payload: " + ", ".join(MLFLOW_FORMATS) + " (or text/csv)",
        ),
        summary="MLflow-compatible scoring (as `mlflow models serve`)",
    )
    async def invocations(request: Request):
        body = await _read_body(request, serving.max_body_bytes)
        kind = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
        if kind == "text/csv":
            records, where = csv_records(body), "csv"
        elif kind in (JSON, "", "*/*"):
            records, where = mlflow_records(parse_json(body))
            if where == "dataframe_split":
                where = "dataframe_split.data"
        else:
            raise RequestError(
                f"content type {kind!r}: this server takes application/json or text/csv", 415
            )
        key = request.headers.get("x-routing-key")
        request_id, target, model, scores, _ = await server.score(records, where=where, key=key)
        return _json(
            {"predictions": scores.predictions}, headers=_model_headers(model, request_id, target)
        )


def _add_feedback_routes(app: FastAPI, server: ModelServer) -> None:
    serving = server.serving

    @app.post(
        "/feedback",
        openapi_extra=_request_body(
            _feedback_schema(), "True labels by request id (and record index for batches)"
        ),
        responses={404: {"model": ErrorBody, "description": "unknown request id"}},
        summary="Join true labels to logged predictions",
    )
    async def feedback(request: Request):
        _check_json_type(request)
        payload = parse_json(await _read_body(request, serving.max_body_bytes))
        items = _parse_feedback(payload, serving.max_records)
        if server.log is None:
            raise RequestError("the prediction log is off (serving.prediction_log)", 409)
        stored, updates = await run_in_threadpool(_store_feedback, server, items)
        return _json({"stored": stored, "updated": updates > 0, "updated_rows": updates})

    @app.get("/feedback/metrics", summary="Online metrics per version from joined feedback")
    async def feedback_metrics():
        if server.log is None:
            return _json({"versions": []})
        joined = await run_in_threadpool(server.log.joined)
        return _json(
            {
                "versions": online_metrics(joined, str(server.config.dataset.task)),
                "labelled": len(joined),
            }
        )


def _add_state_routes(app: FastAPI, server: ModelServer) -> None:
    @app.get("/models", summary="Live versions, traffic shares, shadow, swaps")
    async def models():
        return _json(server.describe())

    @app.get("/health", summary="200 when a version is live, 503 before")
    async def health():
        data = server.health()
        return _json(data, 200 if data["status"] == "ok" else 503)

    @app.get("/ping", include_in_schema=False)
    async def ping():
        return await health()

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics():
        if server.log is not None:
            for state, value in server.log.stats.items():
                server.metrics.log_rows.labels(state).set(value)
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4")


def _add_admin_routes(app: FastAPI, server: ModelServer) -> None:
    """Traffic, promotion, rollback and reload: a bearer token (`serving.admin_token`)."""
    token = server.serving.admin_token
    admin_errors = {
        401: ERRORS[401],
        403: {"model": ErrorBody, "description": "admin routes are off"},
        404: {"model": ErrorBody, "description": "unknown version or target"},
        409: {"model": ErrorBody, "description": "the version failed warm-up, or nothing to do"},
    }

    @app.post("/admin/traffic", responses=admin_errors, summary="Set traffic weights and shadow")
    async def set_traffic(body: TrafficRequest, request: Request):
        _require_admin(request, token)
        return _json(await run_in_threadpool(server.set_traffic, body.weights, body.shadow))

    @app.post("/admin/promote", responses=admin_errors, summary="Make a version the champion")
    async def promote(body: PromoteRequest, request: Request):
        _require_admin(request, token)
        return _json(await run_in_threadpool(server.promote, body.version))

    @app.post("/admin/rollback", responses=admin_errors, summary="Return to the previous champion")
    async def rollback(request: Request):
        _require_admin(request, token)
        return _json(await run_in_threadpool(server.rollback))

    @app.post("/admin/reload", responses=admin_errors, summary="Look up the aliases now")
    async def reload(request: Request):
        _require_admin(request, token)
        changes = await run_in_threadpool(server.refresh)
        return _json({"changes": changes, "live": server.describe()})


def _openapi_with_records(app: FastAPI, server: ModelServer) -> dict[str, Any]:
    """The OpenAPI document, with record schemas of the version live behind the champion."""
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    live = server.live
    model = live.models.get("champion") or next(iter(live.models.values()), None)
    features = model.schema if model is not None else FeatureSchema((), ())
    record = features.record_json_schema()
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Record"] = record
    ref = {"$ref": "#/components/schemas/Record"}
    components["PredictRequest"] = _predict_schema(ref)
    components["InvocationsRequest"] = _invocations_schema(ref, list(features.features))
    components["FeedbackItem"] = FeedbackItem.model_json_schema()
    return schema


def _store_feedback(server: ModelServer, items: list[FeedbackItem]) -> tuple[int, int]:
    """Check and store labels: (stored, updates of rows labelled before)."""
    log = server.log
    log.flush()
    classes_by_version = {m.version: m.classes for m in server.cache.values()}
    regression = str(server.config.dataset.task) == "regression"
    rows: list[tuple[str, int, Any]] = []
    for i, item in enumerate(items):
        at = f"[{i}]" if len(items) > 1 else ""
        served = log.served_rows(item.request_id)
        if not served:
            raise RequestError(
                f"{at}request_id: {item.request_id!r} is not in the prediction log",
                404,
                f"{at}request_id".lstrip("."),
            )
        if item.row not in served:
            raise RequestError(
                f"{at}row: request {item.request_id!r} has records 0..{max(served)}",
                422,
                f"{at}row",
            )
        label = item.label
        if regression:
            if isinstance(label, bool) or not isinstance(label, int | float):
                raise RequestError(
                    f"{at}label: expected a number for regression", 422, f"{at}label"
                )
        else:
            classes = classes_by_version.get(served[item.row])
            if classes is not None and label not in classes and str(label) not in map(str, classes):
                raise RequestError(
                    f"{at}label: {label!r} is not a class of version {served[item.row]} "
                    f"({', '.join(map(str, classes))})",
                    422,
                    f"{at}label",
                )
        rows.append((item.request_id, item.row, label))
    return log.record_feedback(rows)


__all__ = ["SERVED", "create_app"]
