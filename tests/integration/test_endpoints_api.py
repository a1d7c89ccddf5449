"""/endpoints, /endpoint-stages and /endpoint-models over the in-process app with a fake Ray:
create with the default stage (its deploy job dispatched after the commit), the deployer's
internal API (deployment, reports), the gateway's routes, bad input, deletion rules."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from chalicelib import errors
from chalicelib.dispatch.base import JobState
from chalicelib.dispatch.fake import FakeBackend
from chalicelib.domain.latency import BOUNDS_MS, bucket_of
from chalicelib.services import endpoints, runner_auth
from chalicelib.services import models as model_service
from chalicelib.store.db import Database
from tests.integration import trainings_fixtures
from tests.integration.conftest import ApiClient, Reply, assert_error, snapshot_tables
from tests.integration.test_models_api import artifact
from tests.integration.trainings_fixtures import flavor

file_root = trainings_fixtures.file_root
use_backend = trainings_fixtures.use_backend
ray = trainings_fixtures.ray

VALIDATION = errors.ValidationError.result_code
DEPENDENT = errors.DependentResourceError.result_code
NOT_FOUND = errors.NotFoundError.result_code


def active_model(api: ApiClient, db: Database, root: Path, name: str, **extra: Any) -> str:
    reply = api.post(
        "/models",
        {
            "modelName": name,
            "modelFormatCode": "SKLEARN",
            "modelUploadUri": artifact(root, f"models/{name}"),
            **extra,
        },
    )
    assert reply.status == 201, reply.body
    model_service.reconcile(db)
    model_id: str = reply.body["model"]["modelId"]
    return model_id


def body(model_id: str, **overrides: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "endpointName": "iris",
        "flavorId": flavor("m2.c2m4").id,
        "nodeCount": 1,
        "endpointModelResourceList": [
            {"modelId": model_id, "resourceOptionDetail": {"cpu": "500m", "memory": "1Gi"}}
        ],
    }
    found.update(overrides)
    return found


def internal(api: ApiClient, method: str, path: str, kind: str, ident: str, **kw: Any) -> Reply:
    headers = {runner_auth.HEADER: runner_auth.job_token(kind, ident)}
    return api.request(method, path, headers=headers, absolute=True, **kw)


def stage_report(api: ApiClient, stage_id: str, **report: Any) -> Reply:
    return internal(
        api,
        "POST",
        f"/internal/v1/endpoint-stages/{stage_id}/status",
        "endpoint-stage",
        stage_id,
        json_body=report,
    )


def routes(api: ApiClient) -> dict[str, Any]:
    reply = internal(api, "GET", "/internal/v1/gateway/routes", "gateway", "routes")
    assert reply.status == 200, reply.body
    found: dict[str, Any] = reply.body["routes"]
    return found


def test_an_endpoint_is_created_with_its_default_stage_deployed_by_a_ray_job(
    api: ApiClient, db: Database, file_root: Path, ray: FakeBackend
) -> None:
    model_id = active_model(
        api,
        db,
        file_root,
        "iris",
        parameterList=[{"parameterName": "hf_token", "parameterValue": "s3cr3t"}],
    )
    created = api.post("/endpoints", body(model_id))
    assert created.status == 201, created.body
    endpoint = created.body["endpoint"]
    stage = endpoint["defaultStage"]
    stage_id = stage["endpointStageId"]

    assert endpoint["endpointStatusCode"] == "CREATE_REQUESTED"
    assert stage["isDefaultStage"] is True and stage["endpointStageName"] == "default"
    assert stage["apigwStageUrl"].endswith(f"/{endpoint['endpointId']}")  # the default's URL
    (resource,) = stage["endpointModelList"]
    assert resource["modelId"] == model_id and resource["podCount"] == 1
    assert resource["model"]["modelName"] == "iris"
    job = ray.jobs[f"deploy-{stage_id}"]
    assert job.entrypoint.endswith(f"-m serving.deploy stage {stage_id}")
    assert "s3cr3t" not in str(job)  # credentials travel only through the deployment call

    plan = internal(
        api,
        "GET",
        f"/internal/v1/endpoint-stages/{stage_id}/deployment",
        "endpoint-stage",
        stage_id,
    )
    assert plan.status == 200, plan.body
    (model,) = plan.body["deployment"]["models"]
    assert model["name"] == "iris" and model["framework"] == "SKLEARN"
    assert model["cpus"] == 0.5 and model["memoryBytes"] == 2**30
    assert model["parameters"] == [["hf_token", "s3cr3t"]]
    assert plan.body["deployment"]["nodes"] == {
        "count": 1,
        "flavor": {"cpus": 2.0, "memoryBytes": 4096.0 * 2**20, "gpus": 0.0},
        "autoscale": None,
    }
    forged = internal(
        api, "GET", f"/internal/v1/endpoint-stages/{stage_id}/deployment", "training", stage_id
    )
    assert forged.status == 401
    assert routes(api) == {"stages": {}}

    reported = stage_report(
        api, stage_id, status="ACTIVE", routes={"iris": ["http://10.0.0.5:8080"]}
    )

    assert reported.status == 200, reported.body
    view = api.get(f"/endpoints/{endpoint['endpointId']}").body["endpoint"]
    assert view["endpointStatusCode"] == "ACTIVE"
    assert view["defaultStage"]["endpointStageStatusCode"] == "ACTIVE"
    assert view["defaultStage"]["endpointModelList"][0]["runningPodCount"] == 1
    table = {
        "models": {"iris": ["http://10.0.0.5:8080"]},
        "stageId": stage_id,
        "endpointId": endpoint["endpointId"],
        "logPrefix": None,  # created without useLog: the gateway logs no call
    }
    assert routes(api) == {"stages": {stage_id: table, endpoint["endpointId"]: table}}
    listed = api.get("/endpoint-models", query={"endpointStageId": stage_id}).body
    assert [m["endpointModelStatusCode"] for m in listed["endpointModelList"]] == ["ACTIVE"]
    assert_error(api.delete(f"/models/{model_id}"), 409, DEPENDENT)


def test_a_failed_deployment_fails_the_endpoint_and_the_stage_with_the_reason(
    api: ApiClient, db: Database, file_root: Path, ray: FakeBackend
) -> None:
    model_id = active_model(api, db, file_root, "broken")
    endpoint = api.post("/endpoints", body(model_id, endpointName="broken")).body["endpoint"]
    stage_id = endpoint["defaultStage"]["endpointStageId"]

    assert stage_report(api, stage_id, status="CREATE_FAILED", reason="pod x: no").status == 200

    view = api.get(f"/endpoints/{endpoint['endpointId']}").body["endpoint"]
    assert view["endpointStatusCode"] == "CREATE_FAILED" and view["statusReason"] == "pod x: no"
    assert routes(api) == {"stages": {}}
    assert api.delete(f"/endpoints/{endpoint['endpointId']}").status == 200
    assert any(key.startswith(f"teardown-{stage_id}") for key in ray.jobs)
    assert api.delete(f"/models/{model_id}").status == 200  # nothing uses it any more


def test_stages_are_added_to_active_endpoints_and_deleted_but_never_the_default(
    api: ApiClient, db: Database, file_root: Path, ray: FakeBackend
) -> None:
    model_id = active_model(api, db, file_root, "staged")
    endpoint = api.post("/endpoints", body(model_id, endpointName="staged")).body["endpoint"]
    endpoint_id, default_id = endpoint["endpointId"], endpoint["defaultStage"]["endpointStageId"]
    stage_body = {
        "endpointId": endpoint_id,
        "apigwStageName": "canary",
        "flavorId": flavor("m2.c2m4").id,
        "nodeCount": 1,
        "endpointModelResourceList": [{"modelId": model_id}],
    }
    assert_error(api.post("/endpoint-stages", stage_body), 409, DEPENDENT)  # not ACTIVE yet
    stage_report(api, default_id, status="ACTIVE", routes={"staged": ["http://p:1"]})

    added = api.post("/endpoint-stages", stage_body)

    assert added.status == 201, added.body
    canary = added.body["endpointStage"]["endpointStageId"]
    assert f"deploy-{canary}" in ray.jobs
    listed = api.get("/endpoint-stages", query={"endpointId": endpoint_id}).body
    assert [s["endpointStageName"] for s in listed["endpointStageList"]] == ["default", "canary"]
    assert_error(api.delete(f"/endpoint-stages/{default_id}"), 409, DEPENDENT)
    assert_error(api.delete(f"/endpoint-stages/{canary}"), 409, DEPENDENT)  # still deploying
    stage_report(api, canary, status="ACTIVE", routes={"staged": ["http://q:1"]})
    assert_error(api.delete(f"/endpoints/{endpoint_id}"), 409, DEPENDENT)  # canary left
    assert api.delete(f"/endpoint-stages/{canary}").status == 200
    assert sorted(routes(api)["stages"]) == sorted([default_id, endpoint_id])
    assert api.delete(f"/endpoints/{endpoint_id}").status == 200
    assert_error(api.get(f"/endpoints/{endpoint_id}"), 404, NOT_FOUND)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"flavorId": "no-such-flavor"}, "flavorId"),
        ({"endpointModelResourceList": []}, "endpointModelResourceList"),
        (
            {"endpointModelResourceList": [{"modelId": "00000000-0000-0000-0000-000000000000"}]},
            "endpointModelResourceList.0.modelId",
        ),
        (
            {
                "endpointModelResourceList": [
                    {"modelId": "@", "resourceOptionDetail": {"cpu": "9"}}
                ]
            },
            "endpointModelResourceList.0.resourceOptionDetail.cpu",
        ),
        (
            {
                "endpointModelResourceList": [
                    {"modelId": "@", "resourceOptionDetail": {"memory": "64Gi"}}
                ]
            },
            "endpointModelResourceList.0.resourceOptionDetail.memory",
        ),
        (
            {
                "endpointModelResourceList": [
                    {"modelId": "@", "resourceOptionDetail": {"cpu": "x"}}
                ]
            },
            "endpointModelResourceList.0.resourceOptionDetail.cpu",
        ),
        (
            {"endpointModelResourceList": [{"modelId": "@", "podCount": 5}]},
            "endpointModelResourceList",
        ),
        ({"endpointModelResourceList": [{"modelId": "@"}, {"modelId": "@"}]}, None),
        ({"endpointName": "no spaces"}, "endpointName"),
        (
            {"endpointModelResourceList": [{"modelId": "@", "podAutoScaleEnable": True}]},
            "endpointModelResourceList.0",
        ),
        (
            {
                "endpointModelResourceList": [
                    {
                        "modelId": "@",
                        "podCount": 2,
                        "podAutoScaleEnable": True,
                        "scaleMetricCode": "CPU",
                        "scaleMetricTarget": 50,
                        "maxPodCount": 1,
                    }
                ]
            },
            "endpointModelResourceList.0",
        ),
        (
            {
                "endpointModelResourceList": [
                    {
                        "modelId": "@",
                        "podAutoScaleEnable": True,
                        "scaleMetricCode": "GPU",
                        "scaleMetricTarget": 50,
                    }
                ]
            },
            "endpointModelResourceList.0.scaleMetricCode",
        ),
        ({"caEnable": True}, None),
        ({"caEnable": True, "caMinNodeCount": 3, "caMaxNodeCount": 2}, None),
        (
            {"endpointModelResourceList": [{"modelId": "@", "apigwResourceUri": "/v2/x"}]},
            "endpointModelResourceList.0.apigwResourceUri",
        ),
        (
            {"endpointModelResourceList": [{"modelId": "@", "apigwResourceUri": "/ok/infer"}]},
            "endpointModelResourceList.0.apigwResourceUri",
        ),
        (
            {
                "endpointModelResourceList": [
                    {"modelId": "@", "apigwResourceUri": "/a"},
                    {"modelId": "@", "apigwResourceUri": "/a"},
                ]
            },
            None,
        ),
        (
            {"endpointModelResourceList": [{"modelId": "@", "apigwResourceUri": "in ference"}]},
            "endpointModelResourceList.0.apigwResourceUri",
        ),
    ],
    ids=[
        "unknown flavor",
        "no model",
        "unknown model",
        "more cpu than the flavor",
        "more memory than the flavor",
        "not a cpu quantity",
        "pods beyond the nodes",
        "a model twice",
        "bad name",
        "an autoscaler without its metric",
        "an autoscaler bound under the pod count",
        "an autoscaler on an unknown metric",
        "a node autoscaler without bounds",
        "a node autoscaler's bounds upside down",
        "a resource path shadowing the serving routes",
        "a resource path shadowing a model's prefix",
        "two models on one resource path",
        "a resource path that is not a path",
    ],
)
def test_bad_input_is_a_400_that_creates_nothing(
    api: ApiClient,
    db: Database,
    file_root: Path,
    ray: FakeBackend,
    change: dict[str, Any],
    field: str | None,
) -> None:
    model_id = active_model(api, db, file_root, "ok")
    resources = change.get("endpointModelResourceList")
    if resources is not None:
        change = dict(change)
        change["endpointModelResourceList"] = [
            {**r, "modelId": model_id if r["modelId"] == "@" else r["modelId"]} for r in resources
        ]
    before = snapshot_tables(db)

    reply = api.post("/endpoints", body(model_id, **change))

    assert_error(reply, 400, VALIDATION, field=field)
    assert snapshot_tables(db) == before
    assert ray.jobs == {}


def test_a_model_not_active_is_refused(
    api: ApiClient, db: Database, file_root: Path, ray: FakeBackend
) -> None:
    reply = api.post(
        "/models",
        {
            "modelName": "pending",
            "modelFormatCode": "SKLEARN",
            "modelUploadUri": artifact(file_root, "m"),
        },
    )
    pending = reply.body["model"]["modelId"]
    refused = api.post("/endpoints", body(pending))
    assert_error(
        refused, 400, VALIDATION, field="endpointModelResourceList.0.modelId", rule="status"
    )


def test_changing_the_default_stage_moves_the_endpoint_url_and_removes_the_old_default(
    api: ApiClient, db: Database, file_root: Path, ray: FakeBackend
) -> None:
    model_id = active_model(api, db, file_root, "switched")
    endpoint = api.post("/endpoints", body(model_id, endpointName="switched")).body["endpoint"]
    endpoint_id, old = endpoint["endpointId"], endpoint["defaultStage"]["endpointStageId"]
    stage_report(api, old, status="ACTIVE", routes={"switched": ["http://old:1"]})
    stage_body = {
        "endpointId": endpoint_id,
        "apigwStageName": "next",
        "flavorId": flavor("m2.c2m4").id,
        "endpointModelResourceList": [{"modelId": model_id}],
    }
    new = api.post("/endpoint-stages", stage_body).body["endpointStage"]["endpointStageId"]
    early = api.put(f"/endpoints/{endpoint_id}/default-stage", {"endpointStageId": new})
    assert_error(early, 409, DEPENDENT)  # not ACTIVE yet
    stage_report(api, new, status="ACTIVE", routes={"switched": ["http://new:1"]})

    changed = api.put(f"/endpoints/{endpoint_id}/default-stage", {"endpointStageId": new})

    assert changed.status == 200, changed.body
    view = changed.body["endpoint"]
    assert view["endpointStatusCode"] == "ACTIVE"
    assert view["defaultStage"]["endpointStageId"] == new
    assert view["defaultStage"]["apigwStageUrl"].endswith(f"/{endpoint_id}")
    assert [s["endpointStageId"] for s in view["endpointStageList"]] == [new]
    table = routes(api)["stages"]
    assert table[endpoint_id]["models"] == {"switched": ["http://new:1"]} and old not in table
    assert table[endpoint_id]["stageId"] == new  # its calls count for the new default
    (teardown,) = [job for key, job in ray.jobs.items() if key.startswith(f"teardown-{old}")]
    assert teardown.entrypoint.endswith(f"--stage {old} --grace 15")
    again = api.put(f"/endpoints/{endpoint_id}/default-stage", {"endpointStageId": new})
    assert_error(again, 409, DEPENDENT)


def test_a_deploy_job_that_dies_without_a_report_fails_its_stage_at_the_next_tick(
    api: ApiClient, db: Database, file_root: Path, ray: FakeBackend
) -> None:
    model_id = active_model(api, db, file_root, "orphan")
    first = api.post("/endpoints", body(model_id, endpointName="died")).body["endpoint"]
    second = api.post("/endpoints", body(model_id, endpointName="lost")).body["endpoint"]
    third = api.post("/endpoints", body(model_id, endpointName="busy")).body["endpoint"]
    died, lost, busy = (e["defaultStage"]["endpointStageId"] for e in (first, second, third))
    stage_report(api, died, status="CREATE_IN_PROGRESS")
    ray.set_state(f"deploy-{died}", JobState.FAILED, "the driver was killed")
    ray.forget(f"deploy-{lost}")
    ray.set_state(f"deploy-{busy}", JobState.RUNNING)

    endpoints.reconcile(db)

    def stage_of(endpoint: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = api.get(f"/endpoints/{endpoint['endpointId']}").body["endpoint"]
        return view

    assert stage_of(first)["endpointStatusCode"] == "CREATE_FAILED"
    reason = stage_of(first)["defaultStage"]["statusReason"]
    assert reason == "its deploy job ended FAILED without a report: the driver was killed"
    assert stage_of(second)["defaultStage"]["endpointStageStatusCode"] == "CREATE_FAILED"
    assert "gone from Ray" in stage_of(second)["defaultStage"]["statusReason"]
    assert stage_of(third)["defaultStage"]["endpointStageStatusCode"] == "CREATE_REQUESTED"


def test_the_gateway_s_minutes_become_a_stage_s_api_statistics(
    api: ApiClient, db: Database, file_root: Path, ray: FakeBackend
) -> None:
    model_id = active_model(api, db, file_root, "iris")
    endpoint = api.post("/endpoints", body(model_id, useLog=True)).body["endpoint"]
    stage_id = endpoint["defaultStage"]["endpointStageId"]
    stage_report(api, stage_id, status="ACTIVE", routes={"iris": ["http://10.0.0.5:8080"]})
    table = routes(api)["stages"][stage_id]
    assert table["logPrefix"] == f"logs/inference/{api.appkey}/{stage_id}/"
    now = int(time.time()) // 60 * 60
    fast = [0] * len(BOUNDS_MS)
    fast[bucket_of(0.9)] = 8  # 8 calls under 1 ms
    slow = [0] * len(BOUNDS_MS)
    slow[bucket_of(40)] = 2  # 2 calls of 40 ms
    minute = {"endpointStageId": stage_id, "calls": 10, "status2xx": 9, "status5xx": 1}

    def push(items: list[dict[str, Any]], token: str = "stats") -> Reply:
        return internal(
            api, "POST", "/internal/v1/gateway/stats", "gateway", token, json_body={"stats": items}
        )

    assert push([{**minute, "minute": now - 60, "buckets": fast}]).status == 200
    taken = push(
        [
            {
                **minute,
                "minute": now - 60,
                "calls": 0,
                "status2xx": 0,
                "status5xx": 0,
                "buckets": [],
            },
            {**minute, "minute": now + 7, "buckets": [*fast[:-1], 0]},
            {"endpointStageId": "gone", "minute": now, "calls": 1, "buckets": []},
        ]
    )
    assert taken.status == 200 and taken.body["taken"] == 2, taken.body  # "gone" is skipped
    assert push([{**minute, "minute": now, "buckets": slow}]).status == 200
    assert push([], token="routes").status == 401  # the routes token does not write stats

    stats = api.get(f"/endpoint-stages/{stage_id}/api-statistics").body["apiStatistics"]

    assert stats["endpointStageId"] == stage_id and stats["endpointId"] == endpoint["endpointId"]
    assert stats["total"]["calls"] == 30
    assert (stats["total"]["status2xx"], stats["total"]["status5xx"]) == (27, 3)
    assert stats["total"]["latencyP50Ms"] == 0.9 and stats["total"]["latencyP99Ms"] == 50
    assert [p["calls"] for p in stats["series"]] == [10, 20]
    assert [p["latencyP99Ms"] for p in stats["series"]] == [0.9, 50]
    empty = api.get(
        f"/endpoint-stages/{stage_id}/api-statistics",
        query={"startTime": "2020-01-01T00:00:00Z", "endTime": "2020-01-01T01:00:00Z"},
    ).body["apiStatistics"]
    assert empty["total"]["calls"] == 0 and empty["total"]["latencyP50Ms"] is None
    backwards = api.get(
        f"/endpoint-stages/{stage_id}/api-statistics",
        query={"startTime": "2020-01-02T00:00:00Z", "endTime": "2020-01-01T00:00:00Z"},
    )
    assert_error(backwards, 400, VALIDATION, field="startTime")
    assert_error(api.get("/endpoint-stages/nope/api-statistics"), 404, NOT_FOUND)


def test_a_gpu_text_generation_model_is_routed_to_vllm_s_paths(
    api: ApiClient, db: Database, file_root: Path, ray: FakeBackend
) -> None:
    generative = active_model(
        api,
        db,
        file_root,
        "gen",
        modelFormatCode="HUGGING_FACE",
        parameterList=[{"parameterName": "task", "parameterValue": "text_generation"}],
    )
    endpoint = api.post(
        "/endpoints",
        body(
            generative,
            flavorId=flavor("g2.t4.c8m64").id,
            endpointModelResourceList=[
                {"modelId": generative, "resourceOptionDetail": {"cpu": "2", "gpu": "1"}}
            ],
        ),
    )
    assert endpoint.status == 201, endpoint.body
    stage_id = endpoint.body["endpoint"]["defaultStage"]["endpointStageId"]
    stage_report(api, stage_id, status="ACTIVE", routes={"gen": ["http://10.0.0.9:8000"]})

    entry = routes(api)["stages"][stage_id]["models"]["gen"]

    assert entry == {
        "backends": ["http://10.0.0.9:8000"],
        "healthPath": "/health",
        "openaiRoot": "/v1",
    }


def test_a_model_s_resource_path_is_its_inference_url(
    api: ApiClient, db: Database, file_root: Path, ray: FakeBackend
) -> None:
    model_id = active_model(api, db, file_root, "iris")
    resources = [{"modelId": model_id, "apigwResourceUri": "/inference"}]
    endpoint = api.post("/endpoints", body(model_id, endpointModelResourceList=resources))
    assert endpoint.status == 201, endpoint.body
    stage = endpoint.body["endpoint"]["defaultStage"]
    (resource,) = stage["endpointModelList"]

    assert resource["apigwResourceUri"] == "/inference"
    assert resource["apigwEndpointUri"] == f"https://{stage['apigwStageUrl']}/inference"
    stage_report(
        api, stage["endpointStageId"], status="ACTIVE", routes={"iris": ["http://10.0.0.5:1"]}
    )
    entry = routes(api)["stages"][stage["endpointStageId"]]["models"]["iris"]
    assert entry == {"backends": ["http://10.0.0.5:1"], "resourcePath": "/inference"}


def test_an_active_stage_whose_pods_are_gone_from_ray_is_deployed_again(
    api: ApiClient, db: Database, file_root: Path, ray: FakeBackend
) -> None:
    model_id = active_model(api, db, file_root, "iris")
    kept = api.post("/endpoints", body(model_id, endpointName="kept")).body["endpoint"]
    gone = api.post("/endpoints", body(model_id, endpointName="gone")).body["endpoint"]
    kept_id, gone_id = (e["defaultStage"]["endpointStageId"] for e in (kept, gone))
    for stage_id in (kept_id, gone_id):
        stage_report(api, stage_id, status="ACTIVE", routes={"iris": ["http://10.0.0.5:1"]})
    ray.live_actors[endpoints.SERVING_NAMESPACE] = {f"{kept_id}.controller", f"{kept_id}.iris.0"}
    endpoints.reconcile(db)  # both were ACTIVE a moment ago: nothing is judged yet
    assert len(ray.jobs) == 2
    with db.session() as session:  # a minute later
        for stage_id in (kept_id, gone_id):
            stage = session.get(endpoints.rows.EndpointStage, stage_id)
            assert stage is not None
            stage.updated_at = stage.updated_at - endpoints.LOST_PODS_GRACE * 2

    endpoints.reconcile(db)
    endpoints.reconcile(db)  # a second tick starts no second deploy

    def stage_view(stage_id: str) -> dict[str, Any]:
        found: dict[str, Any] = api.get(f"/endpoint-stages/{stage_id}").body["endpointStage"]
        return found

    assert stage_view(kept_id)["endpointStageStatusCode"] == "ACTIVE"
    again = stage_view(gone_id)
    assert again["endpointStageStatusCode"] == "DEPLOY_IN_PROGRESS"
    assert "gone from Ray" in again["statusReason"] and again["deployStatus"] == "STAGE_DEPLOYING"
    assert again["endpointModelList"][0]["runningPodCount"] == 0
    (redeploy,) = [key for key in ray.jobs if key.startswith(f"deploy-{gone_id}-")]
    assert ray.jobs[redeploy].entrypoint.endswith(f"-m serving.deploy stage {gone_id}")
    assert routes(api)["stages"][gone_id]["models"] == {"iris": []}  # 503 meanwhile, not 404
    plan = internal(
        api, "GET", f"/internal/v1/endpoint-stages/{gone_id}/deployment", "endpoint-stage", gone_id
    ).body["deployment"]
    assert plan["status"] == "DEPLOY_IN_PROGRESS"

    stage_report(api, gone_id, status="ACTIVE", routes={"iris": ["http://10.0.0.6:1"]})
    back = stage_view(gone_id)
    assert back["endpointStageStatusCode"] == "ACTIVE" and back["statusReason"] is None
    assert api.get(f"/endpoints/{gone['endpointId']}").body["endpoint"]["endpointStatusCode"] == (
        "ACTIVE"
    )


def test_a_lost_redeploy_fails_the_stage_with_deploy_failed(
    api: ApiClient, db: Database, file_root: Path, ray: FakeBackend
) -> None:
    model_id = active_model(api, db, file_root, "iris")
    endpoint = api.post("/endpoints", body(model_id)).body["endpoint"]
    stage_id = endpoint["defaultStage"]["endpointStageId"]
    stage_report(api, stage_id, status="ACTIVE", routes={"iris": ["http://10.0.0.5:1"]})
    assert endpoints.redeploy(db, stage_id, "its pods were gone from Ray; deployed again")
    assert not endpoints.redeploy(db, stage_id, "twice")  # no longer ACTIVE
    (redeploy,) = [key for key in ray.jobs if key.startswith(f"deploy-{stage_id}-")]
    ray.set_state(redeploy, JobState.FAILED, "no room for the pods")

    endpoints.reconcile(db)

    view = api.get(f"/endpoint-stages/{stage_id}").body["endpointStage"]
    assert view["endpointStageStatusCode"] == "DEPLOY_FAILED"
    assert view["deployStatus"] == "STAGE_DEPLOY_FAIL"
    assert "no room for the pods" in view["statusReason"]
    assert api.delete(f"/endpoints/{endpoint['endpointId']}").status == 200  # still removable
