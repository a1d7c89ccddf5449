"""The serving gateway: stage URLs in front of the model pods (aiohttp, one event loop).

Each request is resolved against the routing table (:mod:`serving.gateway.routes`), sent to
a ready pod of its model over a kept-alive connection, and answered with the pod's status,
headers and body as they came. A background check asks every pod ``GET {health path}``
(``/v2/health/ready`` unless the table names another) each ``health_interval`` seconds;
only pods that answered 200 get requests. A pod that refuses a connection leaves the ready
set at once and comes back at its next good check.

A second, loopback-only server is the admin API: ``GET/PUT /routes`` (the whole table) and
``GET /stats`` (per stage: calls, 2xx/4xx/5xx, latency p50/p90/p99). With a routes URL the
gateway also polls the control plane's table (``GET /internal/v1/gateway/routes``, signed
with the platform's runner secret) every ``poll_interval`` seconds and applies a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import defaultdict
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from serving.gateway.routes import Pool, RouteError, RouteTable, Target
from serving.gateway.stats import StageStats

MAX_BODY_BYTES = 64 * 2**20  # a larger request body is refused (413) before it is read
HEALTH_TIMEOUT_SECONDS = 2.0
UPSTREAM_TIMEOUT_SECONDS = 600.0  # a generation may take minutes
RUNNER_HEADER = "x-openmaker-runner-token"  # chalicelib.services.runner_auth.HEADER
REQUEST_ID_HEADER = "X-Request-Id"  # the call's inferenceId, answered and sent to the pod
# Headers that belong to one connection, not to the message (RFC 9110 §7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "date",  # the gateway's own answer has its own
        "server",
    }
)


def error(status: int, message: str) -> web.Response:
    """An error in the shape KServe's servers answer with: ``{"error": message}``."""
    return web.json_response({"error": message}, status=status)


class Gateway:
    def __init__(
        self,
        table: RouteTable | None = None,
        *,
        health_interval: float = 1.0,
        routes_url: str | None = None,
        routes_token: str | None = None,
        poll_interval: float = 1.0,
        stats_url: str | None = None,
        stats_token: str | None = None,
        stats_interval: float = 10.0,
        log_store: Any = None,
    ) -> None:
        self.table = table or RouteTable()
        self.health_interval = health_interval
        self.routes_url, self.routes_token = routes_url, routes_token
        self.poll_interval = poll_interval
        self.stats_url, self.stats_token = stats_url, stats_token
        self.stats_interval = stats_interval
        self._applied: Any = None  # the last table taken from the control plane
        self.stats: dict[str, StageStats] = defaultdict(StageStats)  # by stage id, since start
        # by (stage id, minute): what the control plane has not taken yet
        self.unsent: dict[tuple[str, int], StageStats] = defaultdict(StageStats)
        self.log_store = log_store  # an ObjectStore for the inference logs (None: not kept)
        self.sinks: dict[str, Any] = {}  # log prefix -> LogSink
        self.session: aiohttp.ClientSession | None = None
        self._checker: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._pusher: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, _app: web.Application | None = None) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_SECONDS),
        )
        self._checker = asyncio.create_task(self._check_forever())
        if self.routes_url:
            self._poller = asyncio.create_task(self._poll_forever())
        if self.stats_url:
            self._pusher = asyncio.create_task(self._push_forever())

    async def stop(self, _app: web.Application | None = None) -> None:
        for task in (self._checker, self._poller, self._pusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.stats_url and self.session is not None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self.push_stats()  # the last minutes are not lost on a clean stop
        for sink in self.sinks.values():
            sink.close()
        if self.session is not None:
            await self.session.close()

    def app(self) -> web.Application:
        """The public application: every path is a stage's route."""
        application = web.Application(client_max_size=MAX_BODY_BYTES)
        application.on_startup.append(self.start)
        application.on_cleanup.append(self.stop)
        application.router.add_route("*", "/{tail:.*}", self.proxy)
        return application

    def admin_app(self) -> web.Application:
        application = web.Application(client_max_size=16 * 2**20)
        application.router.add_get("/routes", self._get_routes)
        application.router.add_put("/routes", self._put_routes)
        application.router.add_get("/stats", self._get_stats)
        return application

    # -- the proxy -----------------------------------------------------------------------

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"the request body is over {MAX_BODY_BYTES} bytes")
        try:
            target = self.table.resolve(request.path, body if request.method == "POST" else None)
        except RouteError as exc:
            return error(exc.status, exc.message)
        inference_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        response = await self._forward(request, target, body, inference_id)
        elapsed = time.perf_counter() - started
        stage_id = target.stage.stage_id
        self.stats[stage_id].record(response.status, elapsed)
        self.unsent[(stage_id, int(time.time()) // 60 * 60)].record(response.status, elapsed)
        if target.stage.log_prefix and self.log_store is not None:
            self._log_call(request, target, response.status, elapsed, inference_id)
        response.headers[REQUEST_ID_HEADER] = inference_id
        return response

    def _log_call(
        self, request: web.Request, target: Target, status: int, elapsed: float, inference: str
    ) -> None:
        """One record per call in the stage's log (category easymaker.inference)."""
        prefix = target.stage.log_prefix
        assert prefix is not None
        sink = self.sinks.get(prefix)
        if sink is None:
            from runners.logsink import LogSink

            sink = self.sinks[prefix] = LogSink(self.log_store, prefix)
        record = {
            "endpointId": target.stage.endpoint_id,
            "endpointStageId": target.stage.stage_id,
            "inferenceId": inference,
            "action": "Endpoint.Model",
            "modelName": target.pool.model,
            "method": request.method,
            "path": target.path,
            "status": status,
            "latencyMs": round(elapsed * 1000, 3),
        }
        stream = "stdout" if status < 500 else "stderr"
        sink.write("gateway", stream, json.dumps(record, separators=(",", ":")) + "\n")

    async def _forward(
        self, request: web.Request, target: Target, body: bytes, inference_id: str
    ) -> web.Response:
        assert self.session is not None
        try:
            backend = target.pool.pick()
        except RouteError as exc:
            return error(exc.status, exc.message)
        url = backend + target.path
        if request.query_string:
            url += "?" + request.query_string
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers[REQUEST_ID_HEADER] = inference_id
        try:
            async with self.session.request(
                request.method,
                URL(url, encoded=True),  # already encoded: no second parse and quote
                data=body or None,
                headers=headers,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                answer_headers = {
                    k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
                }
                return web.Response(status=upstream.status, body=payload, headers=answer_headers)
        except aiohttp.ClientConnectionError as exc:
            target.pool.ready.discard(backend)  # back at its next good health check
            return error(502, f"the pod of model {target.pool.model} did not answer: {exc}")
        except TimeoutError:
            return error(504, f"the pod of model {target.pool.model} did not answer in time")

    # -- health --------------------------------------------------------------------------

    async def check_once(self) -> None:
        """Ask every pod of every pool whether it is ready, all at once."""
        checks = [
            self._check(pool, backend) for pool in self.table.pools() for backend in pool.backends
        ]
        if checks:
            await asyncio.gather(*checks)

    async def _check(self, pool: Pool, backend: str) -> None:
        assert self.session is not None
        try:
            async with self.session.get(
                backend + pool.health_path,
                timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_SECONDS),
            ) as reply:
                await reply.read()
                healthy = reply.status == 200
        except (aiohttp.ClientError, TimeoutError):
            healthy = False
        if healthy:
            pool.ready.add(backend)
        else:
            pool.ready.discard(backend)

    async def _check_forever(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self.health_interval)

    async def poll_once(self) -> bool:
        """Take the control plane's table; whether it changed."""
        assert self.session is not None and self.routes_url is not None
        headers = {RUNNER_HEADER: self.routes_token or ""}
        async with self.session.get(
            self.routes_url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
        ) as reply:
            if reply.status != 200:
                return False
            spec = (await reply.json())["routes"]
        if spec == self._applied:
            return False
        self.table.replace(spec)
        self._applied = spec
        await self.check_once()
        return True

    async def _poll_forever(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                await self.poll_once()
            await asyncio.sleep(self.poll_interval)

    async def push_stats(self) -> int:
        """Send the counted minutes to the control plane; how many it took. What it did not
        take is kept for the next push."""
        assert self.session is not None and self.stats_url is not None
        sending, self.unsent = self.unsent, defaultdict(StageStats)
        if not sending:
            return 0
        items = [
            {
                "endpointStageId": stage_id,
                "minute": minute,
                "calls": stats.calls,
                **{f"status{family}": n for family, n in stats.by_class.items()},
                "buckets": stats.buckets,
            }
            for (stage_id, minute), stats in sending.items()
        ]
        try:
            async with self.session.post(
                self.stats_url,
                json={"stats": items},
                headers={RUNNER_HEADER: self.stats_token or ""},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as reply:
                if reply.status != 200:
                    raise aiohttp.ClientResponseError(
                        reply.request_info, (), status=reply.status, message=await reply.text()
                    )
        except BaseException:
            for key, stats in sending.items():
                self.unsent[key].merge(stats)
            raise
        return len(items)

    async def _push_forever(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self.push_stats()

    # -- admin ---------------------------------------------------------------------------

    async def _get_routes(self, _request: web.Request) -> web.Response:
        return web.json_response(self.table.as_spec())

    async def _put_routes(self, request: web.Request) -> web.Response:
        try:
            spec: Any = await request.json()
            if not isinstance(spec, dict) or not isinstance(spec.get("stages", {}), dict):
                raise ValueError('the body is {"stages": {key: {"models": {...}}}}')
            self.table.replace(spec)
        except (ValueError, AttributeError, TypeError) as exc:
            return error(400, f"not a routing table: {exc}")
        await self.check_once()  # new pods are checked now, not at the next round
        return web.json_response(self.table.as_spec())

    async def _get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response({key: s.as_dict() for key, s in self.stats.items()})
