"""/trainings end to end over the in-process app, with a fake Ray behind the dispatcher.

Covers create (and its after-commit dispatch), bad input that must create nothing, the
capacity check, stop, delete, copy, list and tenancy, and the runner's internal API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chalicelib import errors
from chalicelib.config import reset_settings
from chalicelib.dispatch.fake import FakeBackend
from chalicelib.objectstore import platform_store
from chalicelib.services import runner_auth, trainings
from chalicelib.store.db import Database
from tests.integration import trainings_fixtures
from tests.integration.conftest import ApiClient, Reply, assert_error, snapshot_tables
from tests.integration.trainings_fixtures import (
    CPU_TRAINING_IMAGE,
    FOUR_CPU,
    ONE_CPU,
    Bodies,
    Installer,
    UnreachableBackend,
    count_trainings,
    flavor,
    image_id,
    one_node,
    runner_headers,
    training_row,
)

# The fixtures this module uses (see trainings_fixtures).
file_root = trainings_fixtures.file_root
use_backend = trainings_fixtures.use_backend
ray = trainings_fixtures.ray
bodies = trainings_fixtures.bodies

SUCCESS = {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"}
VALIDATION = errors.ValidationError.result_code
MALFORMED = errors.MalformedBodyError.result_code
NOT_FOUND = errors.NotFoundError.result_code
UNAUTHORIZED = errors.UnauthorizedError.result_code
INVALID_TRANSITION = errors.InvalidTransition.result_code
DEPENDENT = errors.DependentResourceError.result_code
UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"


# --- helpers --------------------------------------------------------------------------------


def create(api: ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    reply = api.post("/trainings", body)
    assert reply.status == 201, reply.body
    assert reply.header == SUCCESS
    training: dict[str, Any] = reply.body["training"]
    return training


def get(api: ApiClient, training_id: str) -> dict[str, Any]:
    reply = api.get(f"/trainings/{training_id}")
    assert reply.status == 200, reply.body
    training: dict[str, Any] = reply.body["training"]
    return training


def report(
    api: ApiClient,
    training_id: str,
    status: str,
    reason: str | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> Reply:
    """The driver's status report through the internal API, signed with its job token."""
    return api.request(
        "POST",
        f"/internal/v1/trainings/{training_id}/status",
        json_body={"status": status, "reason": reason},
        headers=runner_headers(training_id) if headers is None else headers,
        absolute=True,
    )


def finish(api: ApiClient, training_id: str) -> None:
    """Drive a training to COMPLETE the way its driver does."""
    assert report(api, training_id, "RUNNING").status == 200
    assert report(api, training_id, "COMPLETE").status == 200
    assert get(api, training_id)["trainingStatusCode"] == "COMPLETE"


def names(reply: Reply) -> list[str]:
    assert reply.status == 200, reply.body
    return [t["trainingName"] for t in reply.body["trainingList"]]


# --- create ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flavor_name", "instances", "driver_cpus"),
    [("m2.c2m4", 1, 2), ("m2.c2m4", 2, 0)],
    ids=["one instance: the driver holds the flavor", "two instances: the driver holds none"],
)
def test_a_created_training_is_requested_then_dispatched_as_one_ray_job(
    api: ApiClient,
    db: Database,
    bodies: Bodies,
    ray: FakeBackend,
    flavor_name: str,
    instances: int,
    driver_cpus: int,
) -> None:
    size = flavor(flavor_name)
    body = bodies.own_code(
        "mnist",
        description="digits",
        flavorId=size.id,
        instanceCount=instances,
        tagList=[{"tagKey": "team", "tagValue": "vision"}],
    )
    training = create(api, body)
    training_id = training["trainingId"]

    # The response is the committed row, before the after-commit dispatch.
    assert training["trainingStatusCode"] == "CREATE_REQUESTED"
    assert training["trainingName"] == "mnist"
    assert training["description"] == "digits"
    assert training["appKey"] == api.appkey
    assert training["instanceCount"] == instances
    assert training["experiment"]["experimentName"] == "experiment"
    assert training["experiment"]["experimentId"] == training["experimentId"]
    assert {"id", "name", "vcpus", "ram"} <= training["flavor"].keys()
    assert (training["flavor"]["id"], training["flavor"]["name"]) == (size.id, flavor_name)
    assert (training["flavor"]["vcpus"], training["flavor"]["ram"]) == (size.vcpus, size.ram)
    assert training["image"]["imageId"] == image_id(CPU_TRAINING_IMAGE)
    assert training["image"]["imageName"] == CPU_TRAINING_IMAGE
    assert training["hyperparameterList"] == body["hyperparameterList"]
    assert training["datasetList"] == body["datasetList"]
    assert training["timeoutMinutes"] == 60
    assert training["elapsedTimeSeconds"] is None
    assert training["startedDatetime"] is None and training["endedDatetime"] is None
    assert training["tensorboardAccessUri"].endswith(f"/tensorboard/trainings/{training_id}/")
    assert training["bootStorage"] == {"storageSize": 50}
    assert isinstance(training["dataStorageList"], list) and training["dataStorageList"]
    assert training["tagList"] == body["tagList"]

    # After the request: Ray accepted exactly one job named by the training id.
    fetched = get(api, training_id)
    assert fetched["trainingStatusCode"] == "CREATE_IN_PROGRESS"
    assert ray.submit_calls == 1
    assert list(ray.jobs) == [training_id]
    job = ray.jobs[training_id]
    assert job.submission_id == training_id
    assert job.entrypoint.endswith(f" -m runners.training {training_id}")
    assert job.num_cpus == driver_cpus
    assert job.memory_bytes == (size.ram * 2**20 if instances == 1 else 0)
    assert job.metadata["kind"] == "training"
    assert "OPENMAKER_INTERNAL_API_URL" in job.env_vars
    token = runner_auth.job_token("training", training_id)
    assert all(token not in value for value in job.env_vars.values())
    row = training_row(db, training_id)
    assert row is not None and row.dispatched_at is not None


def test_an_experiment_name_creates_the_experiment_once_and_is_then_reused(
    api: ApiClient, bodies: Bodies, ray: FakeBackend
) -> None:
    first = create(api, bodies.own_code("first", experimentName="vision"))
    second = create(api, bodies.own_code("second", experimentName="vision"))
    experiment_id = first["experiment"]["experimentId"]
    assert second["experiment"]["experimentId"] == experiment_id
    assert first["experiment"]["experimentName"] == "vision"
    listed = api.get("/experiments", query={"experimentNameList": "vision"}).body
    assert [e["experimentId"] for e in listed["experimentList"]] == [experiment_id]

    by_id = create(api, bodies.own_code("third", experimentName=None, experimentId=experiment_id))
    assert by_id["experiment"] == {"experimentId": experiment_id, "experimentName": "vision"}


def test_a_training_without_an_experiment_is_refused_naming_experiment_id(
    api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    reply = api.post("/trainings", bodies.own_code("orphan", experimentName=None))
    assert_error(reply, 400, VALIDATION, field="experimentId", rule="missing")
    assert "experimentId" in reply.header["resultMessage"]
    assert count_trainings(db) == 0 and ray.submit_calls == 0


def test_another_tenants_experiment_is_not_found(
    api: ApiClient, other_api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    theirs = other_api.post("/experiments", {"experimentName": "private"})
    assert theirs.status == 201
    experiment_id = theirs.body["experiment"]["experimentId"]
    reply = api.post(
        "/trainings", bodies.own_code("intruder", experimentName=None, experimentId=experiment_id)
    )
    assert_error(reply, 404, NOT_FOUND)
    assert count_trainings(db) == 0 and ray.submit_calls == 0


# --- bad input ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A bad create: ``change(bodies)`` gives the overrides of a valid body (None drops a
    field), or ``raw`` is sent as is."""

    status: int
    code: int
    field: str
    rule: str | None = None
    change: Callable[[Bodies], dict[str, Any]] | None = None
    raw: bytes | None = None


def _hyperparameters(n: int) -> list[dict[str, str]]:
    return [{"parameterName": f"p{i}", "parameterValue": "1"} for i in range(n)]


def _datasets(bodies: Bodies, n: int) -> list[dict[str, str]]:
    return [{"datasetName": f"d{i}", "dataUri": bodies.uri(f"data/{i}")} for i in range(n)]


def _escaping_link(bodies: Bodies) -> dict[str, Any]:
    link = Path(bodies.root) / "link-to-etc"
    if not link.exists():
        link.symlink_to("/etc")
    return {"sourceDirUri": bodies.uri("link-to-etc")}


BAD_CREATES: dict[str, Bad] = {
    "source outside the allowed roots": Bad(
        400,
        VALIDATION,
        "sourceDirUri",
        "allowed_roots",
        change=lambda b: {"sourceDirUri": "file:///etc"},
    ),
    "source through a symlink out of the root": Bad(
        400, VALIDATION, "sourceDirUri", "allowed_roots", change=_escaping_link
    ),
    "model upload outside the allowed roots": Bad(
        400,
        VALIDATION,
        "modelUploadUri",
        "allowed_roots",
        change=lambda b: {"modelUploadUri": "file:///etc/models"},
    ),
    "dataset outside the allowed roots": Bad(
        400,
        VALIDATION,
        "datasetList.0.dataUri",
        "allowed_roots",
        change=lambda b: {"datasetList": [{"datasetName": "train", "dataUri": "file:///etc"}]},
    ),
    "unknown scheme": Bad(
        400, VALIDATION, "sourceDirUri", change=lambda b: {"sourceDirUri": "ftp://x/y"}
    ),
    "unknown nas id": Bad(
        400,
        VALIDATION,
        "sourceDirUri",
        "nas_id",
        change=lambda b: {"sourceDirUri": "nas://nope:/code"},
    ),
    "no entryPoint and no algorithmId": Bad(
        400, VALIDATION, "entryPoint", "missing", change=lambda b: {"entryPoint": None}
    ),
    "101 hyperparameters": Bad(
        400,
        VALIDATION,
        "hyperparameterList",
        "too_long",
        change=lambda b: {"hyperparameterList": _hyperparameters(101)},
    ),
    "11 datasets": Bad(
        400,
        VALIDATION,
        "datasetList",
        "too_long",
        change=lambda b: {"datasetList": _datasets(b, 11)},
    ),
    "duplicate hyperparameter names": Bad(
        400,
        VALIDATION,
        "hyperparameterList",
        change=lambda b: {
            "hyperparameterList": [
                {"parameterName": "lr", "parameterValue": "1"},
                {"parameterName": "lr", "parameterValue": "2"},
            ]
        },
    ),
    "nprocPerNode 2 without useTorchrun": Bad(
        400, VALIDATION, "nprocPerNode", "needs_torchrun", change=lambda b: {"nprocPerNode": 2}
    ),
    "unknown imageId": Bad(
        400, VALIDATION, "imageId", "not_found", change=lambda b: {"imageId": UNKNOWN_ID}
    ),
    "unknown flavorId": Bad(
        400, VALIDATION, "flavorId", "not_found", change=lambda b: {"flavorId": UNKNOWN_ID}
    ),
    "timeoutMinutes 0": Bad(
        400,
        VALIDATION,
        "timeoutMinutes",
        "greater_than_equal",
        change=lambda b: {"timeoutMinutes": 0},
    ),
    "instanceCount 11": Bad(
        400, VALIDATION, "instanceCount", "less_than_equal", change=lambda b: {"instanceCount": 11}
    ),
    "entryPoint escaping the source": Bad(
        400, VALIDATION, "entryPoint", change=lambda b: {"entryPoint": "../train.py"}
    ),
    "bad json": Bad(400, MALFORMED, "request body", "json_invalid", raw=b'{"trainingName": "x'),
}


@pytest.mark.parametrize("case", list(BAD_CREATES.values()), ids=list(BAD_CREATES))
def test_a_bad_create_names_the_field_and_creates_nothing(
    api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend, case: Bad
) -> None:
    create(api, bodies.own_code("existing"))  # so "nothing changed" compares real rows
    before, trainings_before, submits = snapshot_tables(db), count_trainings(db), ray.submit_calls

    if case.raw is not None:
        reply = api.request("POST", "/trainings", raw=case.raw)
    else:
        assert case.change is not None
        reply = api.post("/trainings", bodies.own_code("bad", **case.change(bodies)))

    assert_error(reply, case.status, case.code, field=case.field, rule=case.rule)
    if case.code == VALIDATION:
        assert case.field in reply.header["resultMessage"], reply.header
    assert count_trainings(db) == trainings_before == 1
    assert snapshot_tables(db) == before
    assert ray.submit_calls == submits


def test_a_bad_create_with_a_new_experiment_name_creates_no_experiment(
    api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    before = snapshot_tables(db)
    reply = api.post(
        "/trainings", bodies.own_code("bad", experimentName="fresh", sourceDirUri="file:///etc")
    )
    assert_error(reply, 400, VALIDATION, field="sourceDirUri", rule="allowed_roots")
    assert snapshot_tables(db) == before


# --- capacity -------------------------------------------------------------------------------


def test_a_flavor_larger_than_every_node_ends_create_failed(
    api: ApiClient, db: Database, bodies: Bodies, use_backend: Installer
) -> None:
    backend = use_backend(FakeBackend(one_node(cpus=2)))
    training = create(api, bodies.own_code("too-big", flavorId=flavor(FOUR_CPU).id))
    assert training["trainingStatusCode"] == "CREATE_REQUESTED"

    fetched = get(api, training["trainingId"])
    assert fetched["trainingStatusCode"] == "CREATE_FAILED"
    assert "no capacity" in fetched["statusReason"]
    assert FOUR_CPU in fetched["statusReason"]
    assert fetched["endedDatetime"] is not None
    assert fetched["elapsedTimeSeconds"] is None  # it never started
    assert backend.submit_calls == 0 and backend.jobs == {}


@pytest.mark.parametrize(
    ("instances", "expected"), [(3, "CREATE_FAILED"), (2, "CREATE_IN_PROGRESS")]
)
def test_instances_must_all_fit_the_cluster(
    api: ApiClient, bodies: Bodies, use_backend: Installer, instances: int, expected: str
) -> None:
    backend = use_backend(FakeBackend(one_node(cpus=2, memory_gib=64)))
    training = create(
        api, bodies.own_code("spread", flavorId=flavor(ONE_CPU).id, instanceCount=instances)
    )
    fetched = get(api, training["trainingId"])
    assert fetched["trainingStatusCode"] == expected
    if expected == "CREATE_FAILED":
        assert "no capacity" in fetched["statusReason"] and ONE_CPU in fetched["statusReason"]
        assert f"{instances} instance" in fetched["statusReason"]
        assert backend.submit_calls == 0
    else:
        assert fetched["statusReason"] is None
        assert list(backend.jobs) == [training["trainingId"]]


# --- stop -----------------------------------------------------------------------------------


def test_stopping_a_dispatched_training_asks_ray_and_may_be_repeated(
    api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = create(api, bodies.own_code("to-stop"))["trainingId"]
    assert get(api, training_id)["trainingStatusCode"] == "CREATE_IN_PROGRESS"

    stopped = api.put(f"/trainings/{training_id}/stop")
    assert stopped.status == 200, stopped.body
    assert stopped.header == SUCCESS
    assert stopped.body["training"]["trainingStatusCode"] == "STOP_IN_PROGRESS"
    assert ray.stopped == [training_id]

    again = api.put(f"/trainings/{training_id}/stop")
    assert again.status == 200, again.body
    assert again.body["training"]["trainingStatusCode"] == "STOP_IN_PROGRESS"
    assert set(ray.stopped) == {training_id}
    assert get(api, training_id)["trainingStatusCode"] == "STOP_IN_PROGRESS"

    # The driver acknowledges; a stopped training cannot be stopped again.
    assert report(api, training_id, "STOPPED").status == 200
    assert get(api, training_id)["trainingStatusCode"] == "STOPPED"
    late = api.put(f"/trainings/{training_id}/stop")
    assert_error(late, 409, INVALID_TRANSITION)


def test_stopping_a_complete_training_is_a_conflict(
    api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = create(api, bodies.own_code("done"))["trainingId"]
    finish(api, training_id)
    before = training_row(db, training_id)

    reply = api.put(f"/trainings/{training_id}/stop")
    assert_error(reply, 409, INVALID_TRANSITION)
    assert training_row(db, training_id) == before
    assert ray.stopped == []


def test_stopping_a_never_dispatched_training_stops_it_at_once(
    api: ApiClient, db: Database, bodies: Bodies, use_backend: Installer
) -> None:
    backend = use_backend(UnreachableBackend())
    training_id = create(api, bodies.own_code("never-ran"))["trainingId"]
    # The dispatch failed after commit (logged, left to the tick): still requested.
    assert backend.submit_calls == 1
    assert get(api, training_id)["trainingStatusCode"] == "CREATE_REQUESTED"
    row = training_row(db, training_id)
    assert row is not None and row.dispatched_at is None

    reply = api.put(f"/trainings/{training_id}/stop")
    assert reply.status == 200, reply.body
    assert reply.body["training"]["trainingStatusCode"] == "STOPPED"
    assert reply.body["training"]["endedDatetime"] is not None
    assert get(api, training_id)["trainingStatusCode"] == "STOPPED"
    assert backend.stopped == []  # nothing to tell Ray


# --- delete ---------------------------------------------------------------------------------


def test_a_training_is_deleted_only_once_it_has_ended(
    api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = create(api, bodies.own_code("short-lived"))["trainingId"]
    store = platform_store()
    store.write(trainings.result_key(training_id), b'{"status": "COMPLETE"}')
    store.write(trainings.log_prefix(api.appkey, training_id) + "driver.log", b"hello\n")

    refused = api.delete(f"/trainings/{training_id}")
    assert_error(refused, 409, DEPENDENT)
    assert "CREATE_IN_PROGRESS" in refused.header["resultMessage"]
    assert report(api, training_id, "RUNNING").status == 200
    assert_error(api.delete(f"/trainings/{training_id}"), 409, DEPENDENT)
    assert get(api, training_id)["trainingStatusCode"] == "RUNNING"

    assert report(api, training_id, "COMPLETE").status == 200
    deleted = api.delete(f"/trainings/{training_id}")
    assert deleted.status == 200, deleted.body
    assert deleted.header == SUCCESS
    assert_error(api.get(f"/trainings/{training_id}"), 404, NOT_FOUND)
    assert count_trainings(db) == 0
    assert not store.exists(trainings.result_key(training_id))
    assert not store.exists(trainings.log_prefix(api.appkey, training_id) + "driver.log")
    assert_error(api.delete(f"/trainings/{training_id}"), 404, NOT_FOUND)


def test_an_experiment_with_trainings_cannot_be_deleted(
    api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    training = create(api, bodies.own_code("holds-experiment"))
    experiment_id = training["experiment"]["experimentId"]

    refused = api.delete(f"/experiments/{experiment_id}")
    assert_error(refused, 409, DEPENDENT)
    assert "training" in refused.header["resultMessage"]
    assert api.get(f"/experiments/{experiment_id}").status == 200

    finish(api, training["trainingId"])
    assert api.delete(f"/trainings/{training['trainingId']}").status == 200
    assert api.delete(f"/experiments/{experiment_id}").status == 200
    assert api.get(f"/experiments/{experiment_id}").status == 404


# --- copy -----------------------------------------------------------------------------------

SPEC_KEYS = (
    "imageId",
    "flavorId",
    "instanceCount",
    "nprocPerNode",
    "useTorchrun",
    "sourceDirUri",
    "entryPoint",
    "modelUploadUri",
    "hyperparameterList",
    "datasetList",
    "timeoutMinutes",
    "useLog",
    "experimentId",
    "flavor",
    "image",
    "description",
    "tagList",
)


def test_a_copy_is_a_new_training_with_the_same_spec_dispatched_now(
    api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    source = create(
        api,
        bodies.own_code(
            "mnist",
            description="digits",
            useLog=True,
            tagList=[{"tagKey": "k", "tagValue": "v"}],
            hyperparameterList=[
                {"parameterName": "epochs", "parameterValue": "3"},
                {"parameterName": "lr", "parameterValue": "0.01"},
            ],
        ),
    )
    finish(api, source["trainingId"])  # a copy is how an ended training runs again

    reply = api.post(f"/trainings/{source['trainingId']}/copy", {})
    assert reply.status == 201, reply.body
    copy = reply.body["training"]
    assert copy["trainingId"] != source["trainingId"]
    assert copy["trainingName"] == "mnist-copy"
    assert copy["trainingStatusCode"] == "CREATE_REQUESTED"
    assert {k: copy[k] for k in SPEC_KEYS} == {k: source[k] for k in SPEC_KEYS}
    assert copy["startedDatetime"] is None and copy["elapsedTimeSeconds"] is None

    assert get(api, copy["trainingId"])["trainingStatusCode"] == "CREATE_IN_PROGRESS"
    assert set(ray.jobs) == {source["trainingId"], copy["trainingId"]}
    assert ray.jobs[copy["trainingId"]].entrypoint.endswith(
        f"-m runners.training {copy['trainingId']}"
    )
    assert get(api, source["trainingId"])["trainingStatusCode"] == "COMPLETE"

    named = api.post(f"/trainings/{source['trainingId']}/copy", {"trainingName": "again"})
    assert named.status == 201, named.body
    assert named.body["training"]["trainingName"] == "again"
    assert count_trainings(db) == 3


def test_a_copy_of_a_long_name_stays_within_the_name_limit(
    api: ApiClient, bodies: Bodies, ray: FakeBackend
) -> None:
    source = create(api, bodies.own_code("n" * 50))
    copy = api.post(f"/trainings/{source['trainingId']}/copy", {}).body["training"]
    assert copy["trainingName"] == "n" * 45 + "-copy"


def test_a_copy_is_refused_when_its_uris_are_no_longer_allowed(
    api: ApiClient,
    db: Database,
    bodies: Bodies,
    ray: FakeBackend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = create(api, bodies.own_code("old-root"))
    narrower = tmp_path / "only-here"
    narrower.mkdir()
    monkeypatch.setenv("OPENMAKER_FILE_ROOTS", str(narrower))
    reset_settings()
    assert_error(
        api.post("/trainings", bodies.own_code("fresh")), 400, VALIDATION, field="sourceDirUri"
    )

    reply = api.post(f"/trainings/{source['trainingId']}/copy", {})

    assert_error(reply, 400, VALIDATION, field="sourceDirUri", rule="allowed_roots")
    assert count_trainings(db) == 1


def test_copying_an_unknown_or_foreign_training_is_not_found(
    api: ApiClient, other_api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = create(api, bodies.own_code("mine"))["trainingId"]
    assert_error(api.post(f"/trainings/{UNKNOWN_ID}/copy", {}), 404, NOT_FOUND)
    assert_error(other_api.post(f"/trainings/{training_id}/copy", {}), 404, NOT_FOUND)
    assert count_trainings(db) == 1 and ray.submit_calls == 1


# --- list and tenancy -----------------------------------------------------------------------


def test_trainings_are_listed_newest_first_paged_and_filtered(
    api: ApiClient, bodies: Bodies, ray: FakeBackend
) -> None:
    ids = {}
    for name, experiment in (("alpha", "exp-a"), ("beta", "exp-b"), ("gamma", "exp-a")):
        created = create(api, bodies.own_code(name, experimentName=experiment))
        ids[name] = (created["trainingId"], created["experimentId"])
        time.sleep(0.005)  # distinct creation times for a deterministic order
    finish(api, ids["beta"][0])

    everything = api.get("/trainings")
    assert names(everything) == ["gamma", "beta", "alpha"]
    assert everything.body["paging"] == {"page": 1, "limit": 1000, "totalCount": 3}

    second_page = api.get("/trainings", query={"page": "2", "limit": "2"})
    assert names(second_page) == ["alpha"]
    assert second_page.body["paging"] == {"page": 2, "limit": 2, "totalCount": 3}
    assert names(api.get("/trainings", query={"page": "3", "limit": "2"})) == []

    by_id = api.get("/trainings", query={"trainingIdList": f"{ids['alpha'][0]},{ids['beta'][0]}"})
    assert names(by_id) == ["beta", "alpha"]
    by_name = api.get(
        "/trainings", query=[("trainingNameList", "gamma"), ("trainingNameList", "alpha")]
    )
    assert names(by_name) == ["gamma", "alpha"]
    complete = api.get("/trainings", query={"trainingStatusCodeList": "COMPLETE"})
    assert names(complete) == ["beta"]
    running = api.get("/trainings", query={"trainingStatusCodeList": "CREATE_IN_PROGRESS,RUNNING"})
    assert names(running) == ["gamma", "alpha"]
    by_experiment = api.get("/trainings", query={"experimentId": ids["alpha"][1]})
    assert names(by_experiment) == ["gamma", "alpha"]
    combined = api.get(
        "/trainings",
        query={"experimentId": ids["alpha"][1], "trainingNameList": "alpha,beta"},
    )
    assert names(combined) == ["alpha"]
    none = api.get("/trainings", query={"trainingNameList": "delta"})
    assert names(none) == [] and none.body["paging"]["totalCount"] == 0


def test_a_tenant_sees_and_touches_only_its_own_trainings(
    api: ApiClient, other_api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = create(api, bodies.own_code("private"))["trainingId"]
    before = training_row(db, training_id)

    listed = other_api.get("/trainings")
    assert names(listed) == [] and listed.body["paging"]["totalCount"] == 0
    assert names(other_api.get("/trainings", query={"trainingIdList": training_id})) == []
    assert_error(other_api.get(f"/trainings/{training_id}"), 404, NOT_FOUND)
    assert_error(other_api.put(f"/trainings/{training_id}/stop"), 404, NOT_FOUND)
    assert_error(other_api.delete(f"/trainings/{training_id}"), 404, NOT_FOUND)

    assert training_row(db, training_id) == before
    assert ray.stopped == []
    assert names(api.get("/trainings")) == ["private"]


def test_an_unknown_training_is_not_found(api: ApiClient, ray: FakeBackend) -> None:
    assert_error(api.get(f"/trainings/{UNKNOWN_ID}"), 404, NOT_FOUND)
    assert_error(api.put(f"/trainings/{UNKNOWN_ID}/stop"), 404, NOT_FOUND)
    assert_error(api.delete(f"/trainings/{UNKNOWN_ID}"), 404, NOT_FOUND)


# --- the runner's internal API --------------------------------------------------------------


def test_the_runner_api_needs_the_jobs_own_token(
    api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = create(api, bodies.own_code("guarded"))["trainingId"]
    other_id = create(api, bodies.own_code("other"))["trainingId"]
    before = training_row(db, training_id)
    job_path = f"/internal/v1/trainings/{training_id}/job"

    for headers in ({}, {"x-openmaker-runner-token": "wrong"}, runner_headers(other_id)):
        reply = report(api, training_id, "RUNNING", headers=headers)
        assert_error(reply, 401, UNAUTHORIZED)
        job = api.request("GET", job_path, headers=headers, absolute=True)
        assert_error(job, 401, UNAUTHORIZED)
        assert "job" not in job.body

    assert training_row(db, training_id) == before
    assert get(api, training_id)["trainingStatusCode"] == "CREATE_IN_PROGRESS"


def test_the_runner_reads_its_job_spec_with_flavor_and_image(
    api: ApiClient, bodies: Bodies, ray: FakeBackend
) -> None:
    training = create(api, bodies.own_code("spec", flavorId=flavor("m2.c2m4").id))
    training_id = training["trainingId"]
    reply = api.request(
        "GET",
        f"/internal/v1/trainings/{training_id}/job",
        headers=runner_headers(training_id),
        absolute=True,
    )
    assert reply.status == 200, reply.body
    job = reply.body["job"]
    assert job["trainingId"] == training_id
    assert job["appKey"] == api.appkey
    assert job["experimentId"] == training["experimentId"]
    assert job["status"] == "CREATE_IN_PROGRESS"
    assert job["spec"]["flavor"]["name"] == "m2.c2m4"
    assert job["spec"]["flavor"]["vcpus"] == 2
    assert job["spec"]["image"]["imageName"] == CPU_TRAINING_IMAGE
    assert job["spec"]["entry_point"] == "train.py"
    assert job["spec"]["timeout_minutes"] == 60
    assert job["resultKey"] == trainings.result_key(training_id)
    assert job["logPrefix"] == trainings.log_prefix(api.appkey, training_id)


def test_reports_walk_the_lifecycle_and_stamp_start_and_end(
    api: ApiClient, db: Database, bodies: Bodies, use_backend: Installer
) -> None:
    use_backend(UnreachableBackend())  # the report overtakes the dispatcher
    training_id = create(api, bodies.own_code("walk"))["trainingId"]
    start = training_row(db, training_id)
    assert start is not None and start.status == "CREATE_REQUESTED"

    running = report(api, training_id, "RUNNING")
    assert running.status == 200, running.body
    assert running.header == SUCCESS
    assert running.body["training"] == {"status": "RUNNING", "kind": "training"}
    row = training_row(db, training_id)
    assert row is not None and row.status == "RUNNING"
    assert row.version == start.version + 2  # via CREATE_IN_PROGRESS
    fetched = get(api, training_id)
    assert fetched["startedDatetime"] is not None and fetched["endedDatetime"] is None
    assert fetched["elapsedTimeSeconds"] >= 0

    complete = report(api, training_id, "COMPLETE")
    assert complete.status == 200, complete.body
    done = training_row(db, training_id)
    assert done is not None and done.status == "COMPLETE"
    assert done.version == row.version + 2  # via COMPLETE_IN_PROGRESS
    fetched = get(api, training_id)
    assert fetched["trainingStatusCode"] == "COMPLETE"
    assert fetched["endedDatetime"] is not None
    assert fetched["endedDatetime"] >= fetched["startedDatetime"]
    assert fetched["elapsedTimeSeconds"] >= 0
    assert fetched["statusReason"] is None


def test_repeating_a_report_is_a_no_op(
    api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = create(api, bodies.own_code("repeat"))["trainingId"]
    assert report(api, training_id, "RUNNING").status == 200
    first = training_row(db, training_id)
    again = report(api, training_id, "RUNNING")
    assert again.status == 200, again.body
    assert again.body["training"]["status"] == "RUNNING"
    assert training_row(db, training_id) == first


def test_a_report_cannot_reopen_a_stopped_training(
    api: ApiClient, db: Database, bodies: Bodies, use_backend: Installer
) -> None:
    use_backend(UnreachableBackend())
    training_id = create(api, bodies.own_code("stopped"))["trainingId"]
    assert api.put(f"/trainings/{training_id}/stop").body["training"]["trainingStatusCode"] == (
        "STOPPED"
    )
    before = training_row(db, training_id)

    reply = report(api, training_id, "COMPLETE")
    assert_error(reply, 409, INVALID_TRANSITION)
    assert training_row(db, training_id) == before
    assert get(api, training_id)["trainingStatusCode"] == "STOPPED"


def test_a_failure_report_keeps_its_reason(
    api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = create(api, bodies.own_code("fails"))["trainingId"]
    assert report(api, training_id, "RUNNING").status == 200
    reply = report(api, training_id, "FAIL_TRAIN", "train.py exited with code 1: OOM")
    assert reply.status == 200, reply.body
    fetched = get(api, training_id)
    assert fetched["trainingStatusCode"] == "FAIL_TRAIN"
    assert fetched["statusReason"] == "train.py exited with code 1: OOM"
    assert fetched["endedDatetime"] is not None


def test_a_report_of_an_unknown_status_changes_nothing(
    api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = create(api, bodies.own_code("odd"))["trainingId"]
    before = training_row(db, training_id)
    reply = report(api, training_id, "EXPLODED")
    assert 400 <= reply.status < 500, reply.body
    assert reply.header["isSuccessful"] is False
    assert training_row(db, training_id) == before


def test_a_report_for_an_unknown_training_is_not_found(api: ApiClient) -> None:
    assert_error(report(api, UNKNOWN_ID, "RUNNING"), 404, NOT_FOUND)
