"""``/openapi.json`` describes every route, and fuzzing every operation it lists finds no 5xx.

The fuzzer gets its own platform (fuzzing creates and deletes arbitrary resources); the
document checks run against the same process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import requests
from schemathesis.specs.openapi.definitions import OPENAPI_31

from tests.e2e.conftest import RunningPlatform, start_platform, stop_platform

FUZZ_SEED = 20240601
FUZZ_MAX_EXAMPLES = 25
FUZZ_TIMEOUT_S = 150
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
REQUIRED_SCHEMAS = {
    "Header",
    "Error",
    "Paging",
    "Experiment",
    "ExperimentCreate",
    "ExperimentUpdate",
    "Flavor",
    "Image",
    "Algorithm",
}


@pytest.fixture(scope="module")
def fuzz_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path_factory.mktemp("fuzz") / "openmaker-home")
    yield running
    code = stop_platform(running)
    assert code == 0, f"openmaker up did not stop cleanly ({code}):\n{running.output()}"


@pytest.fixture(scope="module")
def document(fuzz_platform: RunningPlatform) -> dict[str, Any]:
    response = requests.get(f"{fuzz_platform.base_url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_the_document_is_a_valid_openapi_3_1_document(document: dict[str, Any]) -> None:
    validator = jsonschema_rs.Draft202012Validator(OPENAPI_31)

    errors = [error.message for error in validator.iter_errors(document)]

    assert document["openapi"].startswith("3.1.")
    assert errors == []
    for name, schema in document["components"]["schemas"].items():
        draft = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        assert jsonschema_rs.meta.is_valid(draft), f"components.schemas.{name} is not a schema"


def test_every_route_of_the_app_is_documented_with_each_method(document: dict[str, Any]) -> None:
    from app import app

    documented = {(path, method.upper()) for path, method, _ in operations(document)}
    routed = {(path, method) for path, entries in app.routes.items() for method in entries}

    assert routed - documented == set()
    assert documented - routed == set()


def test_every_operation_has_an_id_responses_and_declared_path_parameters(
    document: dict[str, Any],
) -> None:
    ids = [operation.get("operationId") for _, _, operation in operations(document)]

    assert all(ids)
    assert len(ids) == len(set(ids)), "operationId values must be unique"
    for path, method, operation in operations(document):
        where = f"{method.upper()} {path}"
        assert operation.get("responses"), where
        assert any(status.startswith("2") for status in operation["responses"]), where
        in_path = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        templated = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        assert in_path == templated, where


def test_request_and_response_models_are_components_and_every_ref_resolves(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    prefix = "#/components/schemas/"

    assert set(schemas) >= REQUIRED_SCHEMAS
    for ref in refs(document):
        assert ref.startswith(prefix) and ref[len(prefix) :] in schemas, ref
    for path, method, operation in operations(document):
        if method in ("post", "put") and "requestBody" in operation:
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            assert "$ref" in body, f"{method.upper()} {path} body is not a component"
    assert set(document["components"]["securitySchemes"]) == {"nhnBearer", "easymakerToken"}


def schemathesis_command(platform: RunningPlatform, config_file: Path) -> list[str]:
    """The CLI call; ``path.appkey`` is pinned to the real appkey by the config file."""
    executable = Path(sys.executable).with_name("schemathesis")
    return [
        str(executable) if executable.exists() else str(shutil.which("schemathesis")),
        "--config-file",
        str(config_file),
        "run",
        f"{platform.base_url}/openapi.json",
        "--header",
        f"x-nhn-authorization: Bearer {platform.token}",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--max-examples",
        str(FUZZ_MAX_EXAMPLES),
        "--seed",
        str(FUZZ_SEED),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
    ]


def test_fuzzing_every_operation_finds_no_server_error(
    fuzz_platform: RunningPlatform, tmp_path: Path
) -> None:
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(f'[parameters]\n"path.appkey" = "{fuzz_platform.appkey}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}

    result = subprocess.run(
        schemathesis_command(fuzz_platform, config_file),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=FUZZ_TIMEOUT_S,
        check=False,
    )

    report = result.stdout[-12_000:] + result.stderr[-4_000:]
    server = fuzz_platform.output()
    assert result.returncode == 0, f"{report}\n--- server output ---\n{server[-8_000:]}"
    assert "unhandled error" not in server, server[-8_000:]
    assert fuzz_platform.process.poll() is None, "the platform died while being fuzzed"
