"""The edge of the control plane: routes, the response envelope and the error mapping.

Every route is declared through :class:`ResourceApi.route`, which registers it on a Chalice
Blueprint *and* in :data:`ROUTES` (from which ``/openapi.json`` is generated). The wrapper
authenticates the caller, parses the body and query into pydantic models, opens one unit of
work, calls the handler, and renders the result or the error in the EasyMaker envelope::

    {"header": {"isSuccessful": true, "resultCode": 0, "resultMessage": "SUCCESS"}, "x": {...}}
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic
import pydantic_core
from chalice import Blueprint, Response
from chalice.app import Request
from pydantic.alias_generators import to_snake
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from chalicelib import errors
from chalicelib.domain.common import Paging
from chalicelib.observability import logger
from chalicelib.services import auth, idempotency
from chalicelib.store.db import Database, get_database

API_PREFIX = "/v1.0/appkeys/{appkey}"
ANY_CONTENT_TYPE = ["*/*"]  # bodies are checked by our parser, so errors stay in the envelope


@dataclass
class RequestContext:
    appkey: str
    request_id: str
    session: Session
    request: Request
    # Work to do once the unit of work has committed (dispatching a job to the runners).
    after_commit: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class ListResult:
    items: list[Any]
    paging: Paging


@dataclass
class RouteSpec:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    body: type[pydantic.BaseModel] | None = None
    query: type[pydantic.BaseModel] | None = None
    response_key: str | None = None
    response_model: type[pydantic.BaseModel] | None = None
    is_list: bool = False
    status: int = 200
    authenticated: bool = True
    idempotent_create: bool = False
    raw: bool = False
    path_params: list[str] = field(default_factory=list)


ROUTES: list[RouteSpec] = []

Handler = Callable[..., Any]


class ResourceApi:
    """One Blueprint per resource; ``route`` declares an enveloped, documented route."""

    def __init__(self, import_name: str, tag: str) -> None:
        self.blueprint = Blueprint(import_name)
        self.tag = tag

    def route(
        self,
        path: str,
        method: str,
        *,
        summary: str,
        body: type[pydantic.BaseModel] | None = None,
        query: type[pydantic.BaseModel] | None = None,
        response_key: str | None = None,
        response_model: type[pydantic.BaseModel] | None = None,
        is_list: bool = False,
        status: int = 200,
        authenticated: bool = True,
        prefixed: bool = True,
        raw: bool = False,
    ) -> Callable[[Handler], Handler]:
        full_path = (API_PREFIX + path) if prefixed else path
        spec = RouteSpec(
            method=method,
            path=full_path,
            operation_id="",
            summary=summary,
            tag=self.tag,
            body=body,
            query=query,
            response_key=response_key,
            response_model=response_model,
            is_list=is_list,
            status=status,
            authenticated=authenticated,
            idempotent_create=method == "POST",
            raw=raw,
            path_params=[p[1:-1] for p in full_path.split("/") if p.startswith("{")],
        )

        def decorator(handler: Handler) -> Handler:
            spec.operation_id = handler.__name__
            blueprint = self.blueprint

            def view(**path_params: str) -> Response:
                return dispatch(spec, handler, blueprint.current_request, path_params)

            view.__name__ = handler.__name__
            content_types = ANY_CONTENT_TYPE if method in ("POST", "PUT", "PATCH") else None
            options: dict[str, Any] = {"methods": [method]}
            if content_types:
                options["content_types"] = content_types
            blueprint.route(full_path, **options)(view)
            ROUTES.append(spec)
            return handler

        return decorator


def header(code: int = 0, message: str = "SUCCESS") -> dict[str, Any]:
    return {"isSuccessful": code == 0, "resultCode": code, "resultMessage": message}


def json_response(status: int, payload: dict[str, Any], request_id: str) -> Response:
    return Response(
        body=to_json_text(payload),
        status_code=status,
        headers={"Content-Type": "application/json", "X-Request-Id": request_id},
    )


def error_response(error: errors.OpenMakerError, request_id: str) -> Response:
    payload: dict[str, Any] = {"header": header(error.result_code, error.message)}
    if error.details:
        payload["header"]["errors"] = error.details
    payload["header"]["requestId"] = request_id
    return json_response(error.http_status, payload, request_id)


def render(spec: RouteSpec, result: Any) -> dict[str, Any]:
    """The success envelope; models stay models so ``to_json`` serializes them in one pass."""
    if spec.raw:
        return dict(result)
    payload: dict[str, Any] = {"header": header()}
    if spec.response_key is None or result is None:
        return payload
    if isinstance(result, ListResult):
        payload[spec.response_key] = result.items
        payload["paging"] = result.paging
    else:
        payload[spec.response_key] = result
    return payload


def to_json_text(payload: dict[str, Any]) -> str:
    return pydantic_core.to_json(payload, by_alias=True).decode()


def validation_error(exc: pydantic.ValidationError, where: str) -> errors.OpenMakerError:
    """Name the field and the rule; never echo the input (it may hold a secret)."""
    details = []
    for item in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(part) for part in item["loc"]) or where
        details.append({"field": loc, "rule": item["type"], "message": item["msg"]})
    if any(d["rule"] == "json_invalid" for d in details):
        return errors.MalformedBodyError("request body is not valid JSON", details=details)
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return errors.ValidationError(f"invalid {where}: {summary}", details=details)


def _raw(request: Request) -> bytes:
    raw = request.raw_body or b""
    return raw.encode() if isinstance(raw, str) else raw


def parse_body(spec: RouteSpec, request: Request) -> pydantic.BaseModel | None:
    if spec.body is None:
        return None
    raw = _raw(request)
    if not raw.strip():
        raw = b"{}"
    try:
        return spec.body.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise validation_error(exc, "request body") from None


def parse_query(spec: RouteSpec, request: Request) -> pydantic.BaseModel | None:
    if spec.query is None:
        return None
    params = request.query_params
    data: dict[str, Any] = {}
    if params:
        for name, info in spec.query.model_fields.items():
            key = info.alias or name
            values = params.getlist(key) if key in params else []
            if not values:
                continue
            is_list = "list" in str(info.annotation).lower()
            data[key] = _split_list(values) if is_list else values[-1]
    try:
        return spec.query.model_validate(data)
    except pydantic.ValidationError as exc:
        raise validation_error(exc, "query") from None


def _split_list(values: list[str]) -> list[str]:
    """Accept both ``a=1&a=2`` and ``a=1,2``."""
    return [part for value in values for part in value.split(",") if part]


def dispatch(
    spec: RouteSpec, handler: Handler, request: Request, path_params: dict[str, str]
) -> Response:
    request_id = request.context.get("requestId") or uuid.uuid4().hex
    started = time.perf_counter()
    appkey = path_params.pop("appkey", "")
    logger.thread_safe_append_keys(request_id=request_id, appkey=appkey or None)
    try:
        response = _dispatch(spec, handler, request, appkey, path_params, request_id)
    except errors.OpenMakerError as exc:
        response = error_response(exc, request_id)
    except Exception:  # noqa: BLE001 - the edge turns any fault into a logged 500
        logger.exception("unhandled error", extra={"route": spec.path, "method": spec.method})
        response = error_response(
            errors.InternalError(f"internal error; request id {request_id}"), request_id
        )
    response.headers["X-Request-Id"] = request_id
    logger.debug(
        "request",
        extra={
            "method": spec.method,
            "route": spec.path,
            "status": response.status_code,
            "ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    logger.thread_safe_clear_keys()
    return response


def _dispatch(
    spec: RouteSpec,
    handler: Handler,
    request: Request,
    appkey: str,
    path_params: dict[str, str],
    request_id: str,
) -> Response:
    database = get_database()
    if spec.authenticated:
        auth.authenticate(database, appkey, request.headers)
    kwargs: dict[str, Any] = {to_snake(name): value for name, value in path_params.items()}
    body = parse_body(spec, request)
    if body is not None:
        kwargs["body"] = body
    query = parse_query(spec, request)
    if query is not None:
        kwargs["query"] = query

    callbacks: list[Callable[[], None]] = []

    def work(session: Session) -> tuple[int, dict[str, Any]]:
        callbacks.clear()  # a retried unit of work registers its callbacks again
        ctx = RequestContext(appkey, request_id, session, request, callbacks)
        return spec.status, render(spec, handler(ctx, **kwargs))

    key = request.headers.get("x-idempotency-key") if spec.idempotent_create else None
    if key is not None:
        request_fingerprint = idempotency.fingerprint(
            spec.method, spec.path, path_params, _raw(request)
        )
        response = idempotency.run_once(database, appkey, key, request_fingerprint, work)
    elif spec.method == "GET":
        status, payload = _read(database, work)
        response = json_response(status, payload, request_id)
    else:
        with database.session() as session:
            status, payload = work(session)
        response = json_response(status, payload, request_id)
    _run_after_commit(callbacks)
    return response


def _run_after_commit(callbacks: list[Callable[[], None]]) -> None:
    """Committed state is the truth; a failed follow-up is logged and left to the tick."""
    for callback in callbacks:
        try:
            callback()
        except Exception:  # noqa: BLE001 - the reconciler retries what failed here
            logger.exception("after-commit step failed; the tick will retry it")


def _read(
    database: Database, work: Callable[[Session], tuple[int, dict[str, Any]]]
) -> tuple[int, dict[str, Any]]:
    """Run a read; a pooled connection that the database server dropped (a restart) is
    replaced and the read tried once more, since reading twice changes nothing."""
    try:
        with database.session(read_only=True) as session:
            return work(session)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    with database.session(read_only=True) as session:
        return work(session)
