"""A stand-in pod for the gateway tests: ``python -m tests.serving.echo_pod PORT NAME``.

It answers the OIP routes with its own name (so a test sees which pod served), is ready
while ``{PORT}.down`` does not exist next to it, and drops the connection on ``/crash``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aiohttp import web


def main() -> None:
    port, name, state = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

    async def ready(_request: web.Request) -> web.Response:
        down = (state / f"{port}.down").exists()
        return web.json_response({"ready": not down}, status=503 if down else 200)

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "pod": name,
                "path": request.path,
                "query": request.query_string,
                "body": json.loads(body) if body else None,
                "header": request.headers.get("x-trace"),
            },
            status=int(request.headers.get("x-status", "200")),
        )

    async def crash(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        raise ConnectionResetError("crashed on purpose")

    app = web.Application()
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_route("*", "/crash", crash)
    app.router.add_route("*", "/{tail:.*}", echo)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
