"""Experiments through the unmodified ``easymaker`` SDK, against the running platform."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from easymaker.common import exceptions
from easymaker.common.base_model import easymaker_base_model

from tests.e2e.conftest import RunningPlatform

SUCCESS = {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"}


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class _NoSleep:
    """Stands in for the ``time`` module the SDK's ``wait()`` polls with."""

    @staticmethod
    def sleep(seconds: float) -> None:
        raise AssertionError(f"the SDK waited {seconds} s: the experiment was not ACTIVE")


@pytest.fixture
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(easymaker_base_model, "time", _NoSleep)


def test_create_returns_an_active_experiment_without_waiting(sdk: Any, no_waiting: None) -> None:
    name = unique_name("sdk-create")

    experiment = sdk.Experiment().create(experiment_name=name, description="first", wait=True)

    assert experiment.experiment_status_code == "ACTIVE"
    assert experiment.experiment_id
    assert experiment.id == experiment.experiment_id
    assert experiment.experiment_name == name
    assert experiment.description == "first"


def test_creating_the_same_name_again_returns_the_existing_experiment(
    sdk: Any, no_waiting: None
) -> None:
    name = unique_name("sdk-dup")
    first = sdk.Experiment().create(experiment_name=name, wait=True)

    second = sdk.Experiment().create(experiment_name=name, description="ignored", wait=True)

    assert second.experiment_id == first.experiment_id
    assert len(sdk.Experiment.get_list(name_list=[name])) == 1


def test_an_experiment_is_found_by_list_name_id_and_lazy_fetch(sdk: Any) -> None:
    name = unique_name("sdk-find")
    created = sdk.Experiment().create(experiment_name=name, description="findable", wait=False)

    listed = sdk.Experiment.get_list()
    by_name = sdk.Experiment.get_by_name(name)
    by_id = sdk.Experiment.get_by_id(created.experiment_id)
    fetched = sdk.Experiment(created.experiment_id)

    assert created.experiment_id in [e.experiment_id for e in listed]
    assert all(isinstance(e, sdk.Experiment) for e in listed)
    assert by_name.experiment_id == created.experiment_id
    assert by_id.experiment_name == name
    assert by_id.experiment_status_code == "ACTIVE"
    assert by_id.app_key == sdk.easymaker_config.appkey
    assert by_id.created_datetime
    assert fetched.experiment_name == name
    assert fetched.description == "findable"


def test_a_deleted_experiment_is_an_sdk_error(sdk: Any) -> None:
    experiment = sdk.Experiment().create(experiment_name=unique_name("sdk-gone"), wait=True)
    experiment_id = experiment.experiment_id

    experiment.delete()

    assert experiment.experiment_id is None
    with pytest.raises(exceptions.EasyMakerError) as raised:
        sdk.Experiment.get_by_id(experiment_id)
    (response,) = raised.value.args
    assert response["header"]["isSuccessful"] is False
    assert response["header"]["resultCode"] != 0
    assert response["header"]["resultMessage"]


def test_get_by_name_of_a_missing_experiment_is_a_value_error(sdk: Any) -> None:
    with pytest.raises(ValueError, match="No Experiment found"):
        sdk.Experiment.get_by_name(unique_name("sdk-missing"))


def test_experiment_responses_use_the_easymaker_envelope(platform: RunningPlatform) -> None:
    url = f"{platform.api_url}/experiments"
    name = unique_name("raw")
    headers = platform.auth_headers

    created = requests.post(url, json={"experimentName": name}, headers=headers, timeout=10)
    listed = requests.get(url, params={"experimentNameList": name}, headers=headers, timeout=10)
    experiment_id = created.json()["experiment"]["experimentId"]
    fetched = requests.get(f"{url}/{experiment_id}", headers=headers, timeout=10)
    deleted = requests.delete(f"{url}/{experiment_id}", headers=headers, timeout=10)
    missing = requests.get(f"{url}/{experiment_id}", headers=headers, timeout=10)

    assert created.status_code == 201
    assert created.headers["Content-Type"].startswith("application/json")
    assert created.json()["header"] == SUCCESS
    assert created.json()["experiment"]["experimentStatusCode"] == "ACTIVE"
    assert listed.status_code == 200
    assert listed.json()["header"] == SUCCESS
    assert [e["experimentId"] for e in listed.json()["experimentList"]] == [experiment_id]
    assert listed.json()["paging"]["totalCount"] == 1
    assert fetched.json() == {"header": SUCCESS, "experiment": fetched.json()["experiment"]}
    assert fetched.json()["experiment"]["experimentName"] == name
    assert deleted.status_code == 200
    assert deleted.json() == {"header": SUCCESS}
    assert missing.status_code == 404
    assert missing.json()["header"]["isSuccessful"] is False
    assert missing.json()["header"]["resultCode"] > 0


def test_requests_without_a_valid_token_are_refused_in_the_envelope(
    platform: RunningPlatform,
) -> None:
    url = f"{platform.api_url}/experiments"

    anonymous = requests.get(url, timeout=10)
    wrong = requests.get(url, headers={"x-nhn-authorization": "Bearer nope"}, timeout=10)
    easymaker_header = requests.get(url, headers={"X-EasyMaker-Token": platform.token}, timeout=10)

    assert anonymous.status_code == 401
    assert anonymous.json()["header"]["isSuccessful"] is False
    assert wrong.status_code in (401, 403)
    assert wrong.json()["header"]["isSuccessful"] is False
    assert easymaker_header.status_code == 200
    assert easymaker_header.json()["header"] == SUCCESS


def test_a_chunked_request_body_is_read_like_a_sized_one(platform: RunningPlatform) -> None:
    name = unique_name("chunked")

    def chunks() -> Iterator[bytes]:
        yield b'{"experimentName": '
        yield f'"{name}"}}'.encode()

    created = requests.post(
        f"{platform.api_url}/experiments",
        data=chunks(),
        headers={**platform.auth_headers, "Content-Type": "application/json"},
        timeout=10,
    )

    assert created.request.headers.get("Transfer-Encoding") == "chunked"
    assert created.status_code == 201, created.text
    assert created.json()["experiment"]["experimentName"] == name


def test_an_unsupported_method_is_a_405_envelope_naming_the_allowed_ones(
    platform: RunningPlatform,
) -> None:
    reply = requests.patch(
        f"{platform.api_url}/experiments", headers=platform.auth_headers, timeout=10
    )

    assert reply.status_code == 405
    assert reply.headers["Allow"] == "GET, POST"
    assert reply.json()["header"]["isSuccessful"] is False
    assert "GET, POST" in reply.json()["header"]["resultMessage"]
