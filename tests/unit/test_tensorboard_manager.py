"""The TensorBoard manager (children started, reused, reaped, capped) and the signed tickets.

The manager's seams (``spawn``, ``wait_ready``, ``clock``) are replaced by fakes here, so no
TensorBoard runs and no socket opens; ``tests/e2e/test_tensorboard.py`` runs the real ones.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pydantic
import pytest

from chalicelib.api import tensorboard as boards
from chalicelib.errors import MethodNotAllowedError, NotFoundError, UnauthorizedError
from openmaker import tensorboard
from openmaker.tensorboard import (
    TensorBoardManager,
    TensorBoardProxy,
    TensorBoardStartError,
    child_command,
)

TRAINING_DIR = (("", "/data/tb/app/t1"),)


class FakeProcess:
    """What the manager uses of a ``Popen``: poll, terminate, kill, wait, pid, stdout."""

    next_pid = 1000

    def __init__(self, command: list[str]) -> None:
        FakeProcess.next_pid += 1
        self.pid = FakeProcess.next_pid
        self.command = command
        self.returncode: int | None = None
        self.stdout = None
        self.terminated = False

    def poll(self) -> int | None:
        return self.returncode

    def terminate(self) -> None:
        self.terminated = True
        self.returncode = -15

    def kill(self) -> None:
        self.returncode = -9

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, **options: Any) -> None:
        self.clock = Clock()
        self.spawned: list[FakeProcess] = []
        self.ports = iter(range(20000, 21000))
        self.fail_next = False
        self.manager = TensorBoardManager(
            reap_every=None,
            clock=self.clock,
            spawn=self.spawn,
            wait_ready=self.wait_ready,
            **options,
        )

    def spawn(self, command: list[str], log_path: Path | None) -> Any:
        process = FakeProcess(command)
        self.spawned.append(process)
        return process

    def wait_ready(self, process: Any, timeout: float) -> str:
        if self.fail_next:
            self.fail_next = False
            raise TensorBoardStartError("did not start (test)")
        return f"http://127.0.0.1:{next(self.ports)}/tensorboard/x/"


@pytest.fixture
def harness() -> Harness:
    return Harness(idle_seconds=600)


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


# --- the manager ---------------------------------------------------------------------------


def test_a_second_ensure_reuses_the_running_tensorboard(harness: Harness) -> None:
    first = harness.manager.ensure("training", "t1", TRAINING_DIR)
    second = harness.manager.ensure("training", "t1", TRAINING_DIR)

    assert first == second == 20000
    assert len(harness.spawned) == 1
    assert harness.manager.running() == {("training", "t1"): 20000}


def test_the_child_is_tensorboard_on_loopback_under_the_board_prefix(harness: Harness) -> None:
    harness.manager.ensure("training", "t1", TRAINING_DIR)
    harness.manager.ensure("experiment", "e1", (("a", "/d/a"), ("b", "/d/b")))
    training, experiment = (p.command for p in harness.spawned)

    assert training[:3] == [sys.executable, "-m", "openmaker.tensorboard"]
    assert flag(training, "--parent") == str(os.getpid())
    assert flag(training, "--logdir") == "/data/tb/app/t1"
    assert "--logdir_spec" not in training
    assert flag(training, "--host") == "127.0.0.1"
    assert flag(training, "--path_prefix") == "/tensorboard/trainings/t1"
    assert flag(training, "--reload_interval") == "5"
    assert flag(experiment, "--logdir_spec") == "a:/d/a,b:/d/b"
    assert flag(experiment, "--path_prefix") == "/tensorboard/experiments/e1"


def test_a_tuning_board_shows_one_run_per_trial_under_its_own_prefix(harness: Harness) -> None:
    trials = (("trial-0", "/tb/app/trial-a"), ("trial-1", "/tb/app/trial-b"))
    port = harness.manager.ensure("hyperparameter-tuning", "h1", trials)
    (tuning,) = (p.command for p in harness.spawned)

    assert flag(tuning, "--logdir_spec") == "trial-0:/tb/app/trial-a,trial-1:/tb/app/trial-b"
    assert flag(tuning, "--path_prefix") == "/tensorboard/hyperparameter-tunings/h1"
    assert harness.manager.running() == {("hyperparameter-tuning", "h1"): port}


def test_an_idle_tensorboard_is_stopped_and_started_again_on_the_next_request(
    harness: Harness,
) -> None:
    harness.manager.ensure("training", "t1", TRAINING_DIR)
    harness.clock.now += 599
    kept = harness.manager.reap()
    harness.clock.now += 1
    stopped = harness.manager.reap()
    again = harness.manager.ensure("training", "t1", TRAINING_DIR)

    assert kept == []
    assert stopped == [("training", "t1")]
    assert harness.spawned[0].terminated
    assert len(harness.spawned) == 2 and again == 20001


def test_each_request_keeps_a_board_alive(harness: Harness) -> None:
    harness.manager.ensure("training", "t1", TRAINING_DIR)
    for _ in range(3):
        harness.clock.now += 400
        harness.manager.ensure("training", "t1", TRAINING_DIR)
        assert harness.manager.reap() == []
    harness.clock.now += 400
    harness.manager.touch("training", "t1")

    assert harness.manager.reap() == []
    assert len(harness.spawned) == 1


def test_reap_with_zero_idle_seconds_stops_everything(harness: Harness) -> None:
    harness.manager.ensure("training", "t1", TRAINING_DIR)
    harness.manager.ensure("training", "t2", TRAINING_DIR)

    stopped = harness.manager.reap(idle_seconds=0)

    assert sorted(stopped) == [("training", "t1"), ("training", "t2")]
    assert all(p.terminated for p in harness.spawned)
    assert harness.manager.running() == {}


def test_the_least_recently_used_board_makes_room_at_the_cap() -> None:
    harness = Harness(max_boards=2)
    harness.manager.ensure("training", "t1", TRAINING_DIR)
    harness.clock.now += 1
    harness.manager.ensure("training", "t2", TRAINING_DIR)
    harness.clock.now += 1
    harness.manager.ensure("training", "t1", TRAINING_DIR)  # t2 is now the oldest
    harness.clock.now += 1
    harness.manager.ensure("training", "t3", TRAINING_DIR)

    assert set(harness.manager.running()) == {("training", "t1"), ("training", "t3")}
    assert [p.terminated for p in harness.spawned] == [False, True, False]


def test_changed_directories_restart_the_board(harness: Harness) -> None:
    harness.manager.ensure("experiment", "e1", (("a", "/d/a"),))
    port = harness.manager.ensure("experiment", "e1", (("a", "/d/a"), ("b", "/d/b")))

    assert harness.spawned[0].terminated
    assert port == 20001
    assert flag(harness.spawned[1].command, "--logdir_spec") == "a:/d/a,b:/d/b"


def test_a_tensorboard_that_died_is_started_again(harness: Harness) -> None:
    harness.manager.ensure("training", "t1", TRAINING_DIR)
    harness.spawned[0].returncode = 1

    port = harness.manager.ensure("training", "t1", TRAINING_DIR)

    assert port == 20001 and len(harness.spawned) == 2


def test_a_failed_start_is_reported_and_forgotten(harness: Harness) -> None:
    harness.fail_next = True
    with pytest.raises(TensorBoardStartError):
        harness.manager.ensure("training", "t1", TRAINING_DIR)

    assert harness.spawned[0].terminated
    assert harness.manager.running() == {}
    assert harness.manager.ensure("training", "t1", TRAINING_DIR) == 20000


def test_concurrent_requests_for_one_board_start_one_tensorboard(harness: Harness) -> None:
    slow_ready = harness.wait_ready

    def wait_ready(process: Any, timeout: float) -> str:
        time.sleep(0.05)
        return slow_ready(process, timeout)

    harness.manager._wait_ready = wait_ready
    ports: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: ports.append(harness.manager.ensure("training", "t1", TRAINING_DIR))
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert ports == [20000] * 8
    assert len(harness.spawned) == 1


def test_a_board_reaped_while_a_request_waited_for_it_is_started_afresh(
    harness: Harness,
) -> None:
    harness.manager.ensure("training", "t1", TRAINING_DIR)
    old = harness.manager._boards[("training", "t1")]
    old.lock.acquire()  # as if another request were (re)starting it
    ports: list[int] = []
    waiter = threading.Thread(
        target=lambda: ports.append(harness.manager.ensure("training", "t1", TRAINING_DIR))
    )
    waiter.start()
    time.sleep(0.05)
    with harness.manager._lock:  # it is evicted meanwhile
        del harness.manager._boards[("training", "t1")]
    harness.manager._terminate(old)
    old.lock.release()
    waiter.join(timeout=5)

    assert ports == [20001]
    assert harness.manager.running() == {("training", "t1"): 20001}


def test_reaping_skips_a_board_that_is_starting() -> None:
    harness = Harness(idle_seconds=0)
    started = threading.Event()
    release = threading.Event()
    ready = harness.wait_ready

    def wait_ready(process: Any, timeout: float) -> str:
        started.set()
        release.wait(5)
        return ready(process, timeout)

    harness.manager._wait_ready = wait_ready
    thread = threading.Thread(target=harness.manager.ensure, args=("training", "t1", TRAINING_DIR))
    thread.start()
    assert started.wait(5)
    reaped_while_starting = harness.manager.reap()
    release.set()
    thread.join(timeout=5)

    assert reaped_while_starting == []
    assert harness.manager.running() == {("training", "t1"): 20000}


def test_stop_all_stops_every_child(harness: Harness) -> None:
    for name in ("t1", "t2", "t3"):
        harness.manager.ensure("training", name, TRAINING_DIR)

    harness.manager.stop_all()

    assert all(p.terminated for p in harness.spawned)
    assert harness.manager.running() == {}


def test_the_background_reaper_stops_idle_boards() -> None:
    harness = Harness(idle_seconds=0.0)
    manager = TensorBoardManager(
        idle_seconds=0.0,
        reap_every=0.02,
        spawn=harness.spawn,
        wait_ready=harness.wait_ready,
    )
    try:
        manager.ensure("training", "t1", TRAINING_DIR)
        deadline = time.monotonic() + 5
        while manager.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert manager.running() == {}
        assert harness.spawned[0].terminated
    finally:
        manager.stop_all()


# --- the real child plumbing (a stand-in child: no TensorBoard, no socket) -----------------


def test_the_ready_line_of_a_child_gives_its_port(tmp_path: Path) -> None:
    script = f"print('noise'); print('{tensorboard.READY_MARK} http://127.0.0.1:4321/p/', "
    script += "flush=True); import time; time.sleep(30)"
    process = tensorboard._spawn([sys.executable, "-c", script], tmp_path / "child.log")
    try:
        url = tensorboard._read_ready_line(process, 10)
    finally:
        process.kill()
        process.wait()

    assert tensorboard._port_of(url) == 4321


@pytest.mark.parametrize(
    "script,message",
    [("import sys; sys.exit(3)", "exited with 3"), ("import time; time.sleep(30)", "within")],
    ids=["exits", "silent"],
)
def test_a_child_that_never_gets_ready_is_an_error(
    tmp_path: Path, script: str, message: str
) -> None:
    process = tensorboard._spawn([sys.executable, "-c", script], None)
    try:
        with pytest.raises(TensorBoardStartError, match=message):
            tensorboard._read_ready_line(process, 1.0)
    finally:
        process.kill()
        process.wait()


def test_the_child_command_is_a_usage_error_without_its_parent() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "openmaker.tensorboard", "--logdir", "/x"],
        cwd=tensorboard.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    command = child_command("training", "t1", TRAINING_DIR)

    assert done.returncode == 2 and "usage" in done.stderr
    assert command[3:6] == ["--parent", str(os.getpid()), "--"]


# --- tickets and cookies -------------------------------------------------------------------


def test_a_ticket_names_its_appkey_only_for_its_own_board(openmaker_home: Path) -> None:
    ticket, expires = boards.sign(boards.TICKET, "app1", "training", "t1", 60, now=1000)

    assert expires == 1060
    assert boards.verify(boards.TICKET, ticket, "training", "t1", now=1059) == "app1"
    for kind, resource in (("training", "t2"), ("experiment", "t1")):
        with pytest.raises(UnauthorizedError):
            boards.verify(boards.TICKET, ticket, kind, resource, now=1001)  # type: ignore[arg-type]


def test_a_tuning_ticket_opens_neither_a_training_nor_an_experiment_of_that_id(
    openmaker_home: Path,
) -> None:
    ticket, _ = boards.sign(boards.TICKET, "app1", "hyperparameter-tuning", "h1", 60, now=1000)

    assert boards.verify(boards.TICKET, ticket, "hyperparameter-tuning", "h1", now=1001) == "app1"
    for kind in ("training", "experiment"):
        with pytest.raises(UnauthorizedError):
            boards.verify(boards.TICKET, ticket, kind, "h1", now=1001)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"trainingId": "t1", "experimentId": "e1"},
        {"trainingId": "t1", "hyperparameterTuningId": "h1"},
        {"experimentId": "e1", "hyperparameterTuningId": "h1"},
    ],
)
def test_a_ticket_body_must_name_exactly_one_board(body: dict[str, str]) -> None:
    with pytest.raises(pydantic.ValidationError, match="exactly one of"):
        boards.TensorBoardTicketCreate.model_validate(body)


def test_a_ticket_body_names_its_board() -> None:
    body = boards.TensorBoardTicketCreate.model_validate({"hyperparameterTuningId": "h1"})

    assert body.boards() == [("hyperparameter-tuning", "h1")]


def test_an_expired_tampered_or_repurposed_ticket_is_refused(openmaker_home: Path) -> None:
    ticket, _ = boards.sign(boards.TICKET, "app1", "training", "t1", 60, now=1000)
    body, mac = ticket.split(".")
    forged_body, _ = boards.sign(boards.TICKET, "app2", "training", "t1", 60, now=1000)
    refused = [
        ticket.replace(mac, mac[:-2] + ("AA" if not mac.endswith("AA") else "BB")),
        f"{forged_body.split('.')[0]}.{mac}",
        body,
        "",
        "not-a-ticket",
        "e30.e30",
    ]

    with pytest.raises(UnauthorizedError, match="expired"):
        boards.verify(boards.TICKET, ticket, "training", "t1", now=1060)
    with pytest.raises(UnauthorizedError):
        boards.verify(boards.COOKIE, ticket, "training", "t1", now=1001)
    for value in refused:
        with pytest.raises(UnauthorizedError) as caught:
            boards.verify(boards.TICKET, value, "training", "t1", now=1001)
        assert value == "" or value not in caught.value.message


def test_the_signing_key_is_private_and_shared_by_racing_workers(openmaker_home: Path) -> None:
    path = boards.secret_file()
    threads = [threading.Thread(target=boards._create_secret, args=(path,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text()) == 64
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


# --- the proxy's answers that need no database ---------------------------------------------


def environ(path: str, method: str = "GET", query: str = "", **headers: str) -> dict[str, Any]:
    env: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
    for name, value in headers.items():
        env["HTTP_" + name.upper()] = value
    return env


@pytest.mark.parametrize(
    "path",
    ["/tensorboard/", "/tensorboard/models/x/", "/tensorboard/trainings/", "/tensorboard/x"],
)
def test_a_path_that_is_no_board_is_not_found(path: str) -> None:
    with pytest.raises(NotFoundError):
        TensorBoardProxy(TensorBoardManager(reap_every=None)).handle(environ(path))


def test_a_board_without_credentials_is_unauthorized(openmaker_home: Path) -> None:
    proxy = TensorBoardProxy(TensorBoardManager(reap_every=None))
    with pytest.raises(UnauthorizedError, match="x-nhn-authorization"):
        proxy.handle(environ("/tensorboard/trainings/t1/"))
    with pytest.raises(UnauthorizedError, match="session"):
        proxy.handle(environ("/tensorboard/trainings/t1/", COOKIE="om_tb=forged.value"))


def test_a_ticket_is_only_opened_with_get() -> None:
    proxy = TensorBoardProxy(TensorBoardManager(reap_every=None))
    with pytest.raises(MethodNotAllowedError):
        proxy.handle(environ("/tensorboard/trainings/t1/", "POST", "ticket=x"))


def test_the_board_root_without_its_slash_redirects_to_it() -> None:
    proxy = TensorBoardProxy(TensorBoardManager(reap_every=None))
    status, headers, _ = proxy.handle(environ("/tensorboard/experiments/e1", query="a=1"))

    assert status == 301
    assert dict(headers)["Location"] == "/tensorboard/experiments/e1/?a=1"
    tuning = proxy.handle(environ("/tensorboard/hyperparameter-tunings/h1"))
    assert dict(tuning[1])["Location"] == "/tensorboard/hyperparameter-tunings/h1/"


def test_cookies_are_read_by_name_every_value() -> None:
    header = 'a=1; om_tb=first; om_tbx=no; om_tb="second"; broken'

    assert tensorboard._cookies(header, "om_tb") == ["first", "second"]
