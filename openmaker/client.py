"""A small REST client of the OpenMaker API for the CLI (standard library only).

Connection settings, first found wins:

* the URL: ``--url``, else ``$OPENMAKER_URL``, else ``http://127.0.0.1:10090``;
* the appkey and token: ``$OPENMAKER_APPKEY`` and ``$OPENMAKER_TOKEN``, else
  ``$OPENMAKER_HOME/credentials.json`` (``~/.openmaker`` by default), which ``openmaker up``
  writes on its first start.

Every response is the EasyMaker envelope; a reply whose ``header.isSuccessful`` is false
raises :class:`ApiError` with the API's ``resultMessage``. The token travels only in the
``x-nhn-authorization`` header and is never part of a message.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:10090"
DEFAULT_TIMEOUT_S = 30.0


class CliError(Exception):
    """A problem the CLI explains in one line (``error: ...``) and exits 1 for."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(CliError):
    """The API answered with ``isSuccessful: false`` (or not with an envelope at all)."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def openmaker_home() -> Path:
    return Path(os.environ.get("OPENMAKER_HOME") or Path.home() / ".openmaker")


@dataclass(frozen=True)
class Connection:
    url: str
    appkey: str
    token: str

    def __repr__(self) -> str:  # never show the token, even in a traceback
        return f"Connection(url={self.url!r}, appkey={self.appkey!r}, token='***')"


def resolve_connection(url: str | None = None) -> Connection:
    """The URL, appkey and token from the flag, the environment or ``credentials.json``."""
    base = (url or os.environ.get("OPENMAKER_URL") or DEFAULT_URL).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise CliError(f"the OpenMaker URL must start with http:// or https://, not {base!r}")
    appkey = os.environ.get("OPENMAKER_APPKEY", "").strip()
    token = os.environ.get("OPENMAKER_TOKEN", "").strip()
    if appkey and token:
        return Connection(base, appkey, token)
    path = openmaker_home() / "credentials.json"
    hint = (
        f"set OPENMAKER_APPKEY and OPENMAKER_TOKEN, or run `openmaker up` once (it writes {path})"
    )
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"no credentials: {hint}") from None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc.__class__.__name__}; {hint}") from None
    if not isinstance(saved, dict) or not saved.get("appkey") or not saved.get("token"):
        raise CliError(f"{path} has no appkey and token; {hint}")
    return Connection(base, appkey or str(saved["appkey"]), token or str(saved["token"]))


def _query_string(query: dict[str, Any] | None) -> str:
    if not query:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        pairs.append((key, str(value)))
    return "?" + urllib.parse.urlencode(pairs) if pairs else ""


class Client:
    """``client.get("/trainings")`` calls ``{url}/v1.0/appkeys/{appkey}/trainings``."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.base = f"{connection.url}/v1.0/appkeys/{urllib.parse.quote(connection.appkey)}"

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        data: bytes | None = None,
        content_type: str = "application/json",
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> dict[str, Any]:
        """One call; the decoded envelope on success, :class:`ApiError` otherwise."""
        url = self.base + path + _query_string(query)
        payload = data if data is not None else (json.dumps(body).encode() if body else None)
        headers = {
            "x-nhn-authorization": f"Bearer {self.connection.token}",
            "Accept": "application/json",
        }
        if payload is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=payload, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(
                f"cannot reach OpenMaker at {self.connection.url} ({reason}); "
                "is `openmaker up` running there? (--url or OPENMAKER_URL)"
            ) from None
        return _decode(method, path, status, raw)

    def get(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.request("DELETE", path, **kwargs)

    # -- the calls the CLI makes ------------------------------------------------------------

    def upload(self, file_name: str, data: bytes) -> dict[str, Any]:
        """``POST /uploads``: the ``upload`` object, whose ``uri`` trainings accept."""
        reply = self.post(
            "/uploads",
            query={"fileName": file_name},
            data=data,
            content_type="application/zip",
            timeout=600,
        )
        return dict(reply["upload"])

    def create_training(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.post("/trainings", body=body)["training"])

    def training(self, training_id: str) -> dict[str, Any]:
        return dict(self.get(f"/trainings/{_segment(training_id)}")["training"])

    def trainings(self, **query: Any) -> list[dict[str, Any]]:
        return list(self.get("/trainings", query=query)["trainingList"])

    def stop_training(self, training_id: str) -> dict[str, Any]:
        return dict(self.put(f"/trainings/{_segment(training_id)}/stop")["training"])

    def delete_training(self, training_id: str) -> None:
        self.delete(f"/trainings/{_segment(training_id)}")

    def training_log(
        self,
        training_id: str,
        *,
        cursor: str | None = None,
        follow: bool = False,
        wait_seconds: float = 10.0,
        limit: int = 1000,
    ) -> dict[str, Any]:
        """One ``GET /trainings/{id}/logs`` answer: ``logList``, ``nextCursor``, status."""
        query: dict[str, Any] = {"cursor": cursor, "limit": limit}
        if follow:
            query.update(follow=True, waitSeconds=wait_seconds)
        reply = self.get(
            f"/trainings/{_segment(training_id)}/logs",
            query=query,
            timeout=DEFAULT_TIMEOUT_S + (wait_seconds if follow else 0),
        )
        return dict(reply["trainingLog"])

    def flavors(self) -> list[dict[str, Any]]:
        return list(self.get("/flavors", query={"groupType": "TRAINING"})["flavorList"])

    def images(self) -> list[dict[str, Any]]:
        return list(self.get("/images", query={"groupTypeCodeList": "TRAINING"})["imageList"])

    def flavor_id(self, name_or_id: str) -> str:
        """The id of the training flavor named (or with the id) ``name_or_id``."""
        flavors = self.flavors()
        for flavor in flavors:
            if name_or_id in (flavor["id"], flavor["name"]):
                return str(flavor["id"])
        names = ", ".join(str(f["name"]) for f in flavors)
        raise CliError(f"no training flavor {name_or_id!r}; choose one of: {names}")

    def image_id(self, name_or_id: str) -> str:
        """The id of the training image named (or with the id) ``name_or_id``."""
        images = self.images()
        wanted = name_or_id.casefold()
        for image in images:
            if wanted in (str(image["imageId"]).casefold(), str(image["imageName"]).casefold()):
                return str(image["imageId"])
        names = ", ".join(repr(str(i["imageName"])) for i in images)
        raise CliError(f"no training image {name_or_id!r}; choose one of: {names}")


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _decode(method: str, path: str, status: int, raw: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(raw) if raw else {}
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        snippet = raw[:200].decode(errors="replace").strip()
        raise ApiError(
            f"{method} {path}: HTTP {status} without the API's envelope: {snippet!r}",
            status=status,
        )
    header = reply.get("header") if isinstance(reply.get("header"), dict) else {}
    assert isinstance(header, dict)
    successful = header.get("isSuccessful")
    if successful is True and status < 400:
        return reply
    message = str(header.get("resultMessage") or f"HTTP {status}")
    code = header.get("resultCode")
    raise ApiError(message, status=status, code=code if isinstance(code, int) else None)
