"""A real S3 HTTP API on loopback (moto's server) for tests that must not mock boto3."""

from __future__ import annotations

from collections.abc import Callable

from moto.server import ThreadedMotoServer


def start_moto_server() -> tuple[str, Callable[[], None]]:
    """Start moto on 127.0.0.1 at a free port; return its endpoint URL and a stop function.

    Port 0 lets the OS pick, so parallel test runs never collide.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}", server.stop
