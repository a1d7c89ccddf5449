"""Images, algorithms and instance types as the ``easymaker`` SDK reads and resolves them."""

from __future__ import annotations

from typing import Any

import pytest
from easymaker.common import utils
from easymaker.common.exceptions import EasyMakerError
from easymaker.common.image import Image
from easymaker.common.instance_type import InstanceType
from easymaker.training.components import Algorithm

CPU_TRAINING_IMAGE = "Ubuntu 22.04 CPU PyTorch Training"


def test_training_images_include_the_cpu_pytorch_training_image(sdk: Any) -> None:
    images = sdk.Training.get_image_list()

    names = [image.image_name for image in images]
    assert CPU_TRAINING_IMAGE in names
    assert all(isinstance(image, Image) and image.image_id for image in images)
    assert all(image.image_type_code == "TRAINING" for image in images)
    assert not any("Notebook" in name for name in names)


def test_the_sklearn_classifier_algorithm_names_its_cpu_training_image(sdk: Any) -> None:
    algorithms = {a.algorithm_name: a for a in sdk.Training.get_algorithm_list()}

    sklearn = algorithms["sklearn_classifier"]
    assert isinstance(sklearn, Algorithm)
    assert sklearn.algorithm_id
    assert sklearn.cpu_training_image_id
    assert sklearn.cpu_training_image_name
    assert "CPU" in sklearn.cpu_training_image_name
    assert sklearn.hyperparameter_spec_list


def test_training_instance_types_have_a_name_and_resources(sdk: Any) -> None:
    instance_types = sdk.Training.get_instance_type_list()

    assert instance_types
    for instance_type in instance_types:
        assert isinstance(instance_type, InstanceType)
        assert instance_type.id and instance_type.name
        assert instance_type.vcpus and instance_type.vcpus >= 1
        assert instance_type.ram and instance_type.ram >= 1


def test_the_unfiltered_catalog_calls_that_training_run_makes_succeed(sdk: Any) -> None:
    sender = sdk.easymaker_config.api_sender

    instance_types = sender.get_instance_type_list()
    images = sender.get_image_list()
    algorithms = sender.get_algorithm_list()

    assert {"id", "name", "vcpus", "ram"} <= set(instance_types[0])
    assert {"imageId", "imageName"} <= set(images[0])
    assert {"algorithmId", "algorithmName"} <= set(algorithms[0])
    assert {"NOTEBOOK", "TRAINING"} <= {image["imageTypeCode"] for image in images}


def test_names_resolve_to_ids_the_way_training_run_resolves_them(sdk: Any) -> None:
    sender = sdk.easymaker_config.api_sender
    images = sender.get_image_list()
    instance_types = sender.get_instance_type_list()
    algorithms = sender.get_algorithm_list()

    image_id = utils.from_name_to_id(images, CPU_TRAINING_IMAGE, Image)
    flavor_id = utils.from_name_to_id(instance_types, instance_types[0]["name"], InstanceType)
    algorithm_id = utils.from_name_to_id(algorithms, "sklearn_classifier", Algorithm)

    assert image_id == next(i["imageId"] for i in images if i["imageName"] == CPU_TRAINING_IMAGE)
    assert flavor_id == instance_types[0]["id"]
    assert algorithm_id == next(
        a["algorithmId"] for a in algorithms if a["algorithmName"] == "sklearn_classifier"
    )
    with pytest.raises(EasyMakerError, match="Invalid Image name"):
        utils.from_name_to_id(images, "No Such Image", Image)
