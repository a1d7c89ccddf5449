"""The pod's HTTP face: OIP v1/v2 routes and ``/predictions``, forwarded to TorchServe.

Requests are checked here (empty or non-JSON bodies, malformed OIP bodies, another model's
name: 400/404 with a message) before TorchServe sees them, then sent to TorchServe's
loopback inference API with the inference key. TorchServe's answers keep their status; its
error bodies become ``{"error": message}`` like the Python runtime's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from serving.runtimes.torchserve import oip
from serving.runtimes.torchserve.errors import InferenceInputError

MODEL_VERSION = "1.0"
PLATFORM = "pytorch_torchserve"


@dataclass(frozen=True)
class Upstream:
    """Where TorchServe's inference API is, its key, and how to ask whether workers are up."""

    inference_url: str
    inference_key: str
    ready_workers: Callable[[], int]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Front:
    """Routes of one model; ``app()`` builds the aiohttp application."""

    def __init__(self, model_name: str, upstream: Upstream, max_body_bytes: int) -> None:
        self.model_name = model_name
        self.upstream = upstream
        self.max_body_bytes = max_body_bytes
        self.session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[errors_as_json])
        app.cleanup_ctx.append(self._client_session)
        app.add_routes(
            [
                web.get("/ping", self.ping),
                web.get("/v2", self.server_metadata),
                web.get("/v2/health/live", self.live),
                web.get("/v2/health/ready", self.ready),
                web.get("/v2/models/{model}", self.model_metadata),
                web.get("/v2/models/{model}/ready", self.model_ready),
                web.post("/v2/models/{model}/infer", self.v2_infer),
                web.get("/v1/models", self.v1_models),
                web.get("/v1/models/{model}", self.v1_model),
                web.post("/v1/models/{model}:predict", self.v1_predict),
                web.post("/v1/models/{model}/predict", self.v1_predict),
                web.post("/predictions/{model}", self.predictions),
            ]
        )
        return app

    async def _client_session(self, app: web.Application) -> AsyncIterator[None]:
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.upstream.inference_key}"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
        yield
        await self.session.close()

    async def _is_ready(self) -> bool:
        return await asyncio.to_thread(self.upstream.ready_workers) > 0

    async def ping(self, request: web.Request) -> web.Response:
        healthy = await self._is_ready()
        return web.json_response(
            {"status": "Healthy" if healthy else "Unhealthy"}, status=200 if healthy else 503
        )

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response({"name": "openmaker-torchserve", "extensions": []})

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        ready = await self._is_ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def model_metadata(self, request: web.Request) -> web.Response:
        self._check_model(request)
        return web.json_response(
            {
                "name": self.model_name,
                "versions": [MODEL_VERSION],
                "platform": PLATFORM,
                "inputs": [],
                "outputs": [],
            }
        )

    async def model_ready(self, request: web.Request) -> web.Response:
        self._check_model(request)
        ready = await self._is_ready()
        body = {"name": self.model_name, "ready": ready}
        return web.json_response(body, status=200 if ready else 503)

    async def v1_models(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [self.model_name]})

    async def v1_model(self, request: web.Request) -> web.Response:
        self._check_model(request)
        return web.json_response({"name": self.model_name, "ready": await self._is_ready()})

    async def v1_predict(self, request: web.Request) -> web.Response:
        self._check_model(request)
        instances = oip.v1_instances(await self._json(request))
        return web.json_response(oip.v1_response(await self._infer_json(instances)))

    async def v2_infer(self, request: web.Request) -> web.Response:
        self._check_model(request)
        handler_body, request_id = oip.v2_handler_body(await self._json(request))
        result = await self._infer_json(handler_body)
        try:
            answer = oip.v2_response(result, self.model_name, MODEL_VERSION, request_id)
        except ValueError as error:
            return _error(500, f"the handler's answer is not a tensor: {error}")
        return web.json_response(answer)

    async def predictions(self, request: web.Request) -> web.Response:
        """TorchServe's own route: the body and the handler's answer pass through as they are."""
        self._check_model(request)
        body = await self._body(request)
        status, answer, content_type = await self._forward(body, request.content_type)
        if status != 200:
            raise _upstream_error(status, answer)
        return web.Response(body=answer, status=status, headers={"Content-Type": content_type})

    def _check_model(self, request: web.Request) -> None:
        name = request.match_info["model"]
        if name != self.model_name:
            raise _HTTPError(
                404, f"model {name!r} is not served here (this pod serves {self.model_name!r})"
            )

    async def _body(self, request: web.Request) -> bytes:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as error:
            raise _HTTPError(413, f"request body over {self.max_body_bytes} bytes") from error
        if not body.strip():
            raise _HTTPError(400, "empty request body: send the inputs as JSON")
        return body

    async def _json(self, request: web.Request) -> Any:
        body = await self._body(request)
        try:
            return json.loads(body)
        except ValueError as error:
            raise _HTTPError(400, f"request body is not JSON: {error}") from error

    async def _forward(self, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        """TorchServe's status, body and content type for ``body`` sent to the model."""
        assert self.session is not None  # set by the cleanup context before any request
        url = f"{self.upstream.inference_url}/predictions/{self.model_name}"
        try:
            async with self.session.post(
                url, data=body, headers={"Content-Type": content_type}
            ) as response:
                answer = await response.read()
                return response.status, answer, response.content_type
        except aiohttp.ClientError as error:
            raise _HTTPError(503, f"TorchServe is not answering: {error}") from error

    async def _infer_json(self, handler_body: Any) -> Any:
        """The handler's JSON answer to ``handler_body`` (TorchServe's error when not 200)."""
        status, answer, _ = await self._forward(
            json.dumps(handler_body).encode(), "application/json"
        )
        if status != 200:
            raise _upstream_error(status, answer)
        try:
            return json.loads(answer)
        except ValueError:
            return answer.decode(errors="replace")


def _upstream_error(status: int, answer: bytes) -> _HTTPError:
    """TorchServe's error as ours: its status and message, a few made clearer."""
    try:
        parsed = json.loads(answer)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return _HTTPError(status, answer.decode(errors="replace")[:1000])
    message = str(parsed.get("message", parsed))
    if parsed.get("type") == "InvalidKeyException":
        return _HTTPError(502, "the runtime's TorchServe key was refused")
    if status == 503 and message == "Prediction failed":
        return _HTTPError(500, "the model's handler failed on this request (see the pod's log)")
    return _HTTPError(status, message)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@web.middleware
async def errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    """Bad input as 4xx ``{"error": ...}``; aiohttp's own 404/405/413 in the same shape."""
    try:
        return await handler(request)
    except _HTTPError as error:
        return _error(error.status, error.message)
    except InferenceInputError as error:
        return _error(400, error.message)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _error(error.status, error.reason)
