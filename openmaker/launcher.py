"""``openmaker up``: the embedded platform in the foreground.

It migrates the database, makes sure a default appkey and token exist (printed and written
to ``$OPENMAKER_HOME/credentials.json``), serves the Chalice app with granian, runs the
same ``tick()`` as the scheduled trigger on a one-second timer, and starts the serving
gateway over HTTPS with the platform's own CA (``$OPENMAKER_HOME/tls/ca.pem``; where it
listens is written to ``$OPENMAKER_HOME/gateway.json``). A gateway that cannot start (its
port taken) is reported and the rest of the platform runs on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from chalicelib.config import get_settings, reset_settings
from chalicelib.services import auth, runner_auth
from chalicelib.services.catalog import get_catalog
from chalicelib.services.tick import tick
from chalicelib.store.db import Database, get_database
from openmaker.rayhead import RayHead
from serving.tls import ensure_tls

TICK_SECONDS = 1.0
GATEWAY_PORT = 10443  # OPENMAKER_GATEWAY_PORT; 0 turns the gateway off
GATEWAY_ADMIN_PORT = 10091  # OPENMAKER_GATEWAY_ADMIN_PORT (loopback only)


def _credentials_valid(database: Database, credentials: dict[str, Any]) -> bool:
    try:
        auth.authenticate(
            database, credentials["appkey"], {"x-easymaker-token": credentials["token"]}
        )
    except Exception:  # noqa: BLE001 - any failure means "make new credentials"
        return False
    return True


def ensure_credentials(database: Database, home: Path) -> tuple[dict[str, str], bool]:
    """The default credentials, created on first start; True when they were just made."""
    path = home / "credentials.json"
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            existing = {}
        if _credentials_valid(database, existing):
            return {"appkey": existing["appkey"], "token": existing["token"]}, False
    appkey = auth.create_project(database, name="default")
    token = auth.create_token(database, appkey, description="created by openmaker up")
    credentials = {"appkey": appkey, "token": token}
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(credentials, handle)
    return credentials, True


def _tick_forever(stop: threading.Event) -> None:
    while not stop.wait(TICK_SECONDS):
        tick()


def server_command(host: str, port: int, workers: int, threads: int) -> list[str]:
    """Granian (HTTP in Rust, the app in Python threads) hosting the WSGI adapter; a worker
    that dies is replaced, and the state it served lives in the database."""
    command = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        "--respawn-failed-workers",
        "--workers-kill-timeout",
        "10",
        "--log-level",
        "warning",
        "--no-ws",
    ]
    if os.environ.get("OPENMAKER_ACCESS_LOG"):
        command.append("--access-log")
    return [*command, "openmaker.server:create_wsgi_app"]


def _local_url(host: str, port: int) -> str:
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{reachable}:{port}"


def start_runners(home: Path) -> RayHead | None:
    """Start (or find) the local Ray head unless a cluster is configured; export its address
    for the server workers and the tick. Returns the head to stop on shutdown, if ours."""
    if get_settings().ray_address:
        return None
    cpus = os.environ.get("OPENMAKER_RAY_NUM_CPUS")
    head = RayHead(home, num_cpus=int(cpus) if cpus else None)
    reused = head.running() is not None
    url = head.start()
    os.environ["OPENMAKER_RAY_ADDRESS"] = url
    reset_settings()
    print(f"  ray:    {url}  ({'existing' if reused else 'started'} local head)", flush=True)
    return head


def start_gateway(home: Path, host: str) -> subprocess.Popen[bytes] | None:
    """The serving gateway on HTTPS, its certificate from the platform's CA (made on the
    first start); None when ``OPENMAKER_GATEWAY_PORT`` is 0."""
    port = int(os.environ.get("OPENMAKER_GATEWAY_PORT", GATEWAY_PORT))
    if port == 0:
        return None
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    os.environ.setdefault("OPENMAKER_GATEWAY_HOST", f"{reachable}:{port}")  # stage URLs
    reset_settings()
    admin_port = int(os.environ.get("OPENMAKER_GATEWAY_ADMIN_PORT", GATEWAY_ADMIN_PORT))
    names = [host] if host not in ("0.0.0.0", "::", "") else []
    files = ensure_tls(home, names)
    command = [sys.executable, "-m", "serving.gateway", "--host", host, "--port", str(port)]
    command += ["--admin-port", str(admin_port), "--cert", str(files.cert)]
    command += ["--key", str(files.key)]
    settings = get_settings()
    command += ["--routes-url", f"{settings.internal_api_url}/internal/v1/gateway/routes"]
    command += ["--secret-file", str(settings.runner_secret_file)]
    process = subprocess.Popen(command)
    where = {
        "url": f"https://{reachable}:{port}",
        "adminUrl": f"http://127.0.0.1:{admin_port}",
        "ca": str(files.ca),
    }
    (home / "gateway.json").write_text(json.dumps(where, indent=2) + "\n")
    print(f"  gateway: {where['url']}  (CA {files.ca}: set REQUESTS_CA_BUNDLE)", flush=True)
    return process


def up(host: str = "127.0.0.1", port: int = 10090, workers: int = 2, threads: int = 2) -> int:
    os.environ.setdefault("OPENMAKER_PUBLIC_URL", _local_url(host, port))
    os.environ.setdefault("OPENMAKER_INTERNAL_API_URL", _local_url(host, port))
    reset_settings()
    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.storage_root.mkdir(parents=True, exist_ok=True)
    database = get_database()
    get_catalog()  # a broken flavors/images/algorithms file stops the start, not each request
    credentials, created = ensure_credentials(database, settings.home)
    word = "created" if created else "existing"
    print(f"OpenMaker on http://{host}:{port}  (home {settings.home})", flush=True)
    print(f"  appkey: {credentials['appkey']}  ({word})", flush=True)
    print(f"  token:  {credentials['token']}", flush=True)
    print(f"  saved in {settings.home / 'credentials.json'}", flush=True)
    runner_auth.ensure_secret()
    head = start_runners(settings.home)
    gateway = start_gateway(settings.home, host)
    server = subprocess.Popen(server_command(host, port, workers, threads))
    stop = threading.Event()
    ticker = threading.Thread(target=_tick_forever, args=(stop,), daemon=True, name="tick")
    ticker.start()

    def _forward(signum: int, _frame: Any) -> None:
        stop.set()
        server.send_signal(signal.SIGTERM)
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    code = server.wait()
    asked_to_stop = stop.is_set()  # a server that dies on its own (port in use) is a failure
    stop.set()
    if gateway is not None:
        if gateway.poll() is None:
            gateway.terminate()
        try:
            gateway.wait(timeout=10)
        except subprocess.TimeoutExpired:
            gateway.kill()
    if head is not None:
        head.stop()
    return 0 if asked_to_stop else code
