from __future__ import annotations

from tests.integration.conftest import ApiClient


def test_an_experiment_is_created_active_and_listed_by_name(api: ApiClient) -> None:
    created = api.post("/experiments", {"experimentName": "mnist", "description": "d"})
    assert created.status == 201, created.body
    experiment = created.body["experiment"]
    assert experiment["experimentStatusCode"] == "ACTIVE"
    assert created.header == {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"}

    listed = api.get("/experiments", query={"experimentNameList": "mnist"})
    assert [e["experimentId"] for e in listed.body["experimentList"]] == [
        experiment["experimentId"]
    ]
    assert listed.body["paging"]["totalCount"] == 1

    fetched = api.get(f"/experiments/{experiment['experimentId']}")
    assert fetched.body["experiment"]["experimentName"] == "mnist"


def test_a_second_experiment_with_the_same_name_is_a_conflict(api: ApiClient) -> None:
    assert api.post("/experiments", {"experimentName": "dup"}).status == 201
    again = api.post("/experiments", {"experimentName": "dup"})
    assert again.status == 409
    assert again.header["isSuccessful"] is False
    assert "already exists" in again.header["resultMessage"]


def test_deleting_an_experiment_removes_it(api: ApiClient) -> None:
    experiment_id = api.post("/experiments", {"experimentName": "gone"}).body["experiment"][
        "experimentId"
    ]
    assert api.delete(f"/experiments/{experiment_id}").status == 200
    assert api.get(f"/experiments/{experiment_id}").status == 404
