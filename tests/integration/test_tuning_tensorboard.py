"""``tensorboardAccessUri`` of a hyperparameter tuning: a board with one run per trial, over the
directory each trial's code was given as ``EM_TENSORBOARD_LOG_DIR``.

The trials are made the way the tuning driver makes them (the internal API), and the
directory a trial writes to is taken from the runner code itself (``trial_job`` and
``TrialNodeJob.environment``), so the control plane and the runners cannot drift apart
unnoticed. The last test serves the board through the proxy with a real TensorBoard.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from chalicelib import errors
from chalicelib.api import tensorboard as boards
from chalicelib.config import get_settings
from chalicelib.dispatch.fake import FakeBackend
from chalicelib.objectstore import platform_store
from chalicelib.store.db import Database
from openmaker.tensorboard import TensorBoardManager, TensorBoardProxy
from runners.logsink import LogSink
from runners.tuning.trial import TrialNodeJob, trial_job
from tests.integration import trainings_fixtures, tunings_fixtures
from tests.integration.conftest import ApiClient, assert_error
from tests.integration.tunings_fixtures import TuningBodies, tuning_headers

file_root = trainings_fixtures.file_root
use_backend = trainings_fixtures.use_backend
ray = trainings_fixtures.ray
tuning_bodies = tunings_fixtures.tuning_bodies

TUNINGS = "/hyperparameter-tunings"
NOT_FOUND = errors.NotFoundError.result_code
VALIDATION = errors.ValidationError.result_code
BOARD_TIMEOUT_S = 60.0


def create(api: ApiClient, bodies: TuningBodies, name: str) -> dict[str, Any]:
    reply = api.post(TUNINGS, bodies.own_code(name))
    assert reply.status == 201, reply.body
    tuning: dict[str, Any] = reply.body["hyperparameterTuning"]
    return tuning


def driver(api: ApiClient, tuning_id: str, method: str, leaf: str, body: Any = None) -> Any:
    """The tuning driver's call to the internal API; the answer under the envelope's key."""
    reply = api.request(
        method,
        f"/internal/v1/hyperparameter-tunings/{tuning_id}/{leaf}",
        json_body=body,
        headers=tuning_headers(tuning_id),
        absolute=True,
    )
    assert reply.status == 200, reply.body
    return reply.body["job" if leaf == "job" else "trial"]


def trial_tensorboard_dir(api: ApiClient, tuning_id: str, number: int) -> Path:
    """Create trial ``number`` as the driver does; the ``EM_TENSORBOARD_LOG_DIR`` its code
    gets from the runner."""
    job = driver(api, tuning_id, "GET", "job")
    params = {"learning_rate": "0.01", "optimizer": "adam"}
    trial = driver(api, tuning_id, "POST", "trials", {"number": number, "params": params})
    sink = LogSink(platform_store(), trial["logPrefix"])
    try:
        node = TrialNodeJob(trial_job(job, number, trial, params), 0, sink)
        return Path(node.environment(None)["EM_TENSORBOARD_LOG_DIR"])
    finally:
        sink.close()


def board_logdirs(db: Database, api: ApiClient, tuning_id: str) -> tuple[tuple[str, str], ...]:
    with db.session(read_only=True) as session:
        return boards.logdirs(session, api.appkey, "hyperparameter-tuning", tuning_id)


def test_a_tuning_has_its_own_board_uri(
    api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning = create(api, tuning_bodies, "board")
    tuning_id = tuning["hyperparameterTuningId"]
    path = f"/tensorboard/hyperparameter-tunings/{tuning_id}/"

    assert tuning["tensorboardAccessPath"] == path
    assert tuning["tensorboardAccessUri"] == get_settings().public_url + path
    listed = api.get(TUNINGS).body["hyperparameterTuningList"]
    assert [t["tensorboardAccessUri"] for t in listed] == [tuning["tensorboardAccessUri"]]


def test_the_board_shows_each_trials_tensorboard_directory_as_a_run(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies, "runs")["hyperparameterTuningId"]
    before = board_logdirs(db, api, tuning_id)
    first = trial_tensorboard_dir(api, tuning_id, 0)
    second = trial_tensorboard_dir(api, tuning_id, 1)

    assert before == (("", str(get_settings().storage_root / "tensorboard" / ".no-trainings")),)
    assert board_logdirs(db, api, tuning_id) == (("trial-0", str(first)), ("trial-1", str(second)))
    assert first != second and first.is_dir() and second.is_dir()


def test_another_tenant_has_no_board_of_the_tuning(
    api: ApiClient,
    other_api: ApiClient,
    db: Database,
    tuning_bodies: TuningBodies,
    ray: FakeBackend,
) -> None:
    tuning_id = create(api, tuning_bodies, "private")["hyperparameterTuningId"]

    with pytest.raises(errors.NotFoundError):
        board_logdirs(db, other_api, tuning_id)
    refused = other_api.post("/tensorboard-tickets", {"hyperparameterTuningId": tuning_id})
    assert_error(refused, 404, NOT_FOUND)


def test_a_ticket_opens_the_tuning_board_only(
    api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies, "ticketed")["hyperparameterTuningId"]

    reply = api.post("/tensorboard-tickets", {"hyperparameterTuningId": tuning_id})
    both = api.post(
        "/tensorboard-tickets", {"hyperparameterTuningId": tuning_id, "trainingId": tuning_id}
    )

    assert reply.status == 201, reply.body
    url = urlsplit(reply.body["tensorboardTicket"]["url"])
    assert url.path == f"/tensorboard/hyperparameter-tunings/{tuning_id}/"
    ticket = url.query.removeprefix("ticket=")
    assert boards.verify(boards.TICKET, ticket, "hyperparameter-tuning", tuning_id) == api.appkey
    with pytest.raises(errors.UnauthorizedError):
        boards.verify(boards.TICKET, ticket, "training", tuning_id)
    assert_error(both, 400, VALIDATION)


# --- a real TensorBoard behind the proxy ------------------------------------------------


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[TensorBoardProxy]:
    manager = TensorBoardManager(reap_every=None, log_dir=tmp_path / "boards")
    yield TensorBoardProxy(manager)
    manager.stop_all()


def through(proxy: TensorBoardProxy, path: str, **headers: str) -> tuple[int, Any]:
    path, _, query = path.partition("?")
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query}
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    status, _, body = proxy.handle(environ)
    data = b"".join(body)
    return status, json.loads(data) if data else None


def poll(read: Callable[[], Any], done: Callable[[Any], bool]) -> Any:
    """TensorBoard loads event files in the background: ask until ``done`` or the timeout."""
    deadline = time.monotonic() + BOARD_TIMEOUT_S
    while True:
        found = read()
        if done(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_the_board_serves_the_scalars_each_trial_wrote(
    api: ApiClient,
    tuning_bodies: TuningBodies,
    ray: FakeBackend,
    proxy: TensorBoardProxy,
) -> None:
    from tensorboard.summary import Writer

    tuning_id = create(api, tuning_bodies, "scalars")["hyperparameterTuningId"]
    for number in (0, 1):
        writer = Writer(str(trial_tensorboard_dir(api, tuning_id, number)))
        for step in range(3):
            writer.add_scalar("loss", 1.0 / (step + number + 1), step=step)
        writer.close()
    token = {"x-nhn-authorization": f"Bearer {api.token}"}
    prefix = f"/tensorboard/hyperparameter-tunings/{tuning_id}"

    tags = poll(
        lambda: through(proxy, f"{prefix}/data/plugin/scalars/tags", **token),
        lambda answer: answer[0] == 200 and len(answer[1]) == 2,
    )
    status, points = through(
        proxy, f"{prefix}/data/plugin/scalars/scalars?run=trial-1/.&tag=loss", **token
    )

    assert tags[0] == 200
    assert {run: sorted(found) for run, found in tags[1].items()} == {
        "trial-0/.": ["loss"],
        "trial-1/.": ["loss"],
    }
    assert status == 200
    assert [(step, round(value, 3)) for _, step, value in points] == [
        (0, 0.5),
        (1, 0.333),
        (2, 0.25),
    ]
    with pytest.raises(errors.UnauthorizedError):
        through(proxy, f"{prefix}/data/runs")
