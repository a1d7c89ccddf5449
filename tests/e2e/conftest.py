"""The real platform as a user runs it: ``python -m openmaker up`` in a child process.

Every e2e test talks to that process over HTTP, through the official ``easymaker`` SDK, the
``openmaker`` CLI or a fuzzer, never to the app in-process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


@dataclass
class RunningPlatform:
    """One ``openmaker up`` process, its URL, home and default credentials."""

    base_url: str
    appkey: str
    token: str
    home: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    returncode: int | None = field(default=None)

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1.0/appkeys/{self.appkey}"

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"x-nhn-authorization": f"Bearer {self.token}"}

    def output(self) -> str:
        """Everything the launcher and its server wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def platform_env(home: Path) -> dict[str, str]:
    """The test process's environment, pointed at ``home`` with the embedded SQLite default,
    the session's Ray head and its moto S3 server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENMAKER_", "EM_"))}
    s3_endpoint = os.environ.get("OPENMAKER_TEST_S3_ENDPOINT")
    if s3_endpoint:
        env["OPENMAKER_S3_ENDPOINT_URL"] = s3_endpoint
        env["OPENMAKER_OBS_INSECURE"] = "1"
    env["OPENMAKER_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env["OPENMAKER_SAMPLE_SECONDS"] = "0.5"  # monitoring samples often enough to see
    env["OPENMAKER_GATEWAY_PORT"] = str(free_port())  # platforms side by side
    env["OPENMAKER_GATEWAY_ADMIN_PORT"] = str(free_port())
    env["OPENMAKER_STAGE_SWITCH_GRACE_SECONDS"] = "3"  # an old default stage goes soon
    env["OPENMAKER_POD_WATCH_SECONDS"] = "1"  # stage controllers look often
    env["OPENMAKER_SCALE_DOWN_SECONDS"] = "4"
    env["OPENMAKER_GATEWAY_STATS_SECONDS"] = "1"
    env["OPENMAKER_LOST_PODS_GRACE_SECONDS"] = "5"  # a stage whose pods vanished: soon again
    ray_address = os.environ.get("OPENMAKER_TEST_RAY_ADDRESS")
    if ray_address:
        env["OPENMAKER_RAY_ADDRESS"] = ray_address
    return env


def spawn_platform(
    home: Path, port: int, log_path: Path, extra_args: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start ``openmaker up`` in its own process group, output appended to ``log_path``."""
    command = [sys.executable, "-m", "openmaker", "up", "--port", str(port)]
    command += ["--workers", "1", "--threads", "4", *extra_args]
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=platform_env(home),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until_healthy(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"openmaker up exited with {process.returncode} before it was healthy:\n"
                + log_path.read_text(errors="replace")
            )
        try:
            if requests.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    stop_process(process)
    pytest.fail(
        f"openmaker up was not healthy within {START_TIMEOUT_S:.0f} s:\n"
        + log_path.read_text(errors="replace")
    )


def start_platform(
    home: Path, log_path: Path | None = None, port: int | None = None
) -> RunningPlatform:
    """Start the platform on ``port`` (a free one by default) and wait for ``/health``."""
    home.mkdir(parents=True, exist_ok=True)
    log_path = log_path or home.parent / f"{home.name}-up.log"
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    process = spawn_platform(home, port, log_path)
    wait_until_healthy(process, base_url, log_path)
    credentials: dict[str, Any] = json.loads((home / "credentials.json").read_text())
    return RunningPlatform(
        base_url=base_url,
        appkey=credentials["appkey"],
        token=credentials["token"],
        home=home,
        process=process,
        log_path=log_path,
    )


def stop_process(process: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, then SIGKILL to the whole group; the exit code, or None if it had to be killed."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)
        return None


def stop_platform(running: RunningPlatform) -> int | None:
    running.returncode = stop_process(running.process)
    return running.returncode


@pytest.fixture(scope="session", autouse=True)
def _shared_ray(ray_head: str, s3_endpoint: str) -> Iterator[str]:
    """Every platform of the e2e session uses the session's Ray head and S3 server."""
    os.environ["OPENMAKER_TEST_S3_ENDPOINT"] = s3_endpoint
    yield ray_head
    os.environ.pop("OPENMAKER_TEST_S3_ENDPOINT", None)


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """One platform process shared by the whole e2e session; it must stop cleanly on SIGTERM."""
    home = tmp_path_factory.mktemp("e2e") / "openmaker-home"
    running = start_platform(home)
    yield running
    code = stop_platform(running)
    assert code == 0, f"openmaker up did not stop cleanly ({code}):\n{running.output()}"


@pytest.fixture
def sdk(platform: RunningPlatform, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The official ``easymaker`` SDK initialised against the platform (its own environment).

    ``EM_API_URL`` is what points the SDK here; ``EM_PROFILE=local`` would force port 10090.
    ``easymaker.init`` writes ``EM_APPKEY``/``EM_REGION``/``EM_ACCESS_TOKEN`` into
    ``os.environ``; setting them through monkeypatch first makes the teardown undo that.
    """
    import easymaker

    for name in ("EM_PROFILE", "EM_TOKEN", "EM_ENVIRONMENT_TYPE", "EM_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EM_API_URL", platform.base_url)
    monkeypatch.setenv("EM_APPKEY", platform.appkey)
    monkeypatch.setenv("EM_REGION", "kr1")
    monkeypatch.setenv("EM_ACCESS_TOKEN", platform.token)
    easymaker.init(appkey=platform.appkey, region="kr1", access_token=platform.token)
    yield easymaker
    easymaker.easymaker_config.api_sender.session.close()
