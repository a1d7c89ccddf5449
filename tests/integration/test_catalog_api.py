"""/flavors, /images and /algorithms: what the easymaker SDK resolves names through."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib import errors
from tests.integration.conftest import ApiClient, assert_error

# The console guide's base image tables ("Notebook images" and "Deep learning images"), by
# name: core type, framework, framework version, Python version.
GUIDE_NOTEBOOK_IMAGES = {
    "Ubuntu 22.04 CPU Python Notebook": ("CPU", "PYTHON", "3.10.12", "3.10"),
    "Ubuntu 22.04 GPU Python Notebook": ("GPU", "PYTHON", "3.10.12", "3.10"),
    "Ubuntu 22.04 CPU PyTorch Notebook": ("CPU", "PYTORCH", "2.0.1", "3.10"),
    "Ubuntu 22.04 GPU PyTorch Notebook": ("GPU", "PYTORCH", "2.0.1", "3.10"),
    "Ubuntu 22.04 CPU TensorFlow Notebook": ("CPU", "TENSORFLOW", "2.12.0", "3.10"),
    "Ubuntu 22.04 GPU TensorFlow Notebook": ("GPU", "TENSORFLOW", "2.12.0", "3.10"),
}
GUIDE_TRAINING_IMAGES = {
    "Ubuntu 22.04 CPU PyTorch Training": ("CPU", "PYTORCH", "2.0.1", "3.10"),
    "Ubuntu 22.04 GPU PyTorch Training": ("GPU", "PYTORCH", "2.0.1", "3.10"),
    "Ubuntu 22.04 CPU TensorFlow Training": ("CPU", "TENSORFLOW", "2.12.0", "3.10"),
    "Ubuntu 22.04 GPU TensorFlow Training": ("GPU", "TENSORFLOW", "2.12.0", "3.10"),
}

FLAVOR_FIELDS = {"id", "name", "vcpus", "ram", "disk", "gpuFlavor", "gpuCount", "gpuMemory"}
IMAGE_FIELDS = {
    "imageId",
    "imageName",
    "imageTypeCode",
    "coreTypeCode",
    "frameworkCode",
    "frameworkVersion",
    "pythonVersion",
}
ALGORITHM_FIELDS = {
    "algorithmId",
    "algorithmName",
    "cpuTrainingImageId",
    "gpuTrainingImageId",
    "algorithmDatasetSchema",
    "hyperparameterSpecList",
}
NOT_FOUND = errors.NotFoundError.result_code


def _images(api: ApiClient, **query: str) -> list[dict[str, Any]]:
    reply = api.get("/images", query=query or None)
    assert reply.status == 200, reply.body
    images: list[dict[str, Any]] = reply.body["imageList"]
    assert reply.body["paging"]["totalCount"] == len(images)
    return images


def _described(image: dict[str, Any]) -> tuple[str, str, str, str]:
    return (
        image["coreTypeCode"],
        image["frameworkCode"],
        image["frameworkVersion"],
        image["pythonVersion"],
    )


# --- flavors -------------------------------------------------------------------------------


def test_training_flavors_are_listed_with_the_sdks_fields(api: ApiClient) -> None:
    reply = api.get("/flavors", query={"groupType": "TRAINING"})
    assert reply.status == 200, reply.body
    flavors = reply.body["flavorList"]
    assert flavors and reply.body["paging"]["totalCount"] == len(flavors)
    for flavor in flavors:
        assert set(flavor) >= FLAVOR_FIELDS, flavor
        assert "TRAINING" in flavor["groupTypeList"]
        assert flavor["gpuFlavor"] == (flavor["gpuCount"] > 0) == (flavor["coreTypeCode"] == "GPU")
        assert flavor["vcpus"] >= 1 and flavor["ram"] >= 1
    assert {f["gpuFlavor"] for f in flavors} == {True, False}
    assert len({f["name"] for f in flavors}) == len(flavors)


def test_flavors_can_be_narrowed_to_a_core_type(api: ApiClient) -> None:
    gpu = api.get("/flavors", query={"groupType": "TRAINING", "coreTypeCode": "GPU"}).body
    assert gpu["flavorList"] and all(f["gpuFlavor"] for f in gpu["flavorList"])


def test_flavors_for_an_algorithm_match_its_images_core_types(api: ApiClient) -> None:
    algorithm = api.get("/algorithms").body["algorithmList"][0]
    flavors = api.get(
        "/flavors", query={"groupType": "TRAINING", "algorithmId": algorithm["algorithmId"]}
    ).body["flavorList"]
    expected = {"CPU"} if algorithm["gpuTrainingImageId"] is None else {"CPU", "GPU"}
    assert flavors and {f["coreTypeCode"] for f in flavors} == expected


def test_an_unknown_group_type_is_rejected_naming_group_type(api: ApiClient) -> None:
    reply = api.get("/flavors", query={"groupType": "GAMING"})
    assert_error(reply, 400, errors.ValidationError.result_code, field="groupType", rule="enum")
    assert "GAMING" not in repr(reply.body)


def test_a_flavor_is_fetched_by_id_and_an_unknown_one_is_not_found(api: ApiClient) -> None:
    for listed in api.get("/flavors").body["flavorList"]:
        reply = api.get(f"/flavors/{listed['id']}")
        assert reply.status == 200
        assert reply.body["flavor"] == listed
    assert_error(api.get("/flavors/no-such-flavor"), 404, NOT_FOUND)


# --- images --------------------------------------------------------------------------------


def test_training_images_are_only_training_images_named_as_in_the_guide(api: ApiClient) -> None:
    images = _images(api, groupTypeCodeList="TRAINING")
    assert {i["imageTypeCode"] for i in images} == {"TRAINING"}
    assert {i["imageName"]: _described(i) for i in images} == GUIDE_TRAINING_IMAGES


def test_notebook_images_are_only_notebook_images_named_as_in_the_guide(api: ApiClient) -> None:
    images = _images(api, groupTypeCodeList="NOTEBOOK")
    assert {i["imageTypeCode"] for i in images} == {"NOTEBOOK"}
    assert {i["imageName"]: _described(i) for i in images} == GUIDE_NOTEBOOK_IMAGES


def test_every_image_has_the_sdks_fields_and_a_unique_id(api: ApiClient) -> None:
    images = _images(api)
    assert len(images) == len(GUIDE_NOTEBOOK_IMAGES) + len(GUIDE_TRAINING_IMAGES)
    for image in images:
        assert set(image) >= IMAGE_FIELDS, image
    assert len({i["imageId"] for i in images}) == len(images)


def test_images_for_tuning_are_the_training_images(api: ApiClient) -> None:
    tuning = _images(api, groupTypeCodeList="HYPERPARAMETER_TUNING")
    assert {i["imageName"] for i in tuning} == set(GUIDE_TRAINING_IMAGES)


def test_several_group_types_select_the_union(api: ApiClient) -> None:
    both = _images(api, groupTypeCodeList="TRAINING,NOTEBOOK")
    assert {i["imageName"] for i in both} == set(GUIDE_TRAINING_IMAGES) | set(
        GUIDE_NOTEBOOK_IMAGES
    )


def test_an_unknown_image_group_type_is_rejected(api: ApiClient) -> None:
    reply = api.get("/images", query={"groupTypeCodeList": "TRAINING,GAMING"})
    assert_error(reply, 400, errors.ValidationError.result_code, rule="enum")
    assert any(e["field"].startswith("groupTypeCodeList") for e in reply.header["errors"])


def test_an_image_is_fetched_by_id_and_an_unknown_one_is_not_found(api: ApiClient) -> None:
    for listed in _images(api):
        reply = api.get(f"/images/{listed['imageId']}")
        assert reply.status == 200
        assert reply.body["image"] == listed
    assert_error(api.get("/images/no-such-image"), 404, NOT_FOUND)


# --- algorithms ----------------------------------------------------------------------------


def test_the_algorithm_list_holds_sklearn_classifier_with_its_hyperparameters(
    api: ApiClient,
) -> None:
    reply = api.get("/algorithms")
    assert reply.status == 200
    algorithms = {a["algorithmName"]: a for a in reply.body["algorithmList"]}
    sklearn = algorithms["sklearn_classifier"]
    assert set(sklearn) >= ALGORITHM_FIELDS
    specs = {s["hyperparameterName"]: s for s in sklearn["hyperparameterSpecList"]}
    assert {"n_estimators", "max_depth", "criterion"} <= set(specs)
    assert specs["n_estimators"]["hyperparameterTypeCode"] == "int"
    assert (
        specs["n_estimators"]["hyperparameterMinValue"],
        specs["n_estimators"]["hyperparameterMaxValue"],
    ) == ("1", "1000")
    assert specs["criterion"]["hyperparameterTypeCode"] == "categorical"
    assert "gini" in specs["criterion"]["hyperparameterSpecifiedValues"].split(",")
    assert "train" in {d["datasetName"] for d in sklearn["algorithmDatasetSchema"]}


def test_every_algorithm_points_at_a_training_image_that_exists(api: ApiClient) -> None:
    training = {i["imageId"]: i for i in _images(api, groupTypeCodeList="TRAINING")}
    for algorithm in api.get("/algorithms").body["algorithmList"]:
        cpu_image = training[algorithm["cpuTrainingImageId"]]
        assert cpu_image["coreTypeCode"] == "CPU"
        if algorithm["gpuTrainingImageId"] is not None:
            assert training[algorithm["gpuTrainingImageId"]]["coreTypeCode"] == "GPU"


def test_algorithms_filter_by_name(api: ApiClient) -> None:
    found = api.get("/algorithms", query={"algorithmName": "sklearn_classifier"}).body
    assert [a["algorithmName"] for a in found["algorithmList"]] == ["sklearn_classifier"]
    none = api.get("/algorithms", query={"algorithmName": "no-such"}).body
    assert none["algorithmList"] == [] and none["paging"]["totalCount"] == 0


def test_an_algorithm_is_fetched_by_id_and_an_unknown_one_is_not_found(api: ApiClient) -> None:
    for listed in api.get("/algorithms").body["algorithmList"]:
        reply = api.get(f"/algorithms/{listed['algorithmId']}")
        assert reply.status == 200
        assert reply.body["algorithm"] == listed
    assert_error(api.get("/algorithms/no-such-algorithm"), 404, NOT_FOUND)


def test_catalogs_need_a_token(api: ApiClient) -> None:
    anonymous = ApiClient(api.wsgi, api.appkey, None)
    for path in ("/flavors", "/images", "/algorithms"):
        assert_error(anonymous.get(path), 401, errors.UnauthorizedError.result_code)


# --- the SDK reads these lists -------------------------------------------------------------


@pytest.mark.parametrize(
    "path,key,sdk_class,name",
    [
        ("/images", "imageList", "Image", "Ubuntu 22.04 CPU PyTorch Training"),
        ("/flavors", "flavorList", "InstanceType", "m2.c4m8"),
        ("/algorithms", "algorithmList", "Algorithm", "sklearn_classifier"),
    ],
)
def test_the_easymaker_sdk_resolves_names_to_ids_from_these_lists(
    api: ApiClient, path: str, key: str, sdk_class: str, name: str
) -> None:
    """The SDK turns ``image_name``/``instance_type_name``/``algorithm_name`` into ids so."""
    from easymaker.common import utils
    from easymaker.common.image import Image
    from easymaker.common.instance_type import InstanceType
    from easymaker.training.components import Algorithm

    classes: dict[str, Any] = {
        "Image": Image,
        "InstanceType": InstanceType,
        "Algorithm": Algorithm,
    }
    items = api.get(path).body[key]
    resolved = utils.from_name_to_id(items, name, classes[sdk_class])
    id_field = {"Image": "imageId", "InstanceType": "id", "Algorithm": "algorithmId"}[sdk_class]
    name_field = {"Image": "imageName", "InstanceType": "name", "Algorithm": "algorithmName"}[
        sdk_class
    ]
    assert resolved == next(item[id_field] for item in items if item[name_field] == name)
