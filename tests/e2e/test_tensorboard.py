"""``tensorboardAccessUri`` opens a real TensorBoard, and only for the tenant it belongs to.

The platform is ``openmaker up`` with its access log on; trainings (and a tuning's trials) run
on the session's Ray head and write scalars to ``EM_TENSORBOARD_LOG_DIR`` with TensorBoard's
own writer. Every request goes over HTTP to the platform, which starts a TensorBoard per board
on demand.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.e2e.conftest import (
    REPO_ROOT,
    RunningPlatform,
    free_port,
    platform_env,
    stop_platform,
    wait_until_healthy,
)

CPU_IMAGE = "Ubuntu 22.04 CPU PyTorch Training"
ONE_CPU = "m2.c1m2"
ENDED = {"COMPLETE", "FAIL_TRAIN", "CREATE_FAILED", "STOPPED"}
BOARD_TIMEOUT_S = 60.0
WRITER = """\
import os
import sys

from tensorboard.summary import Writer

tag = sys.argv[sys.argv.index("--tag") + 1] if "--tag" in sys.argv else "loss/train"
writer = Writer(os.environ["EM_TENSORBOARD_LOG_DIR"])
for step in range(5):
    writer.add_scalar(tag, 1.0 / (step + 1), step=step)
writer.close()
print("scalars written", flush=True)
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def start_with_env(home: Path, **extra_env: str) -> RunningPlatform:
    """``start_platform`` with more environment: granian's access log on
    (``OPENMAKER_ACCESS_LOG``), so the test can read what the server logs about each URL,
    and whatever else the test sets."""
    home.mkdir(parents=True, exist_ok=True)
    log_path = home.parent / f"{home.name}-up.log"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "openmaker", "up", "--port", str(port)]
    command += ["--workers", "1", "--threads", "4"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**platform_env(home), "OPENMAKER_ACCESS_LOG": "1", **extra_env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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


@pytest.fixture(scope="module")
def board_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = start_with_env(tmp_path_factory.mktemp("tensorboard") / "openmaker-home")
    yield running
    code = stop_platform(running)
    assert code == 0, f"openmaker up did not stop cleanly ({code}):\n{running.output()}"


@dataclass
class Tenant:
    appkey: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-nhn-authorization": f"Bearer {self.token}"}


def create_tenant(platform: RunningPlatform) -> Tenant:
    """A second appkey and token, made with ``openmaker admin`` as an operator would."""
    done = subprocess.run(
        [sys.executable, "-m", "openmaker", "admin", "create-appkey", "--name", unique("other")],
        cwd=REPO_ROOT,
        env=platform_env(platform.home),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines())
    return Tenant(lines["appkey"].strip(), lines["token"].strip())


def api(platform: RunningPlatform, method: str, path: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("headers", platform.auth_headers)
    return requests.request(method, f"{platform.api_url}{path}", timeout=30, **kwargs)


def catalog_id(platform: RunningPlatform, resource: str, key: str, name: str) -> str:
    reply = api(platform, "GET", f"/{resource}")
    assert reply.status_code == 200, reply.text
    items = reply.json()[f"{resource[:-1]}List"]
    found: str = next(item for item in items if item[key] == name)[
        "imageId" if resource == "images" else "id"
    ]
    return found


def run_training(
    platform: RunningPlatform, experiment_name: str, source: Path, models: Path, tag: str
) -> dict[str, Any]:
    name = unique("train")
    body = {
        "trainingName": name,
        "experimentName": experiment_name,
        "imageId": catalog_id(platform, "images", "imageName", CPU_IMAGE),
        "flavorId": catalog_id(platform, "flavors", "name", ONE_CPU),
        "sourceDirUri": f"file://{source}",
        "entryPoint": "writer.py",
        "modelUploadUri": f"file://{models / name}",
        "hyperparameterList": [{"parameterName": "tag", "parameterValue": tag}],
        "timeoutMinutes": 10,
    }
    reply = api(platform, "POST", "/trainings", json=body)
    assert reply.status_code == 201, reply.text
    training: dict[str, Any] = reply.json()["training"]
    return training


def wait_complete(platform: RunningPlatform, training_id: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        reply = api(platform, "GET", f"/trainings/{training_id}")
        status = reply.json()["training"]["trainingStatusCode"]
        if status in ENDED:
            break
        time.sleep(0.3)
    assert status == "COMPLETE", f"training {training_id} ended {status!r}"


def poll(
    fetch: Callable[[], requests.Response],
    done: Callable[[Any], bool],
    timeout: float = BOARD_TIMEOUT_S,
) -> Any:
    """TensorBoard reads new event files every few seconds: ask until the answer is there."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        reply = fetch()
        assert reply.status_code == 200, reply.text[:500]
        last = reply.json()
        if done(last):
            return last
        time.sleep(0.5)
    raise AssertionError(f"TensorBoard never answered as expected; last answer {last!r}")


@dataclass
class Trained:
    experiment: dict[str, Any]
    first: dict[str, Any]
    second: dict[str, Any]
    source: Path
    models: Path


@pytest.fixture(scope="module")
def trained(board_platform: RunningPlatform, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One experiment with two completed trainings that wrote scalars under different tags."""
    work = tmp_path_factory.mktemp("tensorboard-work")
    source, models = work / "src", work / "models"
    source.mkdir()
    (source / "writer.py").write_text(WRITER)
    experiment_name = unique("exp")
    first = run_training(board_platform, experiment_name, source, models, "loss/first")
    second = run_training(board_platform, experiment_name, source, models, "loss/second")
    for training in (first, second):
        wait_complete(board_platform, training["trainingId"])
    reply = api(board_platform, "GET", f"/experiments/{first['experimentId']}")
    assert reply.status_code == 200, reply.text
    return Trained(reply.json()["experiment"], first, second, source, models)


def assert_envelope(reply: requests.Response, status: int, code: int) -> None:
    assert reply.status_code == status, reply.text[:500]
    assert reply.headers["Content-Type"] == "application/json"
    header = reply.json()["header"]
    assert header["isSuccessful"] is False
    assert header["resultCode"] == code
    assert header["requestId"] == reply.headers["X-Request-Id"]


def new_ticket(
    platform: RunningPlatform, body: dict[str, str], headers: dict[str, str] | None = None
) -> requests.Response:
    return api(
        platform,
        "POST",
        "/tensorboard-tickets",
        json=body,
        headers=headers or platform.auth_headers,
    )


# --- the tests -----------------------------------------------------------------------------


def test_a_board_without_a_valid_token_is_unauthorized(
    board_platform: RunningPlatform, trained: Trained
) -> None:
    uri = trained.first["tensorboardAccessUri"]

    assert_envelope(requests.get(uri, timeout=30), 401, 40100)
    assert_envelope(requests.get(f"{uri}data/runs", timeout=30), 401, 40100)
    unknown = {"x-nhn-authorization": "Bearer omk_not-a-real-token"}
    reply = requests.get(f"{uri}data/runs", headers=unknown, timeout=30)
    assert_envelope(reply, 401, 40100)
    assert "omk_not-a-real-token" not in reply.text
    assert_envelope(
        requests.get(f"{uri}data/runs", cookies={"om_tb": "forged.cookie"}, timeout=30),
        401,
        40100,
    )


def test_the_training_board_shows_the_scalars_its_code_wrote(
    board_platform: RunningPlatform, trained: Trained
) -> None:
    uri = trained.first["tensorboardAccessUri"]
    training_id = trained.first["trainingId"]
    logdir = board_platform.home / "storage" / "tensorboard" / board_platform.appkey / training_id

    runs = poll(
        lambda: requests.get(f"{uri}data/runs", headers=board_platform.auth_headers, timeout=60),
        lambda body: body == ["."],
    )
    tags = poll(
        lambda: requests.get(
            f"{uri}data/plugin/scalars/tags",
            headers={"X-EasyMaker-Token": board_platform.token},
            timeout=60,
        ),
        lambda body: "loss/first" in body.get(".", {}),
    )
    scalars = requests.get(
        f"{uri}data/plugin/scalars/scalars",
        params={"run": ".", "tag": "loss/first"},
        headers=board_platform.auth_headers,
        timeout=60,
    )
    page = requests.get(uri, headers=board_platform.auth_headers, timeout=60)

    assert uri == f"{board_platform.base_url}/tensorboard/trainings/{training_id}/"
    assert any(logdir.glob("events.out.tfevents.*")), "the training wrote no event file"
    assert runs == ["."]
    assert set(tags["."]) == {"loss/first"}
    assert scalars.status_code == 200
    assert [(step, round(value, 3)) for _, step, value in scalars.json()] == [
        (step, round(1 / (step + 1), 3)) for step in range(5)
    ]
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<html" in page.text.lower()


def test_another_tenant_finds_no_board_and_gets_no_ticket(
    board_platform: RunningPlatform, trained: Trained
) -> None:
    other = create_tenant(board_platform)
    training_uri = trained.first["tensorboardAccessUri"]
    experiment_uri = trained.experiment["tensorboardAccessUri"]
    other_api = f"{board_platform.base_url}/v1.0/appkeys/{other.appkey}"

    for uri in (training_uri, f"{training_uri}data/runs", f"{experiment_uri}data/runs"):
        assert_envelope(requests.get(uri, headers=other.headers, timeout=30), 404, 40400)
    ticket = requests.post(
        f"{other_api}/tensorboard-tickets",
        json={"trainingId": trained.first["trainingId"]},
        headers=other.headers,
        timeout=30,
    )
    borrowed = new_ticket(
        board_platform, {"trainingId": trained.first["trainingId"]}, other.headers
    )
    missing = requests.get(
        f"{board_platform.base_url}/tensorboard/trainings/{uuid.uuid4()}/data/runs",
        headers=board_platform.auth_headers,
        timeout=30,
    )

    assert_envelope(ticket, 404, 40400)
    assert_envelope(borrowed, 403, 40300)
    assert_envelope(missing, 404, 40400)


def test_a_ticket_opens_the_board_in_a_browser_session_and_leaves_no_trace(
    board_platform: RunningPlatform, trained: Trained
) -> None:
    training_id = trained.first["trainingId"]
    uri = trained.first["tensorboardAccessUri"]
    created = new_ticket(board_platform, {"trainingId": training_id})
    assert created.status_code == 201, created.text
    issued = created.json()["tensorboardTicket"]
    ticket = parse_qs(urlsplit(issued["url"]).query)["ticket"][0]
    browser = requests.Session()

    opened = browser.get(issued["url"], allow_redirects=False, timeout=30)
    followed = browser.get(f"{board_platform.base_url}{opened.headers['Location']}", timeout=60)
    runs = browser.get(f"{uri}data/runs", timeout=60)
    elsewhere = browser.get(f"{trained.second['tensorboardAccessUri']}data/runs", timeout=30)
    experiment = browser.get(f"{trained.experiment['tensorboardAccessUri']}data/runs", timeout=30)

    assert issued["url"].startswith(f"{uri}?ticket=")
    assert issued["expiresAt"]
    assert opened.status_code == 302
    assert opened.headers["Location"] == urlsplit(uri).path
    assert opened.headers["Cache-Control"] == "no-store"
    cookie = opened.headers["Set-Cookie"]
    assert cookie.startswith("om_tb=")
    assert f"Path={urlsplit(uri).path};" in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=43200" in cookie
    assert ticket not in cookie
    assert followed.status_code == 200
    assert followed.headers["Content-Type"].startswith("text/html")
    assert runs.status_code == 200 and isinstance(runs.json(), list)
    assert_envelope(elsewhere, 401, 40100)  # the cookie is scoped to one board
    assert_envelope(experiment, 401, 40100)
    assert "x-nhn-authorization" not in runs.request.headers
    path = urlsplit(uri).path
    deadline = time.monotonic() + 10
    while path not in board_platform.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = board_platform.output()
    assert path in log, "the access log should name the board's path"
    assert ticket not in log
    assert board_platform.token not in log.split(f"token:  {board_platform.token}", 1)[-1]


def test_a_tampered_expired_or_misdirected_ticket_is_unauthorized(
    board_platform: RunningPlatform, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.api import tensorboard as boards
    from chalicelib.config import reset_settings

    first, second = trained.first["trainingId"], trained.second["trainingId"]
    issued = new_ticket(board_platform, {"trainingId": first}).json()["tensorboardTicket"]
    url = issued["url"]
    body, mac = parse_qs(urlsplit(url).query)["ticket"][0].split(".")
    tampered = url.replace(mac, mac[::-1])
    second_uri = trained.second["tensorboardAccessUri"]
    misdirected = f"{second_uri}?ticket={body}.{mac}"
    # An expired ticket, signed with the platform's own key as the route would have made it.
    monkeypatch.setenv("OPENMAKER_HOME", str(board_platform.home))
    reset_settings()
    try:
        expired, _ = boards.sign(
            boards.TICKET, board_platform.appkey, "training", first, 60, now=time.time() - 61
        )
    finally:
        monkeypatch.undo()
        reset_settings()
    old = f"{trained.first['tensorboardAccessUri']}?ticket={expired}"

    for target in (tampered, misdirected, old):
        reply = requests.get(target, allow_redirects=False, timeout=30)
        assert_envelope(reply, 401, 40100)
        assert "Set-Cookie" not in reply.headers
    assert "expired" in requests.get(old, timeout=30).json()["header"]["resultMessage"]
    assert second != first


def test_ticket_bodies_name_exactly_one_board(
    board_platform: RunningPlatform, trained: Trained
) -> None:
    both = {
        "trainingId": trained.first["trainingId"],
        "experimentId": trained.experiment["experimentId"],
    }
    assert_envelope(new_ticket(board_platform, {}), 400, 40001)
    assert_envelope(new_ticket(board_platform, both), 400, 40001)
    assert_envelope(new_ticket(board_platform, {"experimentId": "nope"}), 404, 40400)
    anonymous = api(board_platform, "POST", "/tensorboard-tickets", json={}, headers={})
    assert_envelope(anonymous, 401, 40100)


def test_the_experiment_board_lists_the_runs_of_its_trainings(
    board_platform: RunningPlatform, trained: Trained
) -> None:
    experiment = trained.experiment
    uri = experiment["tensorboardAccessUri"]
    first, second = trained.first["trainingName"], trained.second["trainingName"]

    tags = poll(
        lambda: requests.get(
            f"{uri}data/plugin/scalars/tags", headers=board_platform.auth_headers, timeout=60
        ),
        lambda body: len(body) == 2,
    )
    runs = requests.get(f"{uri}data/runs", headers=board_platform.auth_headers, timeout=60)
    ticket = new_ticket(board_platform, {"experimentId": experiment["experimentId"]})
    browser = requests.Session()
    opened = browser.get(ticket.json()["tensorboardTicket"]["url"], timeout=60)

    assert uri == (
        f"{board_platform.base_url}/tensorboard/experiments/{experiment['experimentId']}/"
    )
    assert sorted(runs.json()) == sorted([f"{first}/.", f"{second}/."])
    assert tags == {f"{first}/.": {"loss/first": tags[f"{first}/."]["loss/first"]}} | {
        f"{second}/.": {"loss/second": tags[f"{second}/."]["loss/second"]}
    }
    assert opened.status_code == 200 and opened.history[0].status_code == 302
    assert opened.url == uri


def test_a_training_added_later_joins_the_experiment_board(
    board_platform: RunningPlatform, trained: Trained
) -> None:
    uri = trained.experiment["tensorboardAccessUri"]
    poll(
        lambda: requests.get(f"{uri}data/runs", headers=board_platform.auth_headers, timeout=60),
        lambda body: len(body) >= 2,
    )
    late = run_training(
        board_platform,
        trained.experiment["experimentName"],
        trained.source,
        trained.models,
        "loss/late",
    )
    wait_complete(board_platform, late["trainingId"])

    runs = poll(
        lambda: requests.get(f"{uri}data/runs", headers=board_platform.auth_headers, timeout=60),
        lambda body: f"{late['trainingName']}/." in body,
    )

    assert len(runs) == 3


def run_tuning(platform: RunningPlatform, source: Path, models: Path) -> dict[str, Any]:
    """A GRID tuning of ``writer.py`` over two tags (two trials, one at a time) that ended."""
    (source / "tuning_writer.py").write_text(WRITER + 'print("loss=0.25", flush=True)\n')
    body = {
        "hyperparameterTuningName": unique("tune"),
        "experimentName": unique("exp"),
        "imageId": catalog_id(platform, "images", "imageName", CPU_IMAGE),
        "flavorId": catalog_id(platform, "flavors", "name", ONE_CPU),
        "instanceCount": 1,
        "parallelTrialCount": 1,
        "sourceDirUri": f"file://{source}",
        "entryPoint": "tuning_writer.py",
        "modelUploadUri": f"file://{models / 'tuning'}",
        "timeoutMinutes": 10,
        "hyperparameterSpecList": [
            {
                "hyperparameterName": "tag",
                "hyperparameterTypeCode": "categorical",
                "hyperparameterSpecifiedValues": "loss/a,loss/b",
            }
        ],
        "metricList": [{"name": "loss"}],
        "objectiveMetric": {"name": "loss"},
        "objectiveTypeCode": "MINIMIZE",
        "maxTrialCount": 2,
        "tuningStrategyName": "GRID",
    }
    reply = api(platform, "POST", "/hyperparameter-tunings", json=body)
    assert reply.status_code == 201, reply.text
    tuning_id = reply.json()["hyperparameterTuning"]["hyperparameterTuningId"]
    deadline = time.monotonic() + 300
    while True:
        tuning: dict[str, Any] = api(
            platform, "GET", f"/hyperparameter-tunings/{tuning_id}"
        ).json()["hyperparameterTuning"]
        status = tuning["hyperparameterTuningStatusCode"]
        if status == "COMPLETE" or "FAIL" in status or "STOP" in status:
            break
        assert time.monotonic() < deadline, f"tuning {tuning_id} still {status}"
        time.sleep(0.5)
    assert status == "COMPLETE", tuning
    return tuning


def test_the_tuning_board_shows_one_run_per_trial(
    board_platform: RunningPlatform, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    tuning = run_tuning(board_platform, source, tmp_path / "models")
    tuning_id = tuning["hyperparameterTuningId"]
    uri = tuning["tensorboardAccessUri"]

    tags = poll(
        lambda: requests.get(
            f"{uri}data/plugin/scalars/tags", headers=board_platform.auth_headers, timeout=60
        ),
        lambda body: len(body) == 2,
    )
    ticket = new_ticket(board_platform, {"hyperparameterTuningId": tuning_id})
    browser = requests.Session()
    opened = browser.get(ticket.json()["tensorboardTicket"]["url"], timeout=60)
    other = create_tenant(board_platform)
    foreign = requests.get(f"{uri}data/runs", headers=other.headers, timeout=30)

    assert uri == f"{board_platform.base_url}/tensorboard/hyperparameter-tunings/{tuning_id}/"
    assert sorted(tags) == ["trial-0/.", "trial-1/."]
    assert sorted(tag for run in tags.values() for tag in run) == ["loss/a", "loss/b"]
    assert opened.status_code == 200 and opened.history[0].status_code == 302
    assert opened.url == uri
    assert_envelope(foreign, 404, 40400)


# --- the manager with real TensorBoard processes, and their end with the platform ----------


def test_a_real_tensorboard_is_reused_then_stopped_when_idle(tmp_path: Path) -> None:
    from openmaker.tensorboard import TensorBoardManager

    logdir = tmp_path / "logs"
    logdir.mkdir()
    manager = TensorBoardManager(reap_every=None, log_dir=tmp_path / "boards")
    try:
        port = manager.ensure("training", "t-real", (("", str(logdir)),))
        again = manager.ensure("training", "t-real", (("", str(logdir)),))
        (pid,) = manager.pids()
        answer = requests.get(
            f"http://127.0.0.1:{port}/tensorboard/trainings/t-real/data/runs", timeout=30
        )
        kept = manager.reap(idle_seconds=60)
        stopped = manager.reap(idle_seconds=0)
    finally:
        manager.stop_all()

    assert port == again
    assert answer.status_code == 200 and answer.json() == []
    assert kept == []
    assert stopped == [("training", "t-real")]
    assert not Path(f"/proc/{pid}").exists() or "zombie" in _state(pid)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=5)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def _boards_of(home: Path) -> list[int]:
    """Pids of TensorBoard children whose command names this platform's storage."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"openmaker.tensorboard" in command and any(str(home).encode() in c for c in command):
            found.append(int(entry.name))
    return found


def test_an_idle_board_stops_and_the_platform_takes_its_boards_along(tmp_path: Path) -> None:
    running = start_with_env(tmp_path / "home", OPENMAKER_TENSORBOARD_IDLE_SECONDS="2")
    try:
        created = requests.post(
            f"{running.api_url}/experiments",
            json={"experimentName": "board-lifetime"},
            headers=running.auth_headers,
            timeout=30,
        )
        uri = created.json()["experiment"]["tensorboardAccessUri"]
        first = requests.get(f"{uri}data/runs", headers=running.auth_headers, timeout=60)
        started = _boards_of(running.home)
        deadline = time.monotonic() + 15
        while _boards_of(running.home) and time.monotonic() < deadline:
            time.sleep(0.2)
        after_idle = _boards_of(running.home)
        again = requests.get(f"{uri}data/runs", headers=running.auth_headers, timeout=60)
        restarted = _boards_of(running.home)
    finally:
        code = stop_platform(running)
    deadline = time.monotonic() + 10
    while _boards_of(running.home) and time.monotonic() < deadline:
        time.sleep(0.2)

    assert first.status_code == 200 and first.json() == []
    assert len(started) == 1
    assert after_idle == []
    assert again.status_code == 200 and again.json() == []
    assert len(restarted) == 1 and restarted != started
    assert _boards_of(running.home) == [], "a TensorBoard outlived the platform"
    assert code == 0, running.output()
