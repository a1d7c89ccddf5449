"""The local Ray head that ``openmaker up`` runs when ``RAY_ADDRESS`` names no cluster.

``ray start --head --block`` runs as a child in its own session: Ctrl-C on the launcher does
not reach it, the launcher stops it on a clean shutdown, and if the launcher is killed the
head keeps running the jobs; the next ``openmaker up`` finds it through ``ray-head.json`` and
reuses it. Every port is chosen free (Redis already has 6379 on many machines), and the
temporary directory is short because Ray's socket paths must fit in 107 bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from chalicelib.dispatch.ray_auth import ray_auth_headers

START_TIMEOUT_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str, timeout: float) -> Any:
    request = urllib.request.Request(url, headers=ray_auth_headers())
    return urllib.request.urlopen(request, timeout=timeout)


def _answers(url: str) -> bool:
    try:
        with _get(f"{url}/api/version", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _has_alive_node(url: str) -> bool:
    try:
        with _get(f"{url}/api/v0/nodes?limit=10", timeout=5) as response:
            data = json.loads(response.read())
    except (OSError, ValueError):
        return False
    nodes = data.get("data", {}).get("result", {}).get("result", [])
    return any(node.get("state") == "ALIVE" for node in nodes)


class RayHead:
    def __init__(
        self,
        home: Path,
        *,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        object_store_bytes: int = 256 * 2**20,
    ) -> None:
        self.home = home
        self.state_file = home / "ray-head.json"
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.object_store_bytes = object_store_bytes
        digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]
        self.temp_dir = Path("/tmp") / f"omray-{digest}"
        self.process: subprocess.Popen[bytes] | None = None
        self.dashboard_url = ""

    def running(self) -> str | None:
        """The dashboard URL of a head this home started earlier that still answers."""
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        url = str(state.get("dashboard_url", ""))
        return url if url and _answers(url) and _has_alive_node(url) else None

    def start(self) -> str:
        """Reuse the running head or start one; return its Jobs API (dashboard) URL."""
        existing = self.running()
        if existing:
            self.dashboard_url = existing
            return existing
        dashboard_port, gcs_port = free_port(), free_port()
        self.dashboard_url = f"http://127.0.0.1:{dashboard_port}"
        command = [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            f"--object-store-memory={self.object_store_bytes}",
            f"--temp-dir={self.temp_dir}",
            "--include-dashboard=true",
            "--disable-usage-stats",
        ]
        if self.num_cpus is not None:
            command.append(f"--num-cpus={self.num_cpus}")
        if self.num_gpus is not None:
            command.append(f"--num-gpus={self.num_gpus}")
        env = dict(os.environ)
        # Job drivers run "python -m runners...": the platform's own interpreter.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        env.pop("RAY_ADDRESS", None)
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.home / "ray-head.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not (_answers(self.dashboard_url) and _has_alive_node(self.dashboard_url)):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the Ray head exited with {self.process.returncode}; "
                    f"see {self.home / 'ray-head.log'}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Ray head did not answer within {START_TIMEOUT_SECONDS}s")
            time.sleep(0.25)
        self.state_file.write_text(
            json.dumps(
                {
                    "dashboard_url": self.dashboard_url,
                    "gcs_address": f"127.0.0.1:{gcs_port}",
                    "pid": self.process.pid,
                    "temp_dir": str(self.temp_dir),
                }
            )
        )
        return self.dashboard_url

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the head this object started (``ray start --block`` stops its processes on
        SIGTERM); a head found running from an earlier launcher is stopped through its pid."""
        pid = self.process.pid if self.process is not None else self._recorded_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pid):
            if self.process is not None:
                self.process.poll()
            time.sleep(0.2)
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
        shutil.rmtree(self.temp_dir, ignore_errors=True)  # session logs, sockets

    def _recorded_pid(self) -> int | None:
        try:
            return int(json.loads(self.state_file.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
