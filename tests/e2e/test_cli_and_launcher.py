"""``openmaker up`` and ``openmaker admin`` as a user runs them, in child processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import (
    REPO_ROOT,
    STOP_TIMEOUT_S,
    RunningPlatform,
    platform_env,
    spawn_platform,
    start_platform,
    stop_platform,
    stop_process,
)


def openmaker(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openmaker", *args],
        cwd=REPO_ROOT,
        env=platform_env(home),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def group_is_gone(pgid: int) -> bool:
    """True when no process of the launcher's group (server and its workers) is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def experiments(running: RunningPlatform, token: str | None = None) -> requests.Response:
    headers = {"x-nhn-authorization": f"Bearer {token or running.token}"}
    return requests.get(f"{running.api_url}/experiments", headers=headers, timeout=10)


def test_first_start_creates_credentials_and_a_restart_reuses_them(tmp_path: Path) -> None:
    home = tmp_path / "home"

    first = start_platform(home, tmp_path / "first.log")
    credentials_file = home / "credentials.json"
    mode = stat.S_IMODE(credentials_file.stat().st_mode)
    saved = json.loads(credentials_file.read_text())
    created = requests.post(
        f"{first.api_url}/experiments",
        json={"experimentName": "survives-restart"},
        headers=first.auth_headers,
        timeout=10,
    )
    first_code = stop_platform(first)

    second = start_platform(home, tmp_path / "second.log")
    listed = experiments(second)
    second.process.send_signal(signal.SIGINT)
    second_code = second.process.wait(timeout=STOP_TIMEOUT_S)

    assert f"appkey: {first.appkey}  (created)" in first.output()
    assert f"token:  {first.token}" in first.output()
    assert str(credentials_file) in first.output()
    assert mode == 0o600
    assert saved == {"appkey": first.appkey, "token": first.token}
    assert (home / "openmaker.db").is_file()
    assert created.status_code == 201
    assert first_code == 0, first.output()
    assert group_is_gone(first.process.pid)
    assert f"appkey: {first.appkey}  (existing)" in second.output()
    assert (second.appkey, second.token) == (first.appkey, first.token)
    assert [e["experimentName"] for e in listed.json()["experimentList"]] == ["survives-restart"]
    assert second_code == 0, second.output()
    assert group_is_gone(second.process.pid)


def test_a_damaged_credentials_file_is_replaced_by_new_credentials(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "credentials.json").write_text('{"appkey": "nope", "token": "nope"}')

    running = start_platform(home, tmp_path / "up.log")
    reply = experiments(running)
    code = stop_platform(running)

    assert running.appkey != "nope"
    assert "(created)" in running.output()
    assert reply.status_code == 200
    assert code == 0, running.output()


def test_up_exits_non_zero_when_its_port_is_taken(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    log_path = tmp_path / "up.log"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = spawn_platform(home, taken.getsockname()[1], log_path)
        try:
            code = process.wait(timeout=30)
        finally:
            stop_process(process)

    assert code != 0, log_path.read_text()
    assert "in use" in log_path.read_text()


def test_admin_commands_make_appkeys_and_tokens_the_running_platform_accepts(
    platform: RunningPlatform,
) -> None:
    created = openmaker(platform.home, "admin", "create-appkey", "--name", "e2e-cli")
    lines = dict(line.split(":", 1) for line in created.stdout.splitlines())
    appkey, token = lines["appkey"].strip(), lines["token"].strip()
    extra = openmaker(platform.home, "admin", "create-token", appkey, "--description", "second")
    extra_token = extra.stdout.split(":", 1)[1].strip()
    listed = openmaker(platform.home, "admin", "list-appkeys")
    unknown = openmaker(platform.home, "admin", "create-token", "no-such-appkey")

    own = requests.get(
        f"{platform.base_url}/v1.0/appkeys/{appkey}/experiments",
        headers={"x-nhn-authorization": f"Bearer {token}"},
        timeout=10,
    )
    second = requests.get(
        f"{platform.base_url}/v1.0/appkeys/{appkey}/flavors",
        headers={"X-EasyMaker-Token": extra_token},
        timeout=10,
    )
    cross_tenant = experiments(platform, token)

    assert created.returncode == 0, created.stderr
    assert extra.returncode == 0, extra.stderr
    assert own.status_code == 200
    assert own.json()["experimentList"] == []
    assert second.status_code == 200
    assert cross_tenant.status_code in (403, 404)
    assert cross_tenant.json()["header"]["isSuccessful"] is False
    assert listed.returncode == 0
    assert f"{appkey}\te2e-cli\t2 token(s)" in listed.stdout
    assert platform.appkey in listed.stdout
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error:")
    assert "Traceback" not in unknown.stderr


@pytest.mark.parametrize("args", [["--help"], ["up", "--help"], ["admin", "--help"]])
def test_the_cli_explains_itself(tmp_path: Path, args: list[str]) -> None:
    result = openmaker(tmp_path, *args)

    assert result.returncode == 0, result.stderr
    assert "usage: openmaker" in result.stdout
    assert not (tmp_path / "openmaker.db").exists()


def test_the_running_platform_ticks_every_second(platform: RunningPlatform) -> None:
    """The embedded timer runs the same tick() as the scheduled trigger: an expired
    idempotency record written into the platform's database disappears within seconds."""
    import time
    from datetime import timedelta

    from chalicelib.domain.common import utc_now
    from chalicelib.store.db import Database
    from chalicelib.store.models import IdempotencyRecord

    database = Database(f"sqlite:///{platform.home / 'openmaker.db'}")
    try:
        with database.session() as session:
            session.add(
                IdempotencyRecord(
                    appkey=platform.appkey,
                    key="expired-by-the-tick",
                    fingerprint="0" * 64,
                    status_code=201,
                    response_body="{}",
                    created_at=utc_now() - timedelta(hours=25),
                )
            )
        deadline = time.monotonic() + 15
        remaining: IdempotencyRecord | None = None
        while time.monotonic() < deadline:
            with database.session() as session:
                remaining = session.get(
                    IdempotencyRecord, (platform.appkey, "expired-by-the-tick")
                )
            if remaining is None:
                break
            time.sleep(0.25)
        assert remaining is None
    finally:
        database.dispose()


def test_up_starts_the_gateway_on_https_with_the_platforms_own_ca(
    platform: RunningPlatform,
) -> None:
    where = json.loads((platform.home / "gateway.json").read_text())
    assert where["ca"] == str(platform.home / "tls" / "ca.pem")
    deadline = time.monotonic() + 30
    while True:
        try:
            reply = requests.get(
                f"{where['url']}/nope/v2/health/ready", verify=where["ca"], timeout=2
            )
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, platform.output()
            time.sleep(0.2)

    assert reply.status_code == 404 and "no endpoint stage nope" in reply.json()["error"]
    assert requests.get(f"{where['adminUrl']}/routes", timeout=5).json() == {"stages": {}}
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{where['url']}/nope/v2", verify=True, timeout=5)
