"""Faults of the embedded platform lose no state: a killed server worker, a killed launcher."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import requests

from tests.e2e.conftest import start_platform, stop_platform, wait_until_healthy


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _descendants(pid: int) -> list[int]:
    result: list[int] = []
    frontier = [pid]
    while frontier:
        children = [child for parent in frontier for child in _children(parent)]
        result.extend(children)
        frontier = children
    return result


def _server_and_workers(launcher: int) -> list[int]:
    """The HTTP server under the launcher (not the gateway beside it), then its workers."""
    servers = [
        pid for pid in _children(launcher) if "granian" in " ".join(psutil.Process(pid).cmdline())
    ]
    assert len(servers) == 1, servers
    return [servers[0], *_descendants(servers[0])]


def test_a_killed_server_worker_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    running = start_platform(tmp_path / "home")
    try:
        created = requests.post(
            f"{running.api_url}/experiments",
            json={"experimentName": "before-the-crash"},
            headers=running.auth_headers,
            timeout=10,
        ).json()["experiment"]
        server, *workers = _server_and_workers(running.process.pid)
        assert workers, "expected the server process and its workers"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        wait_until_healthy(running.process, running.base_url, running.log_path)
        server_again, *workers_again = _server_and_workers(running.process.pid)
        assert server_again == server
        assert workers_again and not set(workers_again) & set(workers)
        fetched = requests.get(
            f"{running.api_url}/experiments/{created['experimentId']}",
            headers=running.auth_headers,
            timeout=10,
        )
        assert fetched.status_code == 200
        assert fetched.json()["experiment"]["experimentName"] == "before-the-crash"
    finally:
        stop_platform(running)


def test_a_launcher_killed_without_warning_restarts_with_its_data(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start_platform(home)
    created = requests.post(
        f"{first.api_url}/experiments",
        json={"experimentName": "survives-sigkill"},
        headers=first.auth_headers,
        timeout=10,
    ).json()["experiment"]
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)

    second = start_platform(home)
    try:
        assert (second.appkey, second.token) == (first.appkey, first.token)
        fetched = requests.get(
            f"{second.api_url}/experiments/{created['experimentId']}",
            headers=second.auth_headers,
            timeout=10,
        )
        assert fetched.json()["experiment"]["experimentName"] == "survives-sigkill"
    finally:
        stop_platform(second)
