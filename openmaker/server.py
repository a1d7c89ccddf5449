"""Hosts the Chalice app in a real WSGI server, the way API Gateway hosts it in Lambda.

Each WSGI request becomes an API Gateway proxy event for ``app(event, context)``: the route
template is matched here (as API Gateway would), the app runs unchanged, and its proxy
response is written back. Unknown routes and methods get the same error envelope as the app.

Paths under ``/tensorboard/`` never reach Chalice: :mod:`openmaker.tensorboard` authenticates
them and streams them to a TensorBoard process of this worker.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote

from chalice import Chalice

from chalicelib.errors import InternalError, OpenMakerError
from chalicelib.observability import logger
from openmaker.tensorboard import TensorBoardProxy

StartResponse = Callable[..., Any]
_TEXT_TYPES = ("application/json", "text/", "application/x-www-form-urlencoded")
TENSORBOARD_PREFIX = "/tensorboard/"


@dataclass
class _Node:
    children: dict[str, _Node]
    capture: tuple[str, _Node] | None = None
    template: str | None = None


class RouteIndex:
    """A segment trie over the app's route templates; literal segments win over captures."""

    def __init__(self, templates: Iterable[str]) -> None:
        self.root = _Node(children={})
        for template in templates:
            self._add(template)

    def _add(self, template: str) -> None:
        node = self.root
        for part in template.strip("/").split("/") if template != "/" else []:
            if part.startswith("{") and part.endswith("}"):
                if node.capture is None:
                    node.capture = (part[1:-1], _Node(children={}))
                node = node.capture[1]
            else:
                node = node.children.setdefault(part, _Node(children={}))
        node.template = template

    def match(self, path: str) -> tuple[str, dict[str, str]] | None:
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        return self._match(self.root, parts, {})

    def _match(
        self, node: _Node, parts: list[str], captured: dict[str, str]
    ) -> tuple[str, dict[str, str]] | None:
        if not parts:
            return (node.template, captured) if node.template else None
        head, rest = parts[0], parts[1:]
        literal = node.children.get(head)
        if literal is not None:
            found = self._match(literal, rest, captured)
            if found:
                return found
        if node.capture is not None and head:
            name, child = node.capture
            return self._match(child, rest, {**captured, name: head})
        return None


class _LambdaContext:
    def __init__(self) -> None:
        self.aws_request_id = uuid.uuid4().hex
        self.function_name = "openmaker"
        self.memory_limit_in_mb = 0

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def _envelope(
    status: int, code: int, message: str, extra_headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request_id = uuid.uuid4().hex
    body = {
        "header": {
            "isSuccessful": False,
            "resultCode": code,
            "resultMessage": message,
            "requestId": request_id,
        }
    }
    headers = {
        "Content-Type": "application/json",
        "X-Request-Id": request_id,
        **(extra_headers or {}),
    }
    return status, headers, json.dumps(body).encode()


def _read_body(environ: dict[str, Any]) -> bytes:
    """The request body, whether sized by Content-Length or sent chunked (no length)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > 0:
        return bytes(environ["wsgi.input"].read(length))
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return bytes(environ["wsgi.input"].read())
    return b""


class _PerThreadRequest:
    """Chalice keeps the request being handled on the app object (``app.current_request``):
    right for Lambda, one request at a time, but a threaded WSGI server runs several at once,
    and a view could read another thread's request (headers, token, body). Each thread keeps
    its own here.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        return getattr(self._local, "request", None) if obj is not None else self

    def __set__(self, obj: object, value: Any) -> None:
        self._local.request = value


def _requests_per_thread(app: Chalice) -> None:
    if not isinstance(type(app).__dict__.get("current_request"), _PerThreadRequest):
        app.__class__ = type(
            f"PerThread{type(app).__name__}",
            (type(app),),
            {"current_request": _PerThreadRequest()},
        )


class ChaliceWSGI:
    """A WSGI application that runs a Chalice app's REST routes."""

    def __init__(self, app: Chalice) -> None:
        _requests_per_thread(app)
        self.app = app
        self.index = RouteIndex(app.routes)
        self.tensorboard = TensorBoardProxy()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if (environ.get("PATH_INFO") or "").startswith(TENSORBOARD_PREFIX):
            return self.serve_tensorboard(environ, start_response)
        status, headers, body = self.handle(environ)
        reason = _REASONS.get(status, "")
        start_response(f"{status} {reason}", list(headers.items()))
        return [body]

    def serve_tensorboard(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """A board's request, streamed; its errors in the API's envelope. The query is never
        logged (a ticket rides in it)."""
        try:
            status, headers, body = self.tensorboard.handle(environ)
        except Exception as exc:  # noqa: BLE001 - the edge turns any fault into an envelope
            error = exc if isinstance(exc, OpenMakerError) else InternalError("internal error")
            if not isinstance(exc, OpenMakerError):
                logger.exception("tensorboard request failed", extra={"path": _path(environ)})
            status, envelope_headers, data = _envelope(
                error.http_status, error.result_code, error.message
            )
            headers, body = list(envelope_headers.items()), [data]
        start_response(f"{status} {_reason(status)}", headers)
        return body

    def handle(self, environ: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        method = environ["REQUEST_METHOD"].upper()
        path = environ.get("PATH_INFO") or "/"
        path = path.encode("latin-1").decode("utf-8", "replace")
        matched = self.index.match(path)
        if matched is None:
            return _envelope(404, 40401, f"no route for {path}")
        template, params = matched
        if method not in self.app.routes[template]:
            if method == "HEAD" and "GET" in self.app.routes[template]:
                method = "GET"
            else:
                allowed = ", ".join(sorted(self.app.routes[template]))
                message = f"{method} is not allowed here; use {allowed}"
                return _envelope(405, 40500, message, {"Allow": allowed})
        event = self._event(environ, method, path, template, params)
        response = self.app(event, _LambdaContext())
        return self._decode(response)

    def _event(
        self,
        environ: dict[str, Any],
        method: str,
        path: str,
        template: str,
        params: dict[str, str],
    ) -> dict[str, Any]:
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        raw = _read_body(environ)
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        is_text = raw == b"" or headers.get("content-type", "application/json").startswith(
            _TEXT_TYPES
        )
        body: str | None
        if not raw:
            body = None
        elif is_text:
            try:
                body = raw.decode("utf-8")
            except UnicodeDecodeError:
                body, is_text = base64.b64encode(raw).decode(), False
        else:
            body = base64.b64encode(raw).decode()
        return {
            "resource": template,
            "path": path,
            "httpMethod": method,
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
            "multiValueQueryStringParameters": query or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "body": body,
            "isBase64Encoded": bool(raw) and not is_text,
            "requestContext": {
                "resourcePath": template,
                "httpMethod": method,
                "path": path,
                "requestId": uuid.uuid4().hex,
                "identity": {"sourceIp": environ.get("REMOTE_ADDR", "")},
                "stage": "local",
            },
        }

    @staticmethod
    def _decode(response: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        headers = {k: str(v) for k, v in (response.get("headers") or {}).items()}
        for key, values in (response.get("multiValueHeaders") or {}).items():
            headers[key] = ", ".join(str(v) for v in values)
        body = response.get("body") or ""
        data = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()
        return int(response["statusCode"]), headers, data


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def _reason(status: int) -> str:
    try:
        return _REASONS.get(status) or HTTPStatus(status).phrase
    except ValueError:
        return ""


def _path(environ: dict[str, Any]) -> str:
    """The request path for logs, without the query."""
    return str(environ.get("PATH_INFO") or "/")


def create_wsgi_app() -> ChaliceWSGI:
    """WSGI factory: ``granian --interface wsgi --factory openmaker.server:create_wsgi_app``."""
    from app import app

    return ChaliceWSGI(app)
