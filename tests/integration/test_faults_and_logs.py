from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from chalicelib.observability import logger
from chalicelib.services.experiments import ExperimentService
from tests.integration.conftest import ApiClient


@pytest.fixture
def log_output(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", stream)
    yield stream


def _explode(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("disk on fire")


def test_an_unexpected_exception_is_a_500_with_a_request_id_and_a_logged_stack(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch, log_output: io.StringIO
) -> None:
    monkeypatch.setattr(ExperimentService, "get", _explode)
    reply = api.get("/experiments/some-id")
    assert reply.status == 500
    header = reply.header
    assert header["isSuccessful"] is False
    assert header["resultCode"] == 50000
    request_id = header["requestId"]
    assert request_id in header["resultMessage"]
    assert "disk on fire" not in json.dumps(reply.body)

    logged = [json.loads(line) for line in log_output.getvalue().splitlines() if line.strip()]
    errors = [entry for entry in logged if entry.get("level") == "ERROR"]
    assert errors, logged
    assert errors[-1]["request_id"] == request_id
    assert errors[-1]["appkey"] == api.appkey
    assert "disk on fire" in errors[-1]["exception"]
    assert "Traceback" in errors[-1]["exception"]


def test_logs_never_contain_the_access_token(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch, log_output: io.StringIO
) -> None:
    monkeypatch.setattr(ExperimentService, "get", _explode)
    api.get("/experiments/some-id")
    api.post("/experiments", {"experimentName": "x" * 80})
    assert api.token is not None
    assert api.token not in log_output.getvalue()
