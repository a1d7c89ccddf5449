"""/hyperparameter-tunings end to end over the in-process app, with a fake Ray behind the
dispatcher.

Covers create from the SDK's own body (and its after-commit dispatch of the tuning driver),
bad input that must create nothing, training-template prefill, warm start, the driver's
internal API (job spec, trials, reports, the optimal trial), stop, delete, copy, list and
tenancy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from easymaker.common.base_model.hyperparameter_tuning_base_model import (
    HyperparameterTuningBaseModel,
)
from sqlalchemy.engine import make_url

from chalicelib import errors
from chalicelib.config import get_settings
from chalicelib.dispatch.fake import FakeBackend
from chalicelib.objectstore import platform_store
from chalicelib.services import runner_auth, tunings
from chalicelib.store.db import Database
from tests.integration import trainings_fixtures, tunings_fixtures
from tests.integration.conftest import ApiClient, Reply, assert_error, snapshot_tables
from tests.integration.trainings_fixtures import (
    CPU_TRAINING_IMAGE,
    FOUR_CPU,
    ONE_CPU,
    Installer,
    UnreachableBackend,
    flavor,
    image_id,
)
from tests.integration.tunings_fixtures import (
    LEARNING_RATE,
    OPTIMIZER,
    TuningBodies,
    count_trials,
    count_tunings,
    tuning_headers,
    tuning_row,
)

# The fixtures this module uses (see trainings_fixtures and tunings_fixtures).
file_root = trainings_fixtures.file_root
use_backend = trainings_fixtures.use_backend
ray = trainings_fixtures.ray
tuning_bodies = tunings_fixtures.tuning_bodies

SUCCESS = {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"}
VALIDATION = errors.ValidationError.result_code
BAD_REQUEST = errors.BadRequestError.result_code
NOT_FOUND = errors.NotFoundError.result_code
UNAUTHORIZED = errors.UnauthorizedError.result_code
INVALID_TRANSITION = errors.InvalidTransition.result_code
DEPENDENT = errors.DependentResourceError.result_code
UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"
TUNINGS = "/hyperparameter-tunings"
ACCURACY = {"accuracy": {"min": 0.5, "max": 0.9, "latest": 0.9}}


# --- helpers --------------------------------------------------------------------------------


def create(api: ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    reply = api.post(TUNINGS, body)
    assert reply.status == 201, reply.body
    assert reply.header == SUCCESS
    tuning: dict[str, Any] = reply.body["hyperparameterTuning"]
    return tuning


def get(api: ApiClient, tuning_id: str) -> dict[str, Any]:
    reply = api.get(f"{TUNINGS}/{tuning_id}")
    assert reply.status == 200, reply.body
    tuning: dict[str, Any] = reply.body["hyperparameterTuning"]
    return tuning


def status_of(api: ApiClient, tuning_id: str) -> str:
    return str(get(api, tuning_id)["hyperparameterTuningStatusCode"])


def internal(tuning_id: str, leaf: str) -> str:
    return f"/internal/v1/hyperparameter-tunings/{tuning_id}/{leaf}"


def report(
    api: ApiClient,
    tuning_id: str,
    status: str,
    reason: str | None = None,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> Reply:
    """The tuning driver's status report through the internal API, signed with its token."""
    return api.request(
        "POST",
        internal(tuning_id, "status"),
        json_body={"status": status, "reason": reason, "detail": detail},
        headers=tuning_headers(tuning_id) if headers is None else headers,
        absolute=True,
    )


def job(api: ApiClient, tuning_id: str, *, headers: dict[str, str] | None = None) -> Reply:
    return api.request(
        "GET",
        internal(tuning_id, "job"),
        headers=tuning_headers(tuning_id) if headers is None else headers,
        absolute=True,
    )


def trial(
    api: ApiClient,
    tuning_id: str,
    number: int,
    status: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> Reply:
    """The driver creating (no status) or moving trial ``number``."""
    body: dict[str, Any] = {"number": number, **fields}
    if status is not None:
        body["status"] = status
    return api.request(
        "POST",
        internal(tuning_id, "trials"),
        json_body=body,
        headers=tuning_headers(tuning_id) if headers is None else headers,
        absolute=True,
    )


def moved(api: ApiClient, tuning_id: str, number: int, status: str, **fields: Any) -> None:
    reply = trial(api, tuning_id, number, status, **fields)
    assert reply.status == 200, reply.body
    assert reply.body["trial"]["status"] == status


def finish(api: ApiClient, tuning_id: str, detail: str = "MaxTrialsReached") -> None:
    """Drive a tuning to COMPLETE the way its driver does."""
    assert report(api, tuning_id, "RUNNING").status == 200
    assert report(api, tuning_id, "COMPLETE", detail=detail).status == 200
    assert status_of(api, tuning_id) == "COMPLETE"


def names(reply: Reply) -> list[str]:
    assert reply.status == 200, reply.body
    return [t["hyperparameterTuningName"] for t in reply.body["hyperparameterTuningList"]]


def without_nulls(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if v is not None} for item in items]


def trial_numbers(reply: Reply) -> list[int]:
    assert reply.status == 200, reply.body
    return [int(t["trialName"].removeprefix("trial-")) for t in reply.body["trialList"]]


# --- create ---------------------------------------------------------------------------------


def test_a_created_tuning_is_requested_then_dispatched_as_one_driver_job(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    body = tuning_bodies.sdk("tune-mnist")  # the SDK's own model, dumped
    assert body["hyperparameterSpecList"][0]["hyperparameterTypeCode"] == "double"
    tuning = create(api, body)
    tuning_id = tuning["hyperparameterTuningId"]

    # The response is the committed row, before the after-commit dispatch.
    assert tuning["hyperparameterTuningStatusCode"] == "CREATE_REQUESTED"
    assert tuning["hyperparameterTuningName"] == "tune-mnist"
    assert tuning["description"] == "learning rate and optimizer"
    assert tuning["appKey"] == api.appkey
    assert without_nulls(tuning["hyperparameterSpecList"]) == body["hyperparameterSpecList"]
    assert tuning["metricList"] == [{"name": "loss"}, {"name": "accuracy"}]
    assert tuning["objectiveMetric"] == {"name": "accuracy"}
    assert tuning["objectiveMetricName"] == "accuracy"
    assert tuning["objectiveTypeCode"] == "MAXIMIZE"
    assert tuning["objectiveGoal"] == 0.99
    assert tuning["maxTrialCount"] == 6
    assert tuning["maxFailedTrialCount"] == 3  # the SDK left it out: the default
    assert tuning["parallelTrialCount"] == 2
    assert tuning["instanceCount"] == 2
    assert tuning["tuningStrategyName"] == "BAYESIAN_OPTIMIZATION"
    assert tuning["tuningStrategyRandomState"] == 7
    assert tuning["earlyStoppingAlgorithm"] == "MEDIAN"
    assert (tuning["earlyStoppingMinTrialCount"], tuning["earlyStoppingStartStep"]) == (3, 4)
    for count in (
        "successfulTrialCount",
        "runningTrialCount",
        "failedTrialCount",
        "earlyStoppedTrialCount",
        "killedTrialCount",
        "metricsUnavailableTrialCount",
    ):
        assert tuning[count] == 0, count
    assert tuning["optimalTrial"] is None and tuning["optimalTrialId"] is None
    assert tuning["hyperparameterTuningStatusDetail"] is None
    assert tuning["experiment"]["experimentName"] == "experiment"
    assert tuning["experiment"]["experimentId"] == tuning["experimentId"]
    assert tuning["flavor"]["name"] == ONE_CPU
    assert tuning["image"]["imageName"] == CPU_TRAINING_IMAGE
    assert tuning["timeoutMinutes"] == 60
    assert tuning["startedDatetime"] is None and tuning["elapsedTimeSeconds"] is None

    # What the SDK reads back (it fetches the experiment by id itself: left out here).
    read = HyperparameterTuningBaseModel.model_validate(tuning | {"experiment": None})
    assert read.hyperparameter_tuning_id == tuning_id
    assert read.objective_metric_name == "accuracy"
    assert [m.name for m in read.metric_list or []] == ["loss", "accuracy"]
    assert [s.hyperparameter_name for s in read.hyperparameter_spec_list or []] == [
        "learning_rate",
        "optimizer",
    ]
    assert (read.successful_trial_count, read.optimal_trial) == (0, None)

    # After the request: Ray accepted exactly one driver job named by the tuning id.
    fetched = get(api, tuning_id)
    assert fetched["hyperparameterTuningStatusCode"] == "CREATE_IN_PROGRESS"
    assert ray.submit_calls == 1
    assert list(ray.jobs) == [tuning_id]
    submitted = ray.jobs[tuning_id]
    assert submitted.submission_id == tuning_id
    assert submitted.entrypoint.endswith(f" -m runners.tuning {tuning_id}")
    assert submitted.num_cpus == 0  # the driver orchestrates; trials hold the flavor
    assert submitted.num_gpus == 0 and submitted.memory_bytes == 0
    assert submitted.metadata == {
        "kind": "hyperparameter_tuning",
        "appkey": api.appkey,
        "name": "tune-mnist",
    }
    assert "OPENMAKER_INTERNAL_API_URL" in submitted.env_vars
    token = runner_auth.job_token(tunings.RUNNER_KIND, tuning_id)
    assert all(token not in value for value in submitted.env_vars.values())
    row = tuning_row(db, tuning_id)
    assert row is not None and row.dispatched_at is not None


def test_an_experiment_name_creates_the_experiment_which_then_cannot_be_deleted(
    api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    first = create(api, tuning_bodies.own_code("first", experimentName="search"))
    experiment_id = first["experiment"]["experimentId"]
    listed = api.get("/experiments", query={"experimentNameList": "search"}).body
    assert [e["experimentId"] for e in listed["experimentList"]] == [experiment_id]
    second = create(
        api, tuning_bodies.own_code("second", experimentName=None, experimentId=experiment_id)
    )
    assert second["experiment"] == {"experimentId": experiment_id, "experimentName": "search"}

    refused = api.delete(f"/experiments/{experiment_id}")
    assert_error(refused, 409, DEPENDENT)
    assert "hyperparameter tuning" in refused.header["resultMessage"]
    assert api.get(f"/experiments/{experiment_id}").status == 200

    for tuning in (first, second):
        finish(api, tuning["hyperparameterTuningId"])
        deleted = api.delete(f"{TUNINGS}/{tuning['hyperparameterTuningId']}")
        assert deleted.status == 200, deleted.body
    assert api.delete(f"/experiments/{experiment_id}").status == 200
    assert api.get(f"/experiments/{experiment_id}").status == 404


def test_nodes_per_trial_are_the_instances_shared_by_the_parallel_trials(
    api: ApiClient, tuning_bodies: TuningBodies, use_backend: Installer
) -> None:
    # 2 CPUs hold two 1-CPU trial nodes: 2 trials x 1 node fit, 1 trial x 3 nodes do not.
    backend = use_backend(FakeBackend(trainings_fixtures.one_node(cpus=2)))
    fits = create(api, tuning_bodies.own_code("fits", instanceCount=2, parallelTrialCount=2))
    assert status_of(api, fits["hyperparameterTuningId"]) == "CREATE_IN_PROGRESS"
    spec = job(api, fits["hyperparameterTuningId"]).body["job"]
    assert spec["nodesPerTrial"] == 1

    wide = create(
        api, tuning_bodies.own_code("wide", instanceCount=3, parallelTrialCount=1, maxTrialCount=2)
    )
    fetched = get(api, wide["hyperparameterTuningId"])
    assert fetched["hyperparameterTuningStatusCode"] == "CREATE_FAILED"
    assert "no capacity" in fetched["hyperparameterTuningStatusReason"]
    assert ONE_CPU in fetched["hyperparameterTuningStatusReason"]
    assert list(backend.jobs) == [fits["hyperparameterTuningId"]]


def test_a_flavor_larger_than_every_node_ends_create_failed(
    api: ApiClient, tuning_bodies: TuningBodies, use_backend: Installer
) -> None:
    backend = use_backend(FakeBackend(trainings_fixtures.one_node(cpus=2)))
    tuning = create(api, tuning_bodies.own_code("too-big", flavorId=flavor(FOUR_CPU).id))
    assert tuning["hyperparameterTuningStatusCode"] == "CREATE_REQUESTED"

    fetched = get(api, tuning["hyperparameterTuningId"])
    assert fetched["hyperparameterTuningStatusCode"] == "CREATE_FAILED"
    assert FOUR_CPU in fetched["hyperparameterTuningStatusReason"]
    assert fetched["endedDatetime"] is not None
    assert backend.submit_calls == 0 and backend.jobs == {}


# --- bad input ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A bad create: ``change(bodies, existing_id)`` gives the overrides of a valid body
    (None drops a field); ``existing_id`` is a tuning still running in the same appkey."""

    field: str
    rule: str | None
    change: Callable[[TuningBodies, str], dict[str, Any]]
    status: int = 400
    code: int = VALIDATION


BAD_CREATES: dict[str, Bad] = {
    "min above max": Bad(
        "hyperparameterSpecList.0.hyperparameterMinValue",
        "range",
        lambda b, _: {
            "hyperparameterSpecList": [
                LEARNING_RATE | {"hyperparameterMinValue": "0.5"},
                OPTIMIZER,
            ]
        },
    ),
    "GRID step not dividing the range": Bad(
        "hyperparameterSpecList.0.hyperparameterStep",
        "grid_step",
        lambda b, _: {
            "tuningStrategyName": "GRID",
            "hyperparameterSpecList": [
                {
                    "hyperparameterName": "layers",
                    "hyperparameterTypeCode": "int",
                    "hyperparameterMinValue": "1",
                    "hyperparameterMaxValue": "10",
                    "hyperparameterStep": "4",
                },
                OPTIMIZER,
            ],
        },
    ),
    "GRID without a step": Bad(
        "hyperparameterSpecList.0.hyperparameterStep",
        "grid_step",
        lambda b, _: {"tuningStrategyName": "GRID"},
    ),
    "objective metric not collected": Bad(
        "objectiveMetric.name", "unknown_metric", lambda b, _: {"objectiveMetric": {"name": "f1"}}
    ),
    "metric regex that does not compile": Bad(
        "metricRegex", "regex", lambda b, _: {"metricRegex": "([\\w]+=(\\d+)"}
    ),
    "metric regex with one group": Bad(
        "metricRegex", "regex", lambda b, _: {"metricRegex": "accuracy=(\\d+)"}
    ),
    "maxTrialCount 0": Bad(
        "maxTrialCount", "greater_than_equal", lambda b, _: {"maxTrialCount": 0}
    ),
    "no maxTrialCount": Bad("maxTrialCount", "missing", lambda b, _: {"maxTrialCount": None}),
    "categorical without values": Bad(
        "hyperparameterSpecList.1.hyperparameterSpecifiedValues",
        "values",
        lambda b, _: {
            "hyperparameterSpecList": [
                LEARNING_RATE,
                {"hyperparameterName": "optimizer", "hyperparameterTypeCode": "categorical"},
            ]
        },
    ),
    "categorical with an empty value list": Bad(
        "hyperparameterSpecList.1.hyperparameterSpecifiedValues",
        "values",
        lambda b, _: {
            "hyperparameterSpecList": [
                LEARNING_RATE,
                OPTIMIZER | {"hyperparameterSpecifiedValues": ""},
            ]
        },
    ),
    "instanceCount not a multiple of parallelTrialCount": Bad(
        "instanceCount", "multiple", lambda b, _: {"instanceCount": 3, "parallelTrialCount": 2}
    ),
    "parallelTrialCount above maxTrialCount": Bad(
        "parallelTrialCount",
        "le",
        lambda b, _: {"maxTrialCount": 1, "parallelTrialCount": 2, "instanceCount": 2},
    ),
    "source outside the allowed roots": Bad(
        "sourceDirUri", "allowed_roots", lambda b, _: {"sourceDirUri": "file:///etc"}
    ),
    "model upload outside the allowed roots": Bad(
        "modelUploadUri", "allowed_roots", lambda b, _: {"modelUploadUri": "file:///etc/models"}
    ),
    "unknown imageId": Bad("imageId", "not_found", lambda b, _: {"imageId": UNKNOWN_ID}),
    "unknown warm start tuning": Bad(
        "warmStartHyperparameterTuningId",
        "warm_start",
        lambda b, _: {"warmStartHyperparameterTuningId": UNKNOWN_ID},
    ),
    "warm start from a tuning still running": Bad(
        "warmStartHyperparameterTuningId",
        "warm_start",
        lambda b, existing: {"warmStartHyperparameterTuningId": existing},
    ),
    "unknown training template": Bad(
        "",
        None,
        lambda b, _: {"trainingTemplateId": UNKNOWN_ID},
        status=404,
        code=NOT_FOUND,
    ),
}


@pytest.mark.parametrize("case", list(BAD_CREATES.values()), ids=list(BAD_CREATES))
def test_a_bad_create_names_the_field_and_creates_nothing(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, ray: FakeBackend, case: Bad
) -> None:
    existing = create(api, tuning_bodies.own_code("existing"))["hyperparameterTuningId"]
    assert status_of(api, existing) == "CREATE_IN_PROGRESS"
    before, submits = snapshot_tables(db), ray.submit_calls

    body = tuning_bodies.own_code(
        "bad", experimentName="fresh", **case.change(tuning_bodies, existing)
    )
    reply = api.post(TUNINGS, body)

    assert_error(reply, case.status, case.code, field=case.field or None, rule=case.rule)
    if case.code == VALIDATION:
        assert case.field in reply.header["resultMessage"], reply.header
    assert count_tunings(db) == 1
    assert snapshot_tables(db) == before  # not even the experiment "fresh"
    assert ray.submit_calls == submits


def test_every_problem_of_a_bad_search_is_named_at_once(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    body = tuning_bodies.own_code(
        "many",
        hyperparameterSpecList=[LEARNING_RATE | {"hyperparameterMinValue": "1"}, OPTIMIZER],
        objectiveMetric={"name": "f1"},
        instanceCount=3,
    )
    reply = api.post(TUNINGS, body)
    assert_error(reply, 400, VALIDATION)
    named = {(e["field"], e["rule"]) for e in reply.header["errors"]}
    assert {
        ("hyperparameterSpecList.0.hyperparameterMinValue", "range"),
        ("objectiveMetric.name", "unknown_metric"),
        ("instanceCount", "multiple"),
    } <= named
    assert count_tunings(db) == 0 and ray.submit_calls == 0


# --- training template prefill and warm start -----------------------------------------------


def make_template(api: ApiClient, bodies: TuningBodies) -> dict[str, Any]:
    """A training template whose every value differs from ``TuningBodies.own_code``'s."""
    template_body = {
        "trainingTemplateName": "mnist-template",
        "imageId": image_id(CPU_TRAINING_IMAGE),
        "flavorId": flavor("m2.c2m4").id,
        "sourceDirUri": bodies.uri("code/template"),
        "entryPoint": "template_train.py",
        "modelUploadUri": bodies.uri("models/template"),
        "datasetList": [{"datasetName": "train", "dataUri": bodies.uri("data/t")}],
        "hyperparameterList": [{"parameterName": "epochs", "parameterValue": "3"}],
        "timeoutMinutes": 90,
    }
    made = api.post("/training-templates", template_body)
    assert made.status == 201, made.body
    template: dict[str, Any] = made.body["trainingTemplate"]
    assert template["entryPoint"] == "template_train.py"
    return template


def tuning_fields(name: str, template_id: str) -> dict[str, Any]:
    """Only what a tuning adds to a training: name, search, objective, budget."""
    return {
        "hyperparameterTuningName": name,
        "experimentName": "experiment",
        "trainingTemplateId": template_id,
        "hyperparameterSpecList": [LEARNING_RATE, OPTIMIZER],
        "metricList": [{"name": "accuracy"}],
        "objectiveMetric": {"name": "accuracy"},
        "objectiveTypeCode": "MAXIMIZE",
        "maxTrialCount": 3,
        "tuningStrategyName": "RANDOM",
    }


def test_a_training_template_fills_everything_a_tuning_leaves_out(
    api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    template = make_template(api, tuning_bodies)

    tuning = create(api, tuning_fields("from-template", template["trainingTemplateId"]))

    assert tuning["trainingTemplateId"] == template["trainingTemplateId"]
    assert tuning["imageId"] == template["imageId"]
    assert tuning["image"]["imageName"] == CPU_TRAINING_IMAGE
    assert tuning["flavorId"] == template["flavorId"]
    assert tuning["flavor"]["name"] == "m2.c2m4"
    assert tuning["sourceDirUri"] == template["sourceDirUri"]
    assert tuning["entryPoint"] == "template_train.py"
    assert tuning["modelUploadUri"] == template["modelUploadUri"]
    assert status_of(api, tuning["hyperparameterTuningId"]) == "CREATE_IN_PROGRESS"


def test_a_training_template_fills_the_optional_fields_a_tuning_leaves_out(
    api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    template = make_template(api, tuning_bodies)
    required = {
        "imageId": template["imageId"],
        "flavorId": template["flavorId"],
        "modelUploadUri": template["modelUploadUri"],
    }

    tuning = create(api, tuning_fields("from-template", template["trainingTemplateId"]) | required)

    assert tuning["trainingTemplateId"] == template["trainingTemplateId"]
    assert tuning["flavor"]["name"] == "m2.c2m4"
    assert tuning["image"]["imageName"] == CPU_TRAINING_IMAGE
    assert tuning["sourceDirUri"] == template["sourceDirUri"]
    assert tuning["entryPoint"] == "template_train.py"
    assert tuning["datasetList"] == template["datasetList"]
    assert tuning["hyperparameterList"] == template["hyperparameterList"]
    assert tuning["timeoutMinutes"] == 90
    assert tuning["maxTrialCount"] == 3
    spec = job(api, tuning["hyperparameterTuningId"]).body["job"]["spec"]
    assert (spec["source_dir_uri"], spec["entry_point"]) == (
        template["sourceDirUri"],
        "template_train.py",
    )
    assert status_of(api, tuning["hyperparameterTuningId"]) == "CREATE_IN_PROGRESS"

    # What the body gives wins over the template.
    override = create(
        api,
        tuning_fields("override", template["trainingTemplateId"])
        | required
        | {"entryPoint": "other.py", "timeoutMinutes": 30},
    )
    assert (override["entryPoint"], override["timeoutMinutes"]) == ("other.py", 30)
    assert override["sourceDirUri"] == template["sourceDirUri"]


def test_another_tenants_training_template_is_not_found(
    api: ApiClient,
    other_api: ApiClient,
    db: Database,
    tuning_bodies: TuningBodies,
    ray: FakeBackend,
) -> None:
    theirs = make_template(other_api, tuning_bodies)
    body = tuning_bodies.own_code("intruder", trainingTemplateId=theirs["trainingTemplateId"])
    assert_error(api.post(TUNINGS, body), 404, NOT_FOUND)
    assert count_tunings(db) == 0


def test_a_warm_start_needs_an_ended_tuning_of_the_same_objective(
    api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    source_id = create(api, tuning_bodies.own_code("source"))["hyperparameterTuningId"]
    finish(api, source_id)

    warm = create(api, tuning_bodies.own_code("warm", warmStartHyperparameterTuningId=source_id))
    assert warm["warmStartHyperparameterTuningId"] == source_id
    spec = job(api, warm["hyperparameterTuningId"]).body["job"]
    assert spec["warmStartStudyName"] == source_id
    assert spec["studyName"] == warm["hyperparameterTuningId"]

    other_objective = api.post(
        TUNINGS,
        tuning_bodies.own_code(
            "other-goal",
            objectiveMetric={"name": "loss"},
            objectiveTypeCode="MINIMIZE",
            warmStartHyperparameterTuningId=source_id,
        ),
    )
    assert_error(
        other_objective,
        400,
        VALIDATION,
        field="warmStartHyperparameterTuningId",
        rule="warm_start",
    )


def test_a_warm_start_from_another_tenants_tuning_is_refused(
    api: ApiClient, other_api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    theirs = create(other_api, tuning_bodies.own_code("theirs"))["hyperparameterTuningId"]
    finish(other_api, theirs)
    reply = api.post(
        TUNINGS, tuning_bodies.own_code("mine", warmStartHyperparameterTuningId=theirs)
    )
    assert_error(reply, 400, VALIDATION, field="warmStartHyperparameterTuningId")


# --- the driver's internal API --------------------------------------------------------------


def test_the_runner_api_needs_the_tunings_own_token(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies.own_code("guarded"))["hyperparameterTuningId"]
    other_id = create(api, tuning_bodies.own_code("other"))["hyperparameterTuningId"]
    before = tuning_row(db, tuning_id)
    wrong_kind = {runner_auth.HEADER: runner_auth.job_token("training", tuning_id)}

    for headers in ({}, {runner_auth.HEADER: "wrong"}, tuning_headers(other_id), wrong_kind):
        assert_error(report(api, tuning_id, "RUNNING", headers=headers), 401, UNAUTHORIZED)
        spec = job(api, tuning_id, headers=headers)
        assert_error(spec, 401, UNAUTHORIZED)
        assert "job" not in spec.body
        assert_error(trial(api, tuning_id, 0, headers=headers), 401, UNAUTHORIZED)
        metrics = api.request(
            "POST",
            internal(tuning_id, "metrics"),
            json_body={"samples": []},
            headers=headers,
            absolute=True,
        )
        assert_error(metrics, 401, UNAUTHORIZED)

    assert tuning_row(db, tuning_id) == before
    assert count_trials(db) == 0
    assert status_of(api, tuning_id) == "CREATE_IN_PROGRESS"


def test_the_driver_reads_its_job_spec_and_optuna_storage(
    api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    body = tuning_bodies.own_code("spec", instanceCount=4, parallelTrialCount=2)
    tuning = create(api, body)
    tuning_id = tuning["hyperparameterTuningId"]

    reply = job(api, tuning_id)
    assert reply.status == 200, reply.body
    spec = reply.body["job"]
    assert spec["hyperparameterTuningId"] == tuning_id
    assert spec["name"] == "spec"
    assert spec["appKey"] == api.appkey
    assert spec["experimentId"] == tuning["experimentId"]
    assert spec["status"] == "CREATE_IN_PROGRESS"
    assert spec["spec"]["flavor"]["name"] == ONE_CPU
    assert spec["spec"]["image"]["imageName"] == CPU_TRAINING_IMAGE
    assert spec["spec"]["entry_point"] == "train.py"
    assert spec["spec"]["objective_type_code"] == "MAXIMIZE"
    assert spec["spec"]["max_trial_count"] == 4
    # the search space as the SDK sent it: camelCase, every value a string
    assert spec["hyperparameterSpecList"] == [LEARNING_RATE, OPTIMIZER]
    assert spec["nodesPerTrial"] == 2
    assert spec["studyName"] == tuning_id
    assert spec["warmStartStudyName"] is None
    assert spec["trials"] == []
    assert spec["resultKey"] == tunings.JOB.result_key(tuning_id)
    assert spec["logPrefix"] == tunings.log_prefix(api.appkey, tuning_id)

    # On SQLite the study lives in a sibling file of the platform's database, never in it.
    platform = Path(str(make_url(get_settings().database_url).database))
    storage = make_url(spec["optunaStorage"]["url"])
    assert storage.get_backend_name() == "sqlite"
    study_file = Path(str(storage.database))
    assert study_file.parent == platform.parent
    assert study_file.name == f"{platform.stem}-optuna{platform.suffix}"
    assert study_file != platform
    assert spec["optunaStorage"]["engineKwargs"]["connect_args"]["timeout"] > 0


def test_a_trial_is_created_then_moves_and_a_terminal_trial_stays(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning = create(api, tuning_bodies.own_code("trials"))
    tuning_id = tuning["hyperparameterTuningId"]
    assert report(api, tuning_id, "RUNNING").status == 200
    params = {"learning_rate": "0.01", "optimizer": "adam"}

    created = trial(api, tuning_id, 0, params=params)
    assert created.status == 200, created.body
    answer = created.body["trial"]
    trial_id = answer["trialId"]
    assert answer["status"] == "CREATED"
    assert answer["logPrefix"] == tunings.trial_log_prefix(api.appkey, trial_id)
    assert answer["modelUploadUri"] == tuning["modelUploadUri"].rstrip("/") + "/trials/0"
    assert answer["modelUploadUri"].endswith("/trials/0")
    assert answer["checkPointUploadUri"] is None
    assert job(api, tuning_id).body["job"]["trials"] == [
        {"trialId": trial_id, "number": 0, "status": "CREATED"}
    ]

    listed = api.get(f"{TUNINGS}/{tuning_id}/trials").body["trialList"]
    assert len(listed) == 1
    assert listed[0]["trialId"] == trial_id
    assert listed[0]["trialName"] == "trial-0"
    assert listed[0]["trialStatusCode"] == "CREATED"
    assert listed[0]["hyperparameterTuningId"] == tuning_id
    assert {p["parameterName"]: p["parameterValue"] for p in listed[0]["hyperparameterList"]} == (
        params
    )
    assert listed[0]["startedDatetime"] is None

    moved(api, tuning_id, 0, "RUNNING")
    assert get(api, tuning_id)["runningTrialCount"] == 1
    running = api.get(f"{TUNINGS}/{tuning_id}/trials").body["trialList"][0]
    assert running["trialStatusCode"] == "RUNNING" and running["startedDatetime"] is not None

    done = trial(api, tuning_id, 0, "SUCCEEDED", metrics=ACCURACY, objectiveValue=0.9)
    assert done.status == 200, done.body
    assert done.body["trial"]["trialId"] == trial_id  # the same trial, not a new one
    succeeded = api.get(f"{TUNINGS}/{tuning_id}/trials").body["trialList"][0]
    assert succeeded["trialStatusCode"] == "SUCCEEDED"
    assert succeeded["objectiveMetricValue"] == 0.9
    assert succeeded["trialMetricList"] == [
        {
            "trialMetricName": "accuracy",
            "trialMetricMinValue": "0.5",
            "trialMetricMaxValue": "0.9",
            "trialMetricLatestValue": "0.9",
        }
    ]
    assert succeeded["endedDatetime"] is not None

    # A terminal trial never changes: a late failure is a conflict and keeps everything.
    late = trial(api, tuning_id, 0, "FAILED", reason="late", objectiveValue=0.1)
    assert_error(late, 409, INVALID_TRANSITION)
    after = api.get(f"{TUNINGS}/{tuning_id}/trials").body["trialList"]
    assert after == [succeeded]

    unknown = trial(api, tuning_id, 1, "EXPLODED")
    assert_error(unknown, 400, BAD_REQUEST)
    assert "EXPLODED" in unknown.header["resultMessage"]
    assert count_trials(db, tuning_id) == 1
    assert get(api, tuning_id)["successfulTrialCount"] == 1


def test_a_trial_report_for_an_unknown_tuning_is_not_found(api: ApiClient) -> None:
    assert_error(trial(api, UNKNOWN_ID, 0), 404, NOT_FOUND)
    assert_error(report(api, UNKNOWN_ID, "RUNNING"), 404, NOT_FOUND)
    assert_error(job(api, UNKNOWN_ID), 404, NOT_FOUND)


# objective values of trials 0..4; trial 3 ends EARLY_STOPPED with the best value of all
OBJECTIVES = {0: 0.9, 1: 0.7, 3: 0.95, 4: 0.8}


@pytest.mark.parametrize(
    ("objective_type", "best"), [("MAXIMIZE", 0), ("MINIMIZE", 1)], ids=["MAXIMIZE", "MINIMIZE"]
)
def test_a_completed_tuning_counts_its_trials_and_names_the_optimal_one(
    api: ApiClient,
    tuning_bodies: TuningBodies,
    ray: FakeBackend,
    objective_type: str,
    best: int,
) -> None:
    tuning_id = create(
        api,
        tuning_bodies.own_code("ranked", objectiveTypeCode=objective_type, maxTrialCount=6),
    )["hyperparameterTuningId"]
    running = report(api, tuning_id, "RUNNING")
    assert running.status == 200, running.body
    assert running.body["hyperparameterTuning"] == {"status": "RUNNING"}
    assert get(api, tuning_id)["startedDatetime"] is not None

    # created out of order: listed by number all the same
    for number in (3, 1, 0, 4, 2, 5):
        params = {"learning_rate": f"0.0{number + 1}", "optimizer": "sgd"}
        assert trial(api, tuning_id, number, params=params).status == 200
    for number, value in OBJECTIVES.items():
        moved(api, tuning_id, number, "RUNNING")
        metrics = {"accuracy": {"min": value / 2, "max": value, "latest": value}}
        end = "EARLY_STOPPED" if number == 3 else "SUCCEEDED"
        moved(api, tuning_id, number, end, metrics=metrics, objectiveValue=value)
    moved(api, tuning_id, 2, "RUNNING")
    moved(api, tuning_id, 2, "FAILED", reason="train.py exited with code 1")
    moved(api, tuning_id, 5, "KILLED", reason="the tuning ended")

    complete = report(api, tuning_id, "COMPLETE", detail="MaxTrialsReached")
    assert complete.status == 200, complete.body
    assert complete.body["hyperparameterTuning"] == {"status": "COMPLETE"}

    tuning = get(api, tuning_id)
    assert tuning["hyperparameterTuningStatusCode"] == "COMPLETE"
    assert tuning["hyperparameterTuningStatusDetail"] == "MaxTrialsReached"
    assert tuning["endedDatetime"] is not None
    assert (
        tuning["successfulTrialCount"],
        tuning["failedTrialCount"],
        tuning["earlyStoppedTrialCount"],
        tuning["killedTrialCount"],
        tuning["runningTrialCount"],
        tuning["metricsUnavailableTrialCount"],
    ) == (3, 1, 1, 1, 0, 0)
    optimal = tuning["optimalTrial"]
    assert optimal is not None
    assert optimal["trialName"] == f"trial-{best}"
    assert tuning["optimalTrialId"] == optimal["trialId"]
    assert optimal["trialStatusCode"] == "SUCCEEDED"  # never the early-stopped 0.95
    assert optimal["objectiveMetricValue"] == OBJECTIVES[best]
    assert optimal["trialMetricList"] == [
        {
            "trialMetricName": "accuracy",
            "trialMetricMinValue": str(OBJECTIVES[best] / 2),
            "trialMetricMaxValue": str(OBJECTIVES[best]),
            "trialMetricLatestValue": str(OBJECTIVES[best]),
        }
    ]
    read = HyperparameterTuningBaseModel.model_validate(tuning | {"experiment": None})
    assert read.optimal_trial is not None
    assert read.optimal_trial.trial_id == optimal["trialId"]

    path = f"{TUNINGS}/{tuning_id}/trials"
    everything = api.get(path)
    assert trial_numbers(everything) == [0, 1, 2, 3, 4, 5]
    assert everything.body["paging"]["totalCount"] == 6
    succeeded = api.get(path, query={"trialStatusCodeList": "SUCCEEDED"})
    assert trial_numbers(succeeded) == [0, 1, 4]
    ended_badly = api.get(path, query={"trialStatusCodeList": "FAILED,KILLED"})
    assert trial_numbers(ended_badly) == [2, 5]
    failed = ended_badly.body["trialList"][0]
    assert failed["statusReason"] == "train.py exited with code 1"
    assert trial_numbers(api.get(path, query={"page": "2", "limit": "4"})) == [4, 5]
    assert 400 <= api.get(path, query={"trialStatusCodeList": "DONE"}).status < 500

    # A complete tuning is never reopened.
    assert_error(report(api, tuning_id, "RUNNING"), 409, INVALID_TRANSITION)
    assert status_of(api, tuning_id) == "COMPLETE"


def test_the_lowest_numbered_of_equal_trials_is_optimal(
    api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies.own_code("ties"))["hyperparameterTuningId"]
    for number in (1, 0):
        moved(api, tuning_id, number, "RUNNING")
        moved(api, tuning_id, number, "SUCCEEDED", metrics=ACCURACY, objectiveValue=0.9)
    assert get(api, tuning_id)["optimalTrial"]["trialName"] == "trial-0"


def test_a_tuning_report_of_an_unknown_status_changes_nothing(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies.own_code("odd"))["hyperparameterTuningId"]
    before = tuning_row(db, tuning_id)
    reply = report(api, tuning_id, "EXPLODED")
    assert_error(reply, 400, BAD_REQUEST)
    assert tuning_row(db, tuning_id) == before


def test_a_report_with_an_unknown_detail_is_refused_and_the_tuning_stays_readable(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies.own_code("odd-detail"))["hyperparameterTuningId"]
    assert report(api, tuning_id, "RUNNING").status == 200

    reply = report(api, tuning_id, "COMPLETE", detail="AllDone")

    assert 400 <= reply.status < 500, reply.body
    assert api.get(f"{TUNINGS}/{tuning_id}").status == 200
    assert api.get(TUNINGS).status == 200


def test_a_negative_trial_number_is_refused(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies.own_code("negative"))["hyperparameterTuningId"]
    reply = trial(api, tuning_id, -1)
    assert 400 <= reply.status < 500, reply.body
    assert count_trials(db, tuning_id) == 0


def test_a_failure_report_keeps_its_reason(
    api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies.own_code("fails"))["hyperparameterTuningId"]
    assert report(api, tuning_id, "RUNNING").status == 200
    reason = "3 trials failed (maxFailedTrialCount 3)"
    assert report(api, tuning_id, "FAIL_HYPERPARAMETER_TUNING", reason).status == 200
    tuning = get(api, tuning_id)
    assert tuning["hyperparameterTuningStatusCode"] == "FAIL_HYPERPARAMETER_TUNING"
    assert tuning["hyperparameterTuningStatusReason"] == reason
    assert tuning["hyperparameterTuningStatusDetail"] is None


# --- stop -----------------------------------------------------------------------------------


def test_stopping_a_running_tuning_asks_ray_and_may_be_repeated(
    api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies.own_code("to-stop"))["hyperparameterTuningId"]
    assert report(api, tuning_id, "RUNNING").status == 200

    stopped = api.put(f"{TUNINGS}/{tuning_id}/stop")
    assert stopped.status == 200, stopped.body
    assert stopped.header == SUCCESS
    assert stopped.body["hyperparameterTuning"]["hyperparameterTuningStatusCode"] == (
        "STOP_IN_PROGRESS"
    )
    assert ray.stopped == [tuning_id]

    again = api.put(f"{TUNINGS}/{tuning_id}/stop")
    assert again.status == 200, again.body
    assert set(ray.stopped) == {tuning_id}
    assert status_of(api, tuning_id) == "STOP_IN_PROGRESS"

    # The driver acknowledges; an ended tuning cannot be stopped again.
    assert report(api, tuning_id, "STOPPED").status == 200
    assert status_of(api, tuning_id) == "STOPPED"
    assert_error(api.put(f"{TUNINGS}/{tuning_id}/stop"), 409, INVALID_TRANSITION)


def test_stopping_a_complete_tuning_is_a_conflict(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies.own_code("done"))["hyperparameterTuningId"]
    finish(api, tuning_id)
    before = tuning_row(db, tuning_id)

    assert_error(api.put(f"{TUNINGS}/{tuning_id}/stop"), 409, INVALID_TRANSITION)
    assert tuning_row(db, tuning_id) == before
    assert ray.stopped == []


def test_stopping_a_never_dispatched_tuning_stops_it_at_once(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, use_backend: Installer
) -> None:
    backend = use_backend(UnreachableBackend())
    tuning_id = create(api, tuning_bodies.own_code("never-ran"))["hyperparameterTuningId"]
    assert backend.submit_calls == 1
    assert status_of(api, tuning_id) == "CREATE_REQUESTED"
    row = tuning_row(db, tuning_id)
    assert row is not None and row.dispatched_at is None

    reply = api.put(f"{TUNINGS}/{tuning_id}/stop")
    assert reply.status == 200, reply.body
    stopped = reply.body["hyperparameterTuning"]
    assert stopped["hyperparameterTuningStatusCode"] == "STOPPED"
    assert stopped["endedDatetime"] is not None
    assert status_of(api, tuning_id) == "STOPPED"
    assert backend.stopped == []  # nothing to tell Ray


# --- delete ---------------------------------------------------------------------------------


def test_a_tuning_is_deleted_with_its_trials_only_once_it_has_ended(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies.own_code("short-lived"))["hyperparameterTuningId"]
    trial_id = trial(api, tuning_id, 0).body["trial"]["trialId"]
    moved(api, tuning_id, 0, "RUNNING")
    store = platform_store()
    store.write(tunings.JOB.result_key(tuning_id), b'{"status": "COMPLETE"}')
    store.write(tunings.log_prefix(api.appkey, tuning_id) + "driver.log", b"hello\n")
    store.write(tunings.trial_log_prefix(api.appkey, trial_id) + "trial.log", b"epoch 1\n")

    refused = api.delete(f"{TUNINGS}/{tuning_id}")
    assert_error(refused, 409, DEPENDENT)
    assert "CREATE_IN_PROGRESS" in refused.header["resultMessage"]
    assert report(api, tuning_id, "RUNNING").status == 200
    assert_error(api.delete(f"{TUNINGS}/{tuning_id}"), 409, DEPENDENT)
    assert count_trials(db, tuning_id) == 1

    moved(api, tuning_id, 0, "SUCCEEDED", metrics=ACCURACY, objectiveValue=0.9)
    assert report(api, tuning_id, "COMPLETE", detail="SuggestionEndReached").status == 200
    deleted = api.delete(f"{TUNINGS}/{tuning_id}")
    assert deleted.status == 200, deleted.body
    assert deleted.header == SUCCESS
    assert_error(api.get(f"{TUNINGS}/{tuning_id}"), 404, NOT_FOUND)
    assert_error(api.get(f"{TUNINGS}/{tuning_id}/trials"), 404, NOT_FOUND)
    assert count_tunings(db) == 0
    assert count_trials(db) == 0
    assert not store.exists(tunings.JOB.result_key(tuning_id))
    assert not store.exists(tunings.log_prefix(api.appkey, tuning_id) + "driver.log")
    assert not store.exists(tunings.trial_log_prefix(api.appkey, trial_id) + "trial.log")
    assert_error(api.delete(f"{TUNINGS}/{tuning_id}"), 404, NOT_FOUND)


# --- copy -----------------------------------------------------------------------------------

SPEC_KEYS = (
    "imageId",
    "flavorId",
    "instanceCount",
    "parallelTrialCount",
    "sourceDirUri",
    "entryPoint",
    "modelUploadUri",
    "datasetList",
    "timeoutMinutes",
    "hyperparameterSpecList",
    "metricList",
    "metricRegex",
    "objectiveMetric",
    "objectiveTypeCode",
    "maxTrialCount",
    "maxFailedTrialCount",
    "tuningStrategyName",
    "experimentId",
    "flavor",
    "image",
    "description",
    "tagList",
)


def test_a_copy_is_a_new_tuning_with_the_same_spec_dispatched_now(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    source = create(
        api,
        tuning_bodies.own_code(
            "search", description="lr", tagList=[{"tagKey": "k", "tagValue": "v"}]
        ),
    )
    source_id = source["hyperparameterTuningId"]
    moved(api, source_id, 0, "RUNNING")
    finish(api, source_id)

    reply = api.post(f"{TUNINGS}/{source_id}/copy", {})
    assert reply.status == 201, reply.body
    copy = reply.body["hyperparameterTuning"]
    copy_id = copy["hyperparameterTuningId"]
    assert copy_id != source_id
    assert copy["hyperparameterTuningName"] == "search-copy"
    assert copy["hyperparameterTuningStatusCode"] == "CREATE_REQUESTED"
    assert {k: copy[k] for k in SPEC_KEYS} == {k: source[k] for k in SPEC_KEYS}
    assert copy["startedDatetime"] is None and copy["runningTrialCount"] == 0

    assert status_of(api, copy_id) == "CREATE_IN_PROGRESS"
    assert set(ray.jobs) == {source_id, copy_id}
    assert ray.jobs[copy_id].entrypoint.endswith(f"-m runners.tuning {copy_id}")
    assert job(api, copy_id).body["job"]["trials"] == []  # the trials stay with the source
    assert status_of(api, source_id) == "COMPLETE"

    named = api.post(f"{TUNINGS}/{source_id}/copy", {"hyperparameterTuningName": "again"})
    assert named.status == 201, named.body
    assert named.body["hyperparameterTuning"]["hyperparameterTuningName"] == "again"
    assert count_tunings(db) == 3

    long = create(api, tuning_bodies.own_code("n" * 50))
    copied = api.post(f"{TUNINGS}/{long['hyperparameterTuningId']}/copy", {})
    assert copied.body["hyperparameterTuning"]["hyperparameterTuningName"] == "n" * 45 + "-copy"


# --- list and tenancy -----------------------------------------------------------------------


def test_tunings_are_listed_newest_first_paged_and_filtered(
    api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    ids = {}
    for name, experiment in (("alpha", "exp-a"), ("beta", "exp-b"), ("gamma", "exp-a")):
        created = create(api, tuning_bodies.own_code(name, experimentName=experiment))
        ids[name] = (created["hyperparameterTuningId"], created["experimentId"])
        time.sleep(0.005)  # distinct creation times for a deterministic order
    finish(api, ids["beta"][0])

    everything = api.get(TUNINGS)
    assert names(everything) == ["gamma", "beta", "alpha"]
    assert everything.body["paging"] == {"page": 1, "limit": 1000, "totalCount": 3}
    second_page = api.get(TUNINGS, query={"page": "2", "limit": "2"})
    assert names(second_page) == ["alpha"]
    assert second_page.body["paging"] == {"page": 2, "limit": 2, "totalCount": 3}

    by_id = api.get(
        TUNINGS, query={"hyperparameterTuningIdList": f"{ids['alpha'][0]},{ids['beta'][0]}"}
    )
    assert names(by_id) == ["beta", "alpha"]
    by_name = api.get(TUNINGS, query={"hyperparameterTuningNameList": "gamma,alpha"})
    assert names(by_name) == ["gamma", "alpha"]
    complete = api.get(TUNINGS, query={"hyperparameterTuningStatusCodeList": "COMPLETE"})
    assert names(complete) == ["beta"]
    complete_item = complete.body["hyperparameterTuningList"][0]
    assert complete_item["hyperparameterTuningStatusDetail"] == "MaxTrialsReached"
    by_experiment = api.get(TUNINGS, query={"experimentId": ids["alpha"][1]})
    assert names(by_experiment) == ["gamma", "alpha"]
    combined = api.get(
        TUNINGS,
        query={"experimentId": ids["alpha"][1], "hyperparameterTuningNameList": "alpha,beta"},
    )
    assert names(combined) == ["alpha"]
    none = api.get(TUNINGS, query={"hyperparameterTuningNameList": "delta"})
    assert names(none) == [] and none.body["paging"]["totalCount"] == 0


def test_a_tenant_sees_and_touches_only_its_own_tunings(
    api: ApiClient,
    other_api: ApiClient,
    db: Database,
    tuning_bodies: TuningBodies,
    ray: FakeBackend,
) -> None:
    tuning_id = create(api, tuning_bodies.own_code("private"))["hyperparameterTuningId"]
    assert trial(api, tuning_id, 0).status == 200
    before = tuning_row(db, tuning_id)

    listed = other_api.get(TUNINGS)
    assert names(listed) == [] and listed.body["paging"]["totalCount"] == 0
    assert names(other_api.get(TUNINGS, query={"hyperparameterTuningIdList": tuning_id})) == []
    assert_error(other_api.get(f"{TUNINGS}/{tuning_id}"), 404, NOT_FOUND)
    assert_error(other_api.get(f"{TUNINGS}/{tuning_id}/trials"), 404, NOT_FOUND)
    assert_error(other_api.put(f"{TUNINGS}/{tuning_id}/stop"), 404, NOT_FOUND)
    assert_error(other_api.post(f"{TUNINGS}/{tuning_id}/copy", {}), 404, NOT_FOUND)
    assert_error(other_api.delete(f"{TUNINGS}/{tuning_id}"), 404, NOT_FOUND)

    assert tuning_row(db, tuning_id) == before
    assert count_tunings(db) == 1 and ray.stopped == []
    assert names(api.get(TUNINGS)) == ["private"]


def test_an_unknown_tuning_is_not_found(api: ApiClient, ray: FakeBackend) -> None:
    assert_error(api.get(f"{TUNINGS}/{UNKNOWN_ID}"), 404, NOT_FOUND)
    assert_error(api.get(f"{TUNINGS}/{UNKNOWN_ID}/trials"), 404, NOT_FOUND)
    assert_error(api.put(f"{TUNINGS}/{UNKNOWN_ID}/stop"), 404, NOT_FOUND)
    assert_error(api.post(f"{TUNINGS}/{UNKNOWN_ID}/copy", {}), 404, NOT_FOUND)
    assert_error(api.delete(f"{TUNINGS}/{UNKNOWN_ID}"), 404, NOT_FOUND)
