"""/training-templates: saved training specifications, validated like a training create."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib import errors
from chalicelib.store.db import Database
from tests.integration.conftest import (
    ApiClient,
    TrainingCatalog,
    assert_error,
    snapshot_tables,
)

VALIDATION = errors.ValidationError.result_code


def _create(api: ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    reply = api.post("/training-templates", body)
    assert reply.status == 201, reply.body
    assert reply.header == {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"}
    template: dict[str, Any] = reply.body["trainingTemplate"]
    return template


def test_a_template_with_own_code_keeps_every_field(
    api: ApiClient, catalog: TrainingCatalog
) -> None:
    body = catalog.own_code_body(
        "mnist-template",
        description="own code",
        tagList=[{"tagKey": "team", "tagValue": "vision"}],
        hyperparameterList=[
            {"parameterName": "epochs", "parameterValue": 3},
            {"parameterName": "lr", "parameterValue": "0.01"},
        ],
        datasetList=[{"datasetName": "train", "dataUri": "s3://my-bucket/mnist/train"}],
        checkPointUploadUri="nas://abc-123:/checkpoints",
        dataStorageSize=100,
        timeoutMinutes=60,
        useLog=True,
    )
    template = _create(api, body)
    assert template["trainingTemplateName"] == "mnist-template"
    assert template["imageId"] == catalog.cpu_image_id
    assert template["flavorId"] == catalog.cpu_flavor_id
    assert template["sourceDirUri"] == "file:///srv/code/mnist"
    assert template["entryPoint"] == "train.py"
    assert template["algorithmId"] is None
    assert template["hyperparameterList"] == [
        {"parameterName": "epochs", "parameterValue": "3"},
        {"parameterName": "lr", "parameterValue": "0.01"},
    ]
    assert template["datasetList"] == body["datasetList"]
    assert template["tagList"] == body["tagList"]
    assert (template["dataStorageSize"], template["timeoutMinutes"]) == (100, 60)
    assert template["useLog"] is True
    assert (template["instanceCount"], template["nprocPerNode"]) == (1, 1)
    assert template["appKey"] == api.appkey
    assert template["createdDatetime"].endswith("+00:00")

    fetched = api.get(f"/training-templates/{template['trainingTemplateId']}")
    assert fetched.status == 200
    assert fetched.body["trainingTemplate"] == template


def test_a_template_with_the_built_in_algorithm_is_created(
    api: ApiClient, catalog: TrainingCatalog
) -> None:
    algorithms = api.get("/algorithms").body["algorithmList"]
    algorithm = next(a for a in algorithms if a["algorithmName"] == "sklearn_classifier")
    body = catalog.algorithm_body(
        "forest",
        algorithmId=algorithm["algorithmId"],
        imageId=algorithm["cpuTrainingImageId"],
        hyperparameterList=[
            {"parameterName": "n_estimators", "parameterValue": "200"},
            {"parameterName": "criterion", "parameterValue": "entropy"},
            {"parameterName": "validation_fraction", "parameterValue": 0.3},
        ],
        datasetList=[
            {"datasetName": "train", "dataUri": "file:///srv/data/iris/train.csv"},
            {"datasetName": "validation", "dataUri": "file:///srv/data/iris/val.csv"},
        ],
    )
    template = _create(api, body)
    assert template["algorithmId"] == algorithm["algorithmId"]
    assert template["sourceDirUri"] is None and template["entryPoint"] is None
    assert [p["parameterValue"] for p in template["hyperparameterList"]] == [
        "200",
        "entropy",
        "0.3",
    ]


def test_templates_are_listed_newest_first_and_filtered_by_name(
    api: ApiClient, catalog: TrainingCatalog
) -> None:
    ids = {}
    for name in ("alpha", "beta", "gamma"):
        ids[name] = _create(api, catalog.own_code_body(name))["trainingTemplateId"]
        time.sleep(0.002)  # distinct creation times for a deterministic order

    listed = api.get("/training-templates")
    assert listed.status == 200
    assert [t["trainingTemplateName"] for t in listed.body["trainingTemplateList"]] == [
        "gamma",
        "beta",
        "alpha",
    ]
    assert listed.body["paging"] == {"page": 1, "limit": 1000, "totalCount": 3}

    by_name = api.get(
        "/training-templates", query=[("trainingTemplateNameList", "alpha,gamma")]
    ).body
    assert {t["trainingTemplateName"] for t in by_name["trainingTemplateList"]} == {
        "alpha",
        "gamma",
    }
    repeated = api.get(
        "/training-templates",
        query=[("trainingTemplateNameList", "beta"), ("trainingTemplateNameList", "alpha")],
    ).body
    assert {t["trainingTemplateName"] for t in repeated["trainingTemplateList"]} == {
        "alpha",
        "beta",
    }
    by_id = api.get("/training-templates", query={"trainingTemplateIdList": ids["beta"]}).body
    assert [t["trainingTemplateId"] for t in by_id["trainingTemplateList"]] == [ids["beta"]]
    none = api.get("/training-templates", query={"trainingTemplateNameList": "delta"}).body
    assert none["trainingTemplateList"] == [] and none["paging"]["totalCount"] == 0

    second_page = api.get("/training-templates", query={"page": "2", "limit": "2"}).body
    assert [t["trainingTemplateName"] for t in second_page["trainingTemplateList"]] == ["alpha"]
    assert second_page["paging"] == {"page": 2, "limit": 2, "totalCount": 3}


def test_replacing_a_template_changes_its_fields_and_moves_updated_datetime(
    api: ApiClient, catalog: TrainingCatalog
) -> None:
    original = _create(
        api,
        catalog.own_code_body("to-replace", tagList=[{"tagKey": "old", "tagValue": "1"}]),
    )
    time.sleep(0.005)  # datetimes have millisecond resolution
    replaced = api.put(
        f"/training-templates/{original['trainingTemplateId']}",
        catalog.algorithm_body("replaced", description="now an algorithm"),
    )
    assert replaced.status == 200, replaced.body
    template = replaced.body["trainingTemplate"]
    assert template["trainingTemplateId"] == original["trainingTemplateId"]
    assert template["trainingTemplateName"] == "replaced"
    assert template["description"] == "now an algorithm"
    assert template["algorithmId"] == catalog.algorithm_id
    assert template["sourceDirUri"] is None and template["entryPoint"] is None
    assert template["tagList"] == []
    assert template["createdDatetime"] == original["createdDatetime"]
    assert template["updatedDatetime"] > original["updatedDatetime"]

    fetched = api.get(f"/training-templates/{original['trainingTemplateId']}").body
    assert fetched["trainingTemplate"] == template
    listed = api.get("/training-templates", query={"trainingTemplateNameList": "to-replace"})
    assert listed.body["trainingTemplateList"] == []


def test_replacing_a_template_keeping_its_name_is_allowed(
    api: ApiClient, catalog: TrainingCatalog
) -> None:
    template = _create(api, catalog.own_code_body("keep-name"))
    reply = api.put(
        f"/training-templates/{template['trainingTemplateId']}",
        catalog.own_code_body("keep-name", entryPoint="src/main.py"),
    )
    assert reply.status == 200, reply.body
    assert reply.body["trainingTemplate"]["entryPoint"] == "src/main.py"


def test_replacing_a_template_into_another_templates_name_is_a_conflict(
    api: ApiClient, db: Database, catalog: TrainingCatalog
) -> None:
    _create(api, catalog.own_code_body("taken"))
    mine = _create(api, catalog.own_code_body("mine"))
    before = snapshot_tables(db)
    reply = api.put(
        f"/training-templates/{mine['trainingTemplateId']}",
        catalog.own_code_body("taken", description="changed"),
    )
    assert_error(reply, 409, errors.DuplicateNameError.result_code)
    assert "taken" in reply.header["resultMessage"]
    assert snapshot_tables(db) == before


def test_creating_a_second_template_with_the_same_name_is_a_conflict(
    api: ApiClient, db: Database, catalog: TrainingCatalog
) -> None:
    _create(api, catalog.own_code_body("twice"))
    before = snapshot_tables(db)
    reply = api.post("/training-templates", catalog.algorithm_body("twice"))
    assert_error(reply, 409, errors.DuplicateNameError.result_code)
    assert snapshot_tables(db) == before


def test_copies_are_named_copy_then_copy_2_unless_a_name_is_given(
    api: ApiClient, catalog: TrainingCatalog
) -> None:
    source = _create(
        api,
        catalog.own_code_body(
            "base", description="source", tagList=[{"tagKey": "k", "tagValue": "v"}]
        ),
    )
    copy_path = f"/training-templates/{source['trainingTemplateId']}/copy"

    first = api.post(copy_path, {})
    assert first.status == 201, first.body
    first_copy = first.body["trainingTemplate"]
    assert first_copy["trainingTemplateName"] == "base-copy"
    assert first_copy["trainingTemplateId"] != source["trainingTemplateId"]
    same_spec = {"trainingTemplateId", "trainingTemplateName", "createdDatetime"}
    same_spec |= {"updatedDatetime"}
    assert {k: v for k, v in first_copy.items() if k not in same_spec} == {
        k: v for k, v in source.items() if k not in same_spec
    }

    second = api.post(copy_path)  # no body at all: the name is generated as well
    assert second.status == 201, second.body
    assert second.body["trainingTemplate"]["trainingTemplateName"] == "base-copy-2"

    named = api.post(copy_path, {"trainingTemplateName": "my-copy"})
    assert named.status == 201
    assert named.body["trainingTemplate"]["trainingTemplateName"] == "my-copy"

    taken = api.post(copy_path, {"trainingTemplateName": "base"})
    assert_error(taken, 409, errors.DuplicateNameError.result_code)

    names = {
        t["trainingTemplateName"]
        for t in api.get("/training-templates").body["trainingTemplateList"]
    }
    assert names == {"base", "base-copy", "base-copy-2", "my-copy"}


def test_a_copy_of_a_50_character_name_stays_within_the_limit(
    api: ApiClient, catalog: TrainingCatalog
) -> None:
    source = _create(api, catalog.own_code_body("n" * 50))
    reply = api.post(f"/training-templates/{source['trainingTemplateId']}/copy", {})
    assert reply.status == 201, reply.body
    name = reply.body["trainingTemplate"]["trainingTemplateName"]
    assert len(name) == 50 and name.endswith("-copy")


def test_a_deleted_template_is_gone(api: ApiClient, catalog: TrainingCatalog) -> None:
    template = _create(api, catalog.own_code_body("short-lived"))
    path = f"/training-templates/{template['trainingTemplateId']}"
    deleted = api.delete(path)
    assert deleted.status == 200
    assert deleted.body == {
        "header": {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"}
    }
    assert_error(api.get(path), 404, errors.NotFoundError.result_code)
    assert_error(api.delete(path), 404, errors.NotFoundError.result_code)
    assert api.get("/training-templates").body["trainingTemplateList"] == []
    # The name is free again.
    _create(api, catalog.own_code_body("short-lived"))


# --- validated like a training create ------------------------------------------------------


def _without(body: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in fields}


SpecCase = Callable[[TrainingCatalog], dict[str, Any]]

# name: (body, the field the error must name, a part of the message)
SPEC_CASES: dict[str, tuple[SpecCase, str | None, str]] = {
    "both algorithmId and sourceDirUri": (
        lambda c: c.algorithm_body("t", sourceDirUri="file:///srv/code", entryPoint="train.py"),
        "sourceDirUri",
        "algorithmId",
    ),
    "neither algorithmId nor sourceDirUri": (
        lambda c: _without(c.own_code_body("t"), "sourceDirUri", "entryPoint"),
        "sourceDirUri",
        "sourceDirUri",
    ),
    "sourceDirUri without entryPoint": (
        lambda c: _without(c.own_code_body("t"), "entryPoint"),
        "entryPoint",
        "entryPoint",
    ),
    "nprocPerNode 2 without useTorchrun": (
        lambda c: c.own_code_body("t", nprocPerNode=2),
        "nprocPerNode",
        "useTorchrun",
    ),
    "more processes than the flavor has cores": (
        lambda c: c.own_code_body("t", nprocPerNode=64, useTorchrun=True),
        "nprocPerNode",
        "at most",
    ),
    "a GPU image on a CPU flavor": (
        lambda c: c.own_code_body("t", imageId=c.gpu_image_id),
        "imageId",
        "GPU",
    ),
    "a CPU image on a GPU flavor": (
        lambda c: c.own_code_body("t", flavorId=c.gpu_flavor_id),
        "imageId",
        "CPU",
    ),
    "a notebook image": (
        lambda c: c.own_code_body("t", imageId=c.notebook_image_id),
        "imageId",
        "TRAINING",
    ),
    "no modelUploadUri": (
        lambda c: _without(c.own_code_body("t"), "modelUploadUri"),
        "modelUploadUri",
        "required",
    ),
}


@pytest.mark.parametrize("case", SPEC_CASES)
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_a_template_is_validated_like_a_training(
    api: ApiClient, db: Database, catalog: TrainingCatalog, case: str, method: str
) -> None:
    make_body, field, message_part = SPEC_CASES[case]
    body = make_body(catalog)
    path = "/training-templates"
    if method == "PUT":
        existing = _create(api, catalog.own_code_body("existing"))
        path += f"/{existing['trainingTemplateId']}"
    before = snapshot_tables(db)
    reply = api.request(method, path, json_body=body)
    assert_error(reply, 400, VALIDATION, field=field)
    assert message_part in reply.header["resultMessage"]
    assert snapshot_tables(db) == before


def test_a_gpu_image_on_a_gpu_flavor_with_torchrun_per_gpu_is_accepted(
    api: ApiClient, catalog: TrainingCatalog
) -> None:
    template = _create(
        api,
        catalog.own_code_body(
            "gpu-ok",
            imageId=catalog.gpu_image_id,
            flavorId=catalog.gpu_flavor_id,
            useTorchrun=True,
            nprocPerNode=1,
            instanceCount=2,
        ),
    )
    assert (template["instanceCount"], template["useTorchrun"]) == (2, True)
