"""The app in-process: requests go through the WSGI adapter into the Chalice app."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from chalicelib.services import auth
from chalicelib.store.db import Database, get_database
from openmaker.server import ChaliceWSGI


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def header(self) -> dict[str, Any]:
        return dict(self.body.get("header", {}))


class ApiClient:
    """A tiny HTTP-shaped client over the WSGI app, bound to one appkey and token."""

    def __init__(self, wsgi: ChaliceWSGI, appkey: str, token: str | None) -> None:
        self.wsgi = wsgi
        self.appkey = appkey
        self.token = token

    def url(self, path: str) -> str:
        return f"/v1.0/appkeys/{self.appkey}{path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        raw: bytes | None = None,
        query: dict[str, Any] | list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        absolute: bool = False,
    ) -> Reply:
        body = (
            raw
            if raw is not None
            else (json.dumps(json_body).encode() if json_body is not None else b"")
        )
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path if absolute else self.url(path),
            "QUERY_STRING": urlencode(query, doseq=True) if query else "",
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/json",
            "wsgi.input": io.BytesIO(body),
            "REMOTE_ADDR": "127.0.0.1",
        }
        all_headers = dict(headers or {})
        if self.token is not None:
            all_headers.setdefault("x-nhn-authorization", f"Bearer {self.token}")
        for key, value in all_headers.items():
            environ["HTTP_" + key.upper().replace("-", "_")] = value
        status, reply_headers, data = self.wsgi.handle(environ)
        return Reply(status, json.loads(data) if data else {}, reply_headers)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, json_body=body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("PUT", path, json_body=body, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)


@pytest.fixture(scope="session")
def wsgi() -> ChaliceWSGI:
    from app import app

    return ChaliceWSGI(app)


@pytest.fixture
def db(openmaker_home: Path) -> Database:
    return get_database()


def new_tenant(database: Database, name: str = "tenant") -> tuple[str, str]:
    appkey = auth.create_project(database, name=name)
    return appkey, auth.create_token(database, appkey)


@pytest.fixture
def api(wsgi: ChaliceWSGI, db: Database) -> Iterator[ApiClient]:
    """A client for a fresh tenant on a fresh SQLite database."""
    appkey, token = new_tenant(db, "alice")
    yield ApiClient(wsgi, appkey, token)


@pytest.fixture
def other_api(wsgi: ChaliceWSGI, db: Database) -> ApiClient:
    """A second tenant on the same database."""
    appkey, token = new_tenant(db, "bob")
    return ApiClient(wsgi, appkey, token)


# --- helpers shared by the bad-input, tenancy, idempotency and catalog suites -------------

TableSnapshot = dict[str, list[tuple[str, ...]]]


def snapshot_tables(database: Database) -> TableSnapshot:
    """Every table of the metadata store, its rows as sorted tuples (values by ``repr``)."""
    from sqlalchemy import select

    from chalicelib.store.models import Base

    with database.engine.connect() as connection:
        return {
            table.name: sorted(
                tuple(repr(value) for value in row) for row in connection.execute(select(table))
            )
            for table in Base.metadata.sorted_tables
        }


def assert_error(
    reply: Reply,
    status: int,
    result_code: int,
    *,
    field: str | None = None,
    rule: str | None = None,
) -> None:
    """``reply`` is an error envelope with this status and code, naming ``field``/``rule``."""
    assert reply.status == status, reply.body
    header = reply.header
    assert header["isSuccessful"] is False, reply.body
    assert header["resultCode"] == result_code, reply.body
    assert isinstance(header["resultMessage"], str) and header["resultMessage"], reply.body
    if field is not None:
        named = [(e["field"], e["rule"]) for e in header.get("errors", [])]
        assert any(f == field and (rule is None or r == rule) for f, r in named), named


@dataclass(frozen=True)
class TrainingCatalog:
    """Catalog ids a training-shaped body needs, looked up through the API like the SDK does."""

    cpu_image_id: str
    gpu_image_id: str
    notebook_image_id: str
    cpu_flavor_id: str
    gpu_flavor_id: str
    algorithm_id: str
    algorithm_image_id: str

    def own_code_body(self, name: str, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "trainingTemplateName": name,
            "imageId": self.cpu_image_id,
            "flavorId": self.cpu_flavor_id,
            "sourceDirUri": "file:///srv/code/mnist",
            "entryPoint": "train.py",
            "modelUploadUri": "file:///srv/models/mnist",
        }
        body.update(overrides)
        return body

    def algorithm_body(self, name: str, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "trainingTemplateName": name,
            "algorithmId": self.algorithm_id,
            "imageId": self.algorithm_image_id,
            "flavorId": self.cpu_flavor_id,
            "hyperparameterList": [{"parameterName": "n_estimators", "parameterValue": "50"}],
            "datasetList": [{"datasetName": "train", "dataUri": "file:///srv/data/train.csv"}],
            "modelUploadUri": "file:///srv/models/forest",
        }
        body.update(overrides)
        return body


def pick_training_catalog(client: ApiClient) -> TrainingCatalog:
    training = client.get("/images", query={"groupTypeCodeList": "TRAINING"}).body["imageList"]
    notebook = client.get("/images", query={"groupTypeCodeList": "NOTEBOOK"}).body["imageList"]
    flavors = client.get("/flavors", query={"groupType": "TRAINING"}).body["flavorList"]
    algorithms = client.get("/algorithms").body["algorithmList"]
    algorithm = next(a for a in algorithms if a["algorithmName"] == "sklearn_classifier")
    return TrainingCatalog(
        cpu_image_id=next(i["imageId"] for i in training if i["coreTypeCode"] == "CPU"),
        gpu_image_id=next(i["imageId"] for i in training if i["coreTypeCode"] == "GPU"),
        notebook_image_id=next(i["imageId"] for i in notebook if i["coreTypeCode"] == "CPU"),
        cpu_flavor_id=next(f["id"] for f in flavors if not f["gpuFlavor"]),
        gpu_flavor_id=next(f["id"] for f in flavors if f["gpuFlavor"]),
        algorithm_id=algorithm["algorithmId"],
        algorithm_image_id=algorithm["cpuTrainingImageId"],
    )


@pytest.fixture
def catalog(api: ApiClient) -> TrainingCatalog:
    return pick_training_catalog(api)
