"""The IBM Watson ML manifest (seed 004): parsing, validation and the training it becomes."""

from __future__ import annotations

import copy
import io
import json
import os
import stat
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from openmaker import wml
from openmaker.client import CliError
from openmaker.wml import ManifestError, build_model_zip, entry_script, parse_manifest

# The seed's first example, as written (variant keys training_data / training_results).
SEED_S3 = """\
model_definition:
  framework:
    name: tensorflow
    version: 1.2-py3
  name: tf-mnist-showtest1
  author:
    name: WML User
    email: wmluser@ibm.com
  description: Simple MNIST model implemented in TF
  execution:
    command: python3 convolutional_network.py --trainImagesFile ${DATA_DIR}/train-images-idx3-ubyte.gz
      --trainLabelsFile ${DATA_DIR}/train-labels-idx1-ubyte.gz --testImagesFile ${DATA_DIR}/t10k-images-idx3-ubyte.gz
      --testLabelsFile ${DATA_DIR}/t10k-labels-idx1-ubyte.gz --learningRate 0.001
      --trainingIters 2000000
    resource: small
training_data:
- connection:
    endpoint_url: <auth-url>
    aws_access_key_id: <username>
    aws_secret_access_key: <password>
  source:
    bucket: mnist-training-data
    type: s3
training_results:
  connection:
    endpoint_url: <auth-url>
    aws_access_key_id: <username>
    aws_secret_access_key: <password>
  target:
    bucket: mnist-training-models
    type: s3
"""  # noqa: E501 - the seed's lines, verbatim

# The seed's second example: OpenStack Swift, with the *_reference keys.
SEED_SWIFT = """\
model_definition:
  framework:
    name: tensorflow
    version: 1.2-py3
  name: tf-mnist-showtest1
  author:
    name: WML User
    email: wmluser@ibm.com
  description: Simple MNIST model implemented in TF
  execution:
    command: python3 convolutional_network.py --trainImagesFile ${DATA_DIR}/train-images-idx3-ubyte.gz
      --learningRate 0.001 --trainingIters 2000000
    resource: small
training_data_reference:
- connection:
    auth_url: <auth-url>
    user_name: <username>
    password: <password>
    region: <region>
    domain_name: <domain-name>
    project_id: <project-id>
  source:
    bucket: mnist-training-data
    type: bluemix_objectstore
training_results_reference:
  connection:
    auth_url: <auth-url>
    user_name: <username>
    password: <password>
    region: <region>
    domain_name: <domain-name>
    project_id: <project-id>
  target:
    bucket: mnist-training-models
    type: bluemix_objectstore
"""  # noqa: E501 - the seed's lines, verbatim


def seed() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SEED_S3)
    return data


def test_the_seeds_s3_example_parses() -> None:
    manifest = parse_manifest(seed())

    assert manifest.name == "tf-mnist-showtest1"
    assert manifest.description == "Simple MNIST model implemented in TF"
    assert (manifest.author_name, manifest.author_email) == ("WML User", "wmluser@ibm.com")
    assert (manifest.framework_name, manifest.framework_version) == ("tensorflow", "1.2-py3")
    assert manifest.command.startswith("python3 convolutional_network.py --trainImagesFile ")
    assert "${DATA_DIR}/t10k-labels-idx1-ubyte.gz --learningRate 0.001" in manifest.command
    assert "\n" not in manifest.command  # YAML folds the continuation lines
    assert manifest.resource == "small" and manifest.flavor == "m2.c2m4"
    assert manifest.image == "Ubuntu 22.04 CPU TensorFlow Training"
    assert manifest.data_bucket == "mnist-training-data"
    assert manifest.results_bucket == "mnist-training-models"
    assert manifest.credential_keys == (
        "training_data[0].connection",
        "training_results.connection",
    )
    assert manifest.notes == ()


def test_the_seeds_swift_example_is_refused_naming_the_key() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(yaml.safe_load(SEED_SWIFT))

    assert "training_data_reference[0].source.type" in caught.value.message
    assert "bluemix_objectstore" in caught.value.message
    assert "s3" in caught.value.message


@pytest.mark.parametrize("resource", ["small", "medium", "large"])
def test_each_resource_maps_to_a_cpu_flavor(resource: str) -> None:
    data = seed()
    data["model_definition"]["execution"]["resource"] = resource

    flavor = parse_manifest(data).flavor

    assert flavor == {"small": "m2.c2m4", "medium": "m2.c4m8", "large": "m2.c8m16"}[resource]


def _without(path: str) -> dict[str, Any]:
    data = seed()
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    del node[last]
    return data


@pytest.mark.parametrize(
    ("removed", "named"),
    [
        ("model_definition", "model_definition is missing"),
        ("model_definition.name", "model_definition.name is missing"),
        ("model_definition.framework", "model_definition.framework is missing"),
        ("model_definition.framework.name", "model_definition.framework.name is missing"),
        ("model_definition.execution", "model_definition.execution is missing"),
        ("model_definition.execution.command", "model_definition.execution.command is missing"),
        ("model_definition.execution.resource", "model_definition.execution.resource is missing"),
        ("training_data", "training_data_reference is missing"),
        ("training_results", "training_results_reference is missing"),
        ("training_results.target", "training_results.target is missing"),
    ],
)
def test_a_missing_key_is_named(removed: str, named: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(_without(removed))

    assert named in caught.value.message


def test_a_missing_source_bucket_and_type_are_named() -> None:
    data = seed()
    del data["training_data"][0]["source"]["bucket"]
    with pytest.raises(ManifestError, match=r"training_data\[0\]\.source\.bucket is missing"):
        parse_manifest(data)
    data = seed()
    del data["training_results"]["target"]["type"]
    with pytest.raises(ManifestError, match=r"training_results\.target\.type is missing"):
        parse_manifest(data)


def test_a_bad_resource_is_refused() -> None:
    data = seed()
    data["model_definition"]["execution"]["resource"] = "huge"

    with pytest.raises(ManifestError) as caught:
        parse_manifest(data)

    assert caught.value.message == (
        "manifest key model_definition.execution.resource must be small, medium or large, "
        "not 'huge'"
    )


@pytest.mark.parametrize("kind", ["swift", "gcs", "S3"])
def test_a_store_type_other_than_s3_is_refused(kind: str) -> None:
    data = seed()
    data["training_results"]["target"]["type"] = kind

    with pytest.raises(ManifestError, match=r"training_results\.target\.type must be s3"):
        parse_manifest(data)


def test_a_bad_bucket_name_is_refused() -> None:
    data = seed()
    data["training_data"][0]["source"]["bucket"] = "Not_A_Bucket"

    with pytest.raises(ManifestError, match=r"training_data\[0\]\.source\.bucket 'Not_A_Bucket'"):
        parse_manifest(data)


def test_both_key_variants_at_once_are_refused() -> None:
    data = seed()
    data["training_data_reference"] = copy.deepcopy(data["training_data"])

    with pytest.raises(ManifestError, match="training_data_reference and training_data"):
        parse_manifest(data)


def test_a_single_mapping_and_a_longer_list_are_accepted() -> None:
    data = seed()
    data["training_data_reference"] = data.pop("training_data")[0]
    second = copy.deepcopy(data["training_results"])
    second["target"]["bucket"] = "other-bucket"
    data["training_results_reference"] = [data.pop("training_results"), second]

    manifest = parse_manifest(data)

    assert manifest.data_bucket == "mnist-training-data"
    assert manifest.results_bucket == "mnist-training-models"
    assert manifest.notes == ("training_results_reference lists 2 stores; only the first is used",)
    assert manifest.credential_keys == (
        "training_data_reference.connection",
        "training_results_reference[0].connection",
    )


def test_wrong_shapes_are_named() -> None:
    data = seed()
    data["model_definition"]["execution"] = "python3 train.py"
    with pytest.raises(ManifestError, match=r"model_definition\.execution must be a mapping"):
        parse_manifest(data)
    data = seed()
    data["training_data"] = []
    with pytest.raises(ManifestError, match="training_data is an empty list"):
        parse_manifest(data)
    with pytest.raises(ManifestError, match="must be a mapping"):
        parse_manifest(["not", "a", "manifest"])


def test_load_manifest_reports_bad_yaml_and_a_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("model_definition: [unclosed\n")

    with pytest.raises(ManifestError, match="is not valid YAML"):
        wml.load_manifest(bad)
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        wml.load_manifest(tmp_path / "missing.yml")


def test_the_training_body_never_carries_the_manifests_credentials() -> None:
    data = seed()
    secrets = {"endpoint_url": "https://cos.example", "aws_access_key_id": "AKIAEXAMPLE"}
    secrets["aws_secret_access_key"] = "s3cr3t-VALUE-never-sent"
    data["training_data"][0]["connection"] = dict(secrets)
    data["training_results"]["connection"] = dict(secrets)

    body = wml.training_body(
        parse_manifest(data),
        source_uri="upload://appkey/u1/model-definition.zip",
        flavor_id="flavor-id",
        image_id="image-id",
    )
    text = json.dumps(body)

    for value in (*secrets.values(), *secrets.keys(), "connection", "<password>"):
        assert value not in text
    assert body == {
        "trainingName": "tf-mnist-showtest1",
        "description": "Simple MNIST model implemented in TF",
        "experimentName": "wml",
        "imageId": "image-id",
        "flavorId": "flavor-id",
        "instanceCount": 1,
        "sourceDirUri": "upload://appkey/u1/model-definition.zip",
        "entryPoint": "wml_entry.sh",
        "datasetList": [{"datasetName": "training_data", "dataUri": "s3://mnist-training-data"}],
        "modelUploadUri": "s3://mnist-training-models/{trainingId}/model",
        "logUploadUri": "s3://mnist-training-models/{trainingId}/logs",
        "tagList": [
            {"tagKey": "origin", "tagValue": "wml"},
            {"tagKey": "framework", "tagValue": "tensorflow 1.2-py3"},
        ],
    }


def test_a_name_the_api_would_refuse_becomes_a_resource_name() -> None:
    data = seed()
    data["model_definition"]["name"] = "my model (v2.1)!"

    body = wml.training_body(parse_manifest(data), source_uri="u", flavor_id="f", image_id="i")

    assert body["trainingName"] == "my-model-v2-1"


def test_the_entry_script_sets_wmls_variables_and_runs_the_command(tmp_path: Path) -> None:
    script = tmp_path / "wml_entry.sh"
    script.write_text(entry_script('echo "data=${DATA_DIR}/train.csv" results=$RESULT_DIR'))
    env = {
        "PATH": os.environ["PATH"],
        "EM_DATASET_TRAINING_DATA": "/data/here",
        "EM_MODEL_DIR": str(tmp_path / "model"),
    }

    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"data=/data/here/train.csv results={tmp_path / 'model'}\n"
    assert (tmp_path / "model").is_dir()
    assert "exec echo" in script.read_text()


def test_a_compound_command_runs_without_exec() -> None:
    text = entry_script("cd src && python3 train.py")

    assert text.rstrip().endswith("\ncd src && python3 train.py")
    assert "exec cd" not in text


def _zip(tmp_path: Path, files: dict[str, bytes]) -> Path:
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_the_model_zip_gets_the_entry_script(tmp_path: Path) -> None:
    model = _zip(
        tmp_path,
        {"convolutional_network.py": b"print(1)\n", "lib/input_data.py": b"", "lib/": b""},
    )

    data, names = build_model_zip(model, "python3 convolutional_network.py")

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == [
            "convolutional_network.py",
            "lib/input_data.py",
            "wml_entry.sh",
        ]
        info = archive.getinfo("wml_entry.sh")
        assert stat.S_IMODE(info.external_attr >> 16) == 0o755
        assert archive.read("wml_entry.sh").decode() == entry_script(
            "python3 convolutional_network.py"
        )
        assert archive.read("convolutional_network.py") == b"print(1)\n"
    assert names[-1] == "wml_entry.sh"


def test_a_wml_entry_sh_in_the_model_zip_is_replaced(tmp_path: Path) -> None:
    model = _zip(tmp_path, {"train.py": b"", "wml_entry.sh": b"echo mine\n"})

    data, _ = build_model_zip(model, "python3 train.py")

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist().count("wml_entry.sh") == 1
        assert b"exec python3 train.py" in archive.read("wml_entry.sh")


def test_bad_model_zips_are_refused(tmp_path: Path) -> None:
    not_zip = tmp_path / "model.zip"
    not_zip.write_text("hello")
    with pytest.raises(CliError, match="is not a zip file"):
        build_model_zip(not_zip, "python3 x.py")
    with pytest.raises(CliError, match="no model-definition zip"):
        build_model_zip(tmp_path / "absent.zip", "python3 x.py")
    with pytest.raises(CliError, match="unsafe path"):
        build_model_zip(_zip(tmp_path, {"../evil.py": b""}), "python3 x.py")
    with pytest.raises(CliError, match="holds no files"):
        build_model_zip(_zip(tmp_path, {"empty/": b""}), "python3 x.py")
    with pytest.raises(CliError, match="more than"):
        build_model_zip(_zip(tmp_path, {"big.bin": os.urandom(4096)}), "x", limit=1024)
