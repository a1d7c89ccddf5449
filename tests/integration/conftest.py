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
