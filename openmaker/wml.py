"""The IBM Watson ML way: ``openmaker train MODEL.zip MANIFEST.yml`` and ``trained-models``.

A WML training run is a model-definition zip and a YAML manifest::

    model_definition:
      name: tf-mnist                       # the training's name
      description: Simple MNIST model      # optional
      author: {name: ..., email: ...}      # optional
      framework: {name: tensorflow, version: 1.2-py3}
      execution:
        command: python3 train.py --data ${DATA_DIR}/train.csv
        resource: small                    # small | medium | large
    training_data_reference:               # or training_data; a list (the first is used)
      - connection: {...}                  # never sent: the platform uses its own access
        source: {bucket: my-data, type: s3}
    training_results_reference:            # or training_results
      connection: {...}
      target: {bucket: my-results, type: s3}

It becomes a training: the zip's files plus a generated ``wml_entry.sh`` (``DATA_DIR`` is
the downloaded data bucket, ``RESULT_DIR`` the model folder, then the command), the dataset
``training_data`` = ``s3://{source.bucket}``, the model uploaded to
``s3://{target.bucket}/{trainingId}/model`` and the log to
``s3://{target.bucket}/{trainingId}/logs/training.log``.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from openmaker.client import Client, CliError
from openmaker.nsml import (
    MAX_UPLOAD_BYTES,
    duration,
    err_console,
    is_terminal,
    local_time,
    out_console,
    report_end,
    slug,
    wait_for,
)

ENTRY_POINT = "wml_entry.sh"
DATASET_NAME = "training_data"
DEFAULT_EXPERIMENT = "wml"
ORIGIN_TAG = {"tagKey": "origin", "tagValue": "wml"}
# IBM's small/medium/large were 1/2/4 GPUs; OpenMaker runs on a CPU laptop by default.
RESOURCE_FLAVORS = {"small": "m2.c2m4", "medium": "m2.c4m8", "large": "m2.c8m16"}
FRAMEWORK_IMAGES = {
    "tensorflow": "Ubuntu 22.04 CPU TensorFlow Training",
    "keras": "Ubuntu 22.04 CPU TensorFlow Training",
    "pytorch": "Ubuntu 22.04 CPU PyTorch Training",
    "torch": "Ubuntu 22.04 CPU PyTorch Training",
}
DEFAULT_IMAGE = "Ubuntu 22.04 CPU PyTorch Training"
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
SWIFT = "bluemix_objectstore"
DESCRIPTION_MAX = 255
SHELL_OPERATORS = re.compile(r"[;&|\n]")


class ManifestError(CliError):
    """The manifest is not one OpenMaker can run; the message names the key."""


@dataclass(frozen=True)
class Manifest:
    """What OpenMaker takes from a WML training manifest (never its credentials)."""

    name: str
    command: str
    resource: str
    framework_name: str
    data_bucket: str
    results_bucket: str
    description: str | None = None
    framework_version: str | None = None
    author_name: str | None = None
    author_email: str | None = None
    credential_keys: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def flavor(self) -> str:
        return RESOURCE_FLAVORS[self.resource]

    @property
    def image(self) -> str:
        return FRAMEWORK_IMAGES.get(self.framework_name.lower(), DEFAULT_IMAGE)


# ---------------------------------------------------------------------------- parsing


def _mapping(value: Any, key: str, *, required: bool = True) -> Mapping[str, Any] | None:
    if value is None:
        if required:
            raise ManifestError(f"manifest key {key} is missing")
        return None
    if not isinstance(value, Mapping):
        raise ManifestError(f"manifest key {key} must be a mapping, not {_kind(value)}")
    return value


def _text(parent: Mapping[str, Any], name: str, key: str, *, required: bool = True) -> str | None:
    value = parent.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ManifestError(f"manifest key {key} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ManifestError(f"manifest key {key} must be text, not {_kind(value)}")
    return str(value).strip()


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _reference(
    top: Mapping[str, Any], names: tuple[str, str], inner: str, notes: list[str]
) -> tuple[str, Mapping[str, Any]]:
    """The first entry of ``training_data_reference`` (or the variant key): its key path
    for messages and the mapping."""
    present = [name for name in names if top.get(name) is not None]
    if not present:
        raise ManifestError(f"manifest key {names[0]} is missing (or its variant {names[1]})")
    if len(present) > 1:
        raise ManifestError(f"manifest keys {names[0]} and {names[1]} are both given; keep one")
    name = present[0]
    value = top[name]
    key = name
    if isinstance(value, list):
        if not value:
            raise ManifestError(f"manifest key {name} is an empty list")
        if len(value) > 1:
            notes.append(f"{name} lists {len(value)} stores; only the first is used")
        value, key = value[0], f"{name}[0]"
    reference = _mapping(value, key)
    assert reference is not None
    if reference.get(inner) is None:
        raise ManifestError(f"manifest key {key}.{inner} is missing")
    return key, reference


def _store(reference: Mapping[str, Any], key: str, inner: str) -> str:
    """The bucket of ``{key}.{inner}`` (``source`` or ``target``), whose type must be s3."""
    place = _mapping(reference.get(inner), f"{key}.{inner}")
    assert place is not None
    kind = _text(place, "type", f"{key}.{inner}.type")
    if kind == SWIFT:
        raise ManifestError(
            f"manifest key {key}.{inner}.type is {SWIFT} (Object Storage OpenStack Swift), "
            "which OpenMaker does not read; put the data in an S3-compatible bucket and use "
            "type s3"
        )
    if kind != "s3":
        raise ManifestError(f"manifest key {key}.{inner}.type must be s3, not {kind!r}")
    bucket = _text(place, "bucket", f"{key}.{inner}.bucket")
    assert bucket is not None
    if not BUCKET.match(bucket) or ".." in bucket:
        raise ManifestError(
            f"manifest key {key}.{inner}.bucket {bucket!r} is not an S3 bucket name "
            "(3-63 lowercase letters, digits, '.' and '-')"
        )
    return bucket


def parse_manifest(data: Any) -> Manifest:
    """Validate a loaded manifest; every :class:`ManifestError` names the manifest key."""
    top = _mapping(data, "(the document)")
    assert top is not None
    definition = _mapping(top.get("model_definition"), "model_definition")
    assert definition is not None
    name = _text(definition, "name", "model_definition.name")
    description = _text(definition, "description", "model_definition.description", required=False)
    author = _mapping(definition.get("author"), "model_definition.author", required=False) or {}
    framework = _mapping(definition.get("framework"), "model_definition.framework")
    assert framework is not None
    execution = _mapping(definition.get("execution"), "model_definition.execution")
    assert execution is not None
    command = _text(execution, "command", "model_definition.execution.command")
    resource = _text(execution, "resource", "model_definition.execution.resource")
    assert name is not None and command is not None and resource is not None
    if resource not in RESOURCE_FLAVORS:
        raise ManifestError(
            f"manifest key model_definition.execution.resource must be small, medium or "
            f"large, not {resource!r}"
        )
    notes: list[str] = []
    data_key, data_ref = _reference(
        top, ("training_data_reference", "training_data"), "source", notes
    )
    results_key, results_ref = _reference(
        top, ("training_results_reference", "training_results"), "target", notes
    )
    data_bucket = _store(data_ref, data_key, "source")
    results_bucket = _store(results_ref, results_key, "target")
    credentials = tuple(
        f"{key}.connection"
        for key, ref in ((data_key, data_ref), (results_key, results_ref))
        if ref.get("connection")
    )
    return Manifest(
        name=name,
        command=command,
        resource=resource,
        framework_name=str(_text(framework, "name", "model_definition.framework.name")),
        framework_version=_text(
            framework, "version", "model_definition.framework.version", required=False
        ),
        description=description,
        author_name=_text(author, "name", "model_definition.author.name", required=False),
        author_email=_text(author, "email", "model_definition.author.email", required=False),
        data_bucket=data_bucket,
        results_bucket=results_bucket,
        credential_keys=credentials,
        notes=tuple(notes),
    )


def load_manifest(path: Path) -> Manifest:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot read the manifest {path}: {exc.strerror or exc}") from None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"the manifest {path} is not valid YAML: {exc}") from None
    return parse_manifest(data)


# ----------------------------------------------------------------------------- mapping


def entry_script(command: str) -> str:
    """``wml_entry.sh``: WML's variables, then the manifest's command as written."""
    run = command if SHELL_OPERATORS.search(command) else f"exec {command}"
    return (
        "#!/usr/bin/env bash\n"
        "# Generated by `openmaker train` from model_definition.execution.command.\n"
        "# DATA_DIR: the training data bucket, downloaded; RESULT_DIR: the folder whose files\n"
        "# become the model (uploaded to the results bucket under the training id).\n"
        'export DATA_DIR="$EM_DATASET_TRAINING_DATA"\n'
        'export RESULT_DIR="$EM_MODEL_DIR"\n'
        'mkdir -p "$RESULT_DIR"\n'
        f"{run}\n"
    )


def build_model_zip(
    model_zip: Path, command: str, *, limit: int = MAX_UPLOAD_BYTES
) -> tuple[bytes, list[str]]:
    """The model-definition zip's files plus ``wml_entry.sh``; the bytes and the names."""
    try:
        source = zipfile.ZipFile(model_zip)
    except FileNotFoundError:
        raise CliError(f"no model-definition zip at {model_zip}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise CliError(f"{model_zip} is not a zip file: {exc}") from None
    buffer = io.BytesIO()
    names: list[str] = []
    with source, zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            path = PurePosixPath(info.filename)
            if path.is_absolute() or ".." in path.parts or "\\" in info.filename:
                raise CliError(f"{model_zip} holds an unsafe path: {info.filename!r}")
            if info.is_dir() or info.filename == ENTRY_POINT:
                continue
            target.writestr(info, source.read(info), compress_type=zipfile.ZIP_DEFLATED)
            names.append(info.filename)
            if buffer.tell() > limit:
                break
        if not names:
            raise CliError(f"{model_zip} holds no files")
        script = zipfile.ZipInfo(ENTRY_POINT)
        script.external_attr = 0o100755 << 16
        target.writestr(script, entry_script(command), compress_type=zipfile.ZIP_DEFLATED)
    data = buffer.getvalue()
    if len(data) > limit:
        raise CliError(
            f"the model definition packs to more than {limit / 2**20:g} MiB, the upload "
            "limit; keep data in the training data bucket"
        )
    return data, [*names, ENTRY_POINT]


def results_uri(bucket: str, training_id: str = "{trainingId}") -> str:
    return f"s3://{bucket}/{training_id}"


def training_body(
    manifest: Manifest,
    *,
    source_uri: str,
    flavor_id: str,
    image_id: str,
    experiment: str = DEFAULT_EXPERIMENT,
) -> dict[str, Any]:
    """The ``POST /trainings`` body; built from the manifest's fields, never its credentials."""
    framework = manifest.framework_name
    if manifest.framework_version:
        framework += f" {manifest.framework_version}"
    body: dict[str, Any] = {
        "trainingName": slug(manifest.name, fallback="wml-training"),
        "experimentName": experiment,
        "imageId": image_id,
        "flavorId": flavor_id,
        "instanceCount": 1,
        "sourceDirUri": source_uri,
        "entryPoint": ENTRY_POINT,
        "datasetList": [{"datasetName": DATASET_NAME, "dataUri": f"s3://{manifest.data_bucket}"}],
        "modelUploadUri": results_uri(manifest.results_bucket) + "/model",
        "logUploadUri": results_uri(manifest.results_bucket) + "/logs",
        "tagList": [ORIGIN_TAG, {"tagKey": "framework", "tagValue": framework[:255]}],
    }
    if manifest.description:
        body["description"] = manifest.description[:DESCRIPTION_MAX]
    return body


# ------------------------------------------------------------------------------ commands


def train(
    client: Client,
    model_zip: Path,
    manifest_path: Path,
    *,
    wait: bool = False,
    flavor: str | None = None,
    image: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
) -> int:
    """``openmaker train MODEL.zip MANIFEST.yml``: like ``bx ml train``."""
    console = err_console()
    manifest = load_manifest(manifest_path)
    data, _names = build_model_zip(model_zip, manifest.command)
    print("Starting to train ...", flush=True)
    for note in manifest.notes:
        console.print(f"note: {note}", markup=False)
    if manifest.credential_keys:
        console.print(
            f"note: the credentials in {', '.join(manifest.credential_keys)} are not sent; "
            "OpenMaker reads and writes S3 with its own configured access",
            markup=False,
        )
    flavor_id = client.flavor_id(flavor or manifest.flavor)
    image_id = client.image_id(image or manifest.image)
    upload = client.upload("model-definition.zip", data)
    body = training_body(
        manifest,
        source_uri=str(upload["uri"]),
        flavor_id=flavor_id,
        image_id=image_id,
        experiment=experiment,
    )
    training = client.create_training(body)
    training_id = str(training["trainingId"])
    print(f"OK\nModel-ID is '{training_id}'", flush=True)
    print(f"Results go to {results_uri(manifest.results_bucket, training_id)}/", flush=True)
    if not wait:
        return 0
    try:
        ended = wait_for(client, training_id, is_terminal, console, "training")
    except KeyboardInterrupt:
        console.print(
            f"not waiting any more; the training goes on: "
            f"openmaker show trained-models {training_id}",
            markup=False,
        )
        return 130
    return report_end(ended, console)


def _is_wml(training: Mapping[str, Any]) -> bool:
    return any(
        t.get("tagKey") == ORIGIN_TAG["tagKey"] and t.get("tagValue") == ORIGIN_TAG["tagValue"]
        for t in training.get("tagList") or []
    )


def list_models(client: Client, *, show_all: bool = False) -> int:
    """``openmaker list trained-models``: the trainings ``train`` created (all with --all)."""
    from rich import box
    from rich.table import Table

    print("Fetching the list of trained models ...", flush=True)
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        batch = client.trainings(page=page, limit=1000)
        found += [t for t in batch if show_all or _is_wml(t)]
        if len(batch) < 1000:
            break
        page += 1
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("SI No", "Name", "guid", "status", "submitted-at"):
        table.add_column(column, no_wrap=True)
    for number, training in enumerate(found, start=1):
        table.add_row(
            str(number),
            str(training["trainingName"]),
            str(training["trainingId"]),
            str(training["trainingStatusCode"]),
            local_time(training.get("createdDatetime")),
        )
    console = out_console()
    if found:
        console.print(table)
    console.print(f"{len(found)} records found.\nOK", markup=False)
    return 0


def show_model(client: Client, training_id: str) -> int:
    """``openmaker show trained-models ID``: status, reason, times and where results are."""
    print(f"Fetching the trained model details with MODEL-ID '{training_id}' ...", flush=True)
    training = client.training(training_id)
    model_uri = training.get("modelUploadUri")
    log_uri = training.get("logUploadUri")
    rows = [
        ("ModelId", training["trainingId"]),
        ("Name", training["trainingName"]),
        ("State", training["trainingStatusCode"]),
        ("Reason", training.get("statusReason") or "-"),
        ("Experiment", (training.get("experiment") or {}).get("experimentName") or "-"),
        ("Submitted_at", local_time(training.get("createdDatetime"))),
        ("Started_at", local_time(training.get("startedDatetime"))),
        ("Ended_at", local_time(training.get("endedDatetime"))),
        ("Elapsed", duration(training.get("elapsedTimeSeconds"))),
        ("Model", model_uri or "-"),
        ("Log", f"{log_uri.rstrip('/')}/training.log" if log_uri else "-"),
    ]
    for key, value in rows:
        print(f"{key:<14} {value}")
    print("OK", flush=True)
    return 0


def delete_model(client: Client, training_id: str) -> int:
    """``openmaker delete trained-models ID`` (the results in the bucket stay)."""
    print(f"Deleting the trained model '{training_id}' ...", flush=True)
    client.delete_training(training_id)
    print("OK\nDelete trained-models successful", flush=True)
    return 0
