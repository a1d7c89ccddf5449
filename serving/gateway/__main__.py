"""``python -m serving.gateway``: the gateway on ``--port`` (HTTPS with ``--cert``/``--key``)
and its admin API on ``--admin-port`` (loopback), from an optional ``--routes`` JSON file.

With ``--routes-url`` (and the runner secret) it follows the control plane's table, pushes
the API statistics back beside it (``.../gateway/stats`` every ``--stats-interval`` seconds)
and logs each call of a stage created with ``useLog`` in platform storage."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
from pathlib import Path

import uvloop
from aiohttp import web

from chalicelib.objectstore import platform_store
from chalicelib.services.runner_auth import job_token
from serving.gateway.app import Gateway


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving.gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--routes", type=Path, help="a routing table (JSON) to start with")
    parser.add_argument("--cert", type=Path, help="serve HTTPS with this certificate chain")
    parser.add_argument("--key", type=Path, help="the certificate's private key")
    parser.add_argument("--health-interval", type=float, default=1.0)
    parser.add_argument("--routes-url", help="poll the control plane's routing table here")
    parser.add_argument(
        "--secret-file", type=Path, help="the runner secret that signs the routes request"
    )
    parser.add_argument(
        "--stats-interval",
        type=float,
        default=float(os.environ.get("OPENMAKER_GATEWAY_STATS_SECONDS", "10")),
        help="seconds between pushes of the API statistics to the control plane",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    token = stats_token = stats_url = log_store = None
    if args.routes_url and args.secret_file:
        secret = args.secret_file.read_bytes().strip()
        token = job_token("gateway", "routes", secret)
        # the API statistics go back beside the routes; calls are logged in platform storage
        stats_url = args.routes_url.rstrip("/").rsplit("/", 1)[0] + "/stats"
        stats_token = job_token("gateway", "stats", secret)
        log_store = platform_store()
    gateway = Gateway(
        health_interval=args.health_interval,
        routes_url=args.routes_url,
        routes_token=token,
        stats_url=stats_url,
        stats_token=stats_token,
        stats_interval=args.stats_interval,
        log_store=log_store,
    )
    if args.routes is not None:
        gateway.table.replace(json.loads(args.routes.read_text()))
    context = None
    if args.cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    public = web.AppRunner(gateway.app(), access_log=None)
    admin = web.AppRunner(gateway.admin_app(), access_log=None)
    await public.setup()
    await admin.setup()
    await web.TCPSite(public, args.host, args.port, ssl_context=context).start()
    await web.TCPSite(admin, "127.0.0.1", args.admin_port).start()
    print(f"gateway on {args.host}:{args.port}, admin on 127.0.0.1:{args.admin_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await public.cleanup()
    await admin.cleanup()


def main(argv: list[str] | None = None) -> int:
    uvloop.run(serve(parse_args(argv)))  # libuv's loop: less CPU per proxied request
    return 0


if __name__ == "__main__":
    sys.exit(main())
