"""Starting, driving and stopping one TorchServe (the Java frontend and its Python workers).

Java is started directly rather than through the ``torchserve`` launcher, which detaches
and keeps one pid file per machine (``/tmp/.model_server.pid``), so two pods on a node
would refuse each other. Every TorchServe port (inference, management, metrics, both gRPC
ones) binds to 127.0.0.1 on a free port, the workers' Unix sockets live in this instance's
work directory, ``allowed_urls`` admits only the model store, and token authorization is
on. In TorchServe 0.12 it guards the inference API as well as the management one, so the
front (not the pod's clients) holds the inference key.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from serving.runtimes.torchserve.archive import ModelStore
from serving.runtimes.torchserve.errors import TorchServeStartError

# Tokens outlive the pod: TorchServe's default (60 minutes) would lock the front out.
TOKEN_EXPIRATION_MIN = 10 * 365 * 24 * 60
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Ports:
    inference: int
    management: int
    metrics: int
    grpc_inference: int
    grpc_management: int


@dataclass(frozen=True)
class Keys:
    management: str
    inference: str


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config_properties(store: ModelStore, ports: Ports, max_body_bytes: int) -> str:
    loopback = "http://127.0.0.1"
    lines = {
        "inference_address": f"{loopback}:{ports.inference}",
        "management_address": f"{loopback}:{ports.management}",
        "metrics_address": f"{loopback}:{ports.metrics}",
        "grpc_inference_address": "127.0.0.1",
        "grpc_management_address": "127.0.0.1",
        "grpc_inference_port": str(ports.grpc_inference),
        "grpc_management_port": str(ports.grpc_management),
        "model_store": str(store.path),
        "allowed_urls": f"file://{store.path}/.*",
        "enable_model_api": "true",
        "disable_token_authorization": "false",
        "token_expiration_min": str(TOKEN_EXPIRATION_MIN),
        "enable_envvars_config": "false",
        "install_py_dep_per_model": "true",
        "disable_system_metrics": "true",
        "max_request_size": str(max_body_bytes + 4096),
        "max_response_size": str(max(max_body_bytes, 6553500)),
        "default_response_timeout": "120",
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


class TorchServe:
    """One TorchServe instance in ``work_dir``; ``start`` then ``register``, ``stop`` always."""

    def __init__(self, store: ModelStore, work_dir: Path, max_body_bytes: int) -> None:
        self.store = store
        self.work_dir = work_dir
        self.ports = Ports(free_port(), free_port(), free_port(), free_port(), free_port())
        self.inference_url = f"http://127.0.0.1:{self.ports.inference}"
        self.management_url = f"http://127.0.0.1:{self.ports.management}"
        self.max_body_bytes = max_body_bytes
        self.popen: subprocess.Popen[bytes] | None = None
        self._keys: Keys | None = None

    def _command(self, config_file: Path, tmp_dir: Path) -> list[str]:
        import ts

        ts_home = Path(ts.__file__).resolve().parents[1]
        java_home = os.environ.get("JAVA_HOME")
        java = f"{java_home}/bin/java" if java_home else (shutil.which("java") or "java")
        return [
            java,
            f"-Dmodel_server_home={ts_home}",
            f"-Djava.io.tmpdir={tmp_dir}",
            "-cp",
            str(ts_home / "ts" / "frontend" / "*"),
            "org.pytorch.serve.ModelServer",
            "--python",
            sys.executable,
            "-f",
            str(config_file),
            "-s",
            str(self.store.path),
            "-ncs",
        ]

    def start(self) -> None:
        """Start Java in its own process group (the workers join it) with cwd ``work_dir``."""
        tmp_dir = self.work_dir / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.work_dir / "config.properties"
        config_file.write_text(_config_properties(self.store, self.ports, self.max_body_bytes))
        env = {**os.environ, "LOG_LOCATION": str(self.work_dir / "logs")}
        env["METRICS_LOCATION"] = env["LOG_LOCATION"]
        env.pop("TS_CONFIG_FILE", None)
        try:
            self.popen = subprocess.Popen(
                self._command(config_file, tmp_dir),
                cwd=self.work_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as error:
            raise TorchServeStartError(f"cannot start java for TorchServe: {error}") from error

    def exit_code(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def keys(self) -> Keys:
        """The management and inference keys TorchServe wrote to ``key_file.json``."""
        if self._keys is None:
            raw = json.loads((self.work_dir / "key_file.json").read_text())
            self._keys = Keys(raw["management"]["key"], raw["inference"]["key"])
        return self._keys

    def wait_started(self, deadline: float) -> None:
        """Until the management API answers with our key (or Java exits, or time runs out)."""
        while time.monotonic() < deadline:
            self._raise_if_exited()
            if (self.work_dir / "key_file.json").is_file():
                try:
                    if self.management("GET", "/models", timeout=2).status_code == 200:
                        return
                except (requests.RequestException, ValueError, KeyError):
                    self._keys = None  # the key file may have been half written
            time.sleep(0.2)
        raise TorchServeStartError("TorchServe's management API did not come up in time")

    def management(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> requests.Response:
        """A call to the management API with the management key."""
        headers = {"Authorization": f"Bearer {self.keys().management}"}
        return requests.request(
            method, f"{self.management_url}{path}", params=params, headers=headers, timeout=timeout
        )

    def register(
        self, model_name: str, workers: int, response_timeout_s: int, deadline: float
    ) -> None:
        """Register the model synchronously: the call returns once its workers have loaded it.

        Raises:
            TorchServeStartError: TorchServe refused the model or its handler failed to load.
        """
        params = {
            "url": self.store.url,
            "model_name": model_name,
            "initial_workers": str(workers),
            "synchronous": "true",
            "response_timeout": str(response_timeout_s),
        }
        timeout = max(deadline - time.monotonic(), 1.0)
        try:
            response = self.management("POST", "/models", params=params, timeout=timeout)
        except requests.RequestException as error:
            raise TorchServeStartError(f"registering the model failed: {error}") from error
        if response.status_code != 200:
            raise TorchServeStartError(
                f"TorchServe refused the model ({response.status_code}): {_message(response)}"
            )

    def ready_workers(self, model_name: str) -> int:
        """How many of the model's workers are READY (0 when TorchServe does not answer)."""
        try:
            response = self.management("GET", f"/models/{model_name}", timeout=5)
        except requests.RequestException:
            return 0
        try:
            workers = response.json()[0]["workers"] if response.status_code == 200 else []
        except (ValueError, LookupError, TypeError):
            return 0
        return sum(1 for worker in workers if worker.get("status") == "READY")

    def _raise_if_exited(self) -> None:
        code = self.exit_code()
        if code is not None:
            raise TorchServeStartError(f"TorchServe exited with status {code} while starting")

    def stop(self) -> None:
        """SIGTERM to Java (it stops its workers), then SIGKILL to what is left of the group."""
        if self.popen is None:
            return
        group = self.popen.pid
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def _die_with_parent() -> None:
    """In the child: SIGKILL when the runtime dies, even by SIGKILL (Linux prctl).

    Java runs in its own process group (so ``stop`` can reach its workers), which a
    supervisor killing the runtime's group would miss; this closes that gap. The workers
    exit when Java's socket closes.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _message(response: requests.Response) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text.strip()[:500]
