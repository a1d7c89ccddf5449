"""The gateway's API statistics and inference logs, in process: per stage id (a default
stage's two keys count as one), pushed per minute to a stand-in control plane (kept when a
push fails), and one record per call of a ``useLog`` stage with its inferenceId, which the
pod and the client also get as ``X-Request-Id``."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from chalicelib.objectstore.local import LocalFileStore
from serving.gateway.app import REQUEST_ID_HEADER, RUNNER_HEADER, Gateway

PREFIX = "logs/inference/ak/stage-1/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def scenario(store: LocalFileStore) -> dict[str, Any]:
    pushed: list[tuple[str | None, Any]] = []
    seen_ids: list[str | None] = []

    async def take(request: web.Request) -> web.Response:
        pushed.append((request.headers.get(RUNNER_HEADER), await request.json()))
        return web.json_response({"taken": 1})

    async def ready(_request: web.Request) -> web.Response:
        return web.json_response({})

    async def infer(request: web.Request) -> web.Response:
        seen_ids.append(request.headers.get(REQUEST_ID_HEADER))
        status = int(request.headers.get("x-status", "200"))
        return web.json_response({"outputs": []}, status=status)

    control = web.Application()
    control.router.add_post("/internal/v1/gateway/stats", take)
    pod = web.Application()
    pod.router.add_get("/v2/health/ready", ready)
    pod.router.add_post("/v2/models/m/infer", infer)
    control_runner, control_url = await serve(control)
    pod_runner, pod_url = await serve(pod)
    gateway = Gateway(
        stats_url=f"{control_url}/internal/v1/gateway/stats",
        stats_token="signed",
        stats_interval=3600,  # pushed by the test
        log_store=store,
    )
    stage = {"models": {"m": [pod_url]}, "stageId": "stage-1", "endpointId": "ep-1"}
    gateway.table.replace(
        {
            "stages": {
                "ep-1": {**stage, "logPrefix": PREFIX},
                "stage-1": {**stage, "logPrefix": PREFIX},
            }
        }
    )
    gateway_runner, gateway_url = await serve(gateway.app())
    await gateway.check_once()
    answers = []
    async with aiohttp.ClientSession() as client:
        for key, extra in (
            ("ep-1", {}),
            ("ep-1", {REQUEST_ID_HEADER: "client-chosen"}),
            ("stage-1", {"x-status": "400"}),
            ("stage-1", {"x-status": "503"}),
        ):
            async with client.post(
                f"{gateway_url}/{key}/v2/models/m/infer", json={"inputs": []}, headers=extra
            ) as reply:
                answers.append((reply.status, reply.headers.get(REQUEST_ID_HEADER)))
    first = await gateway.push_stats()
    nothing = await gateway.push_stats()
    await control_runner.cleanup()  # the control plane is away: the minute is kept
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{gateway_url}/ep-1/v2/models/m/infer", json={}) as reply,
    ):
        await reply.read()
    with pytest.raises(aiohttp.ClientError):
        await gateway.push_stats()
    kept = {key: stats.calls for key, stats in gateway.unsent.items()}
    totals = {key: stats.as_dict() for key, stats in gateway.stats.items()}
    await gateway_runner.cleanup()  # closes the log sinks: their records are written
    await pod_runner.cleanup()
    return {
        "pushed": pushed,
        "first": first,
        "nothing": nothing,
        "answers": answers,
        "seen_ids": seen_ids,
        "kept": kept,
        "totals": totals,
    }


def test_calls_are_counted_per_stage_pushed_per_minute_and_logged(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path / "store")

    found = asyncio.run(scenario(store))

    assert [status for status, _ in found["answers"]] == [200, 200, 400, 503]
    ids = [ident for _, ident in found["answers"]]
    assert ids[1] == "client-chosen" and all(ids) and len(set(ids)) == 4
    assert found["seen_ids"][:4] == ids  # the pod got the same id
    assert found["first"] == 1 and found["nothing"] == 0
    ((token, body),) = found["pushed"]
    assert token == "signed"
    (minute,) = body["stats"]
    assert minute["endpointStageId"] == "stage-1" and minute["minute"] % 60 == 0
    assert (minute["calls"], minute["status2xx"], minute["status4xx"], minute["status5xx"]) == (
        4,
        2,
        1,
        1,
    )
    assert sum(minute["buckets"]) == 4
    assert list(found["kept"].values()) == [1]  # the failed push is sent again later
    assert found["totals"]["stage-1"]["calls"] == 5 and list(found["totals"]) == ["stage-1"]
    records = [
        json.loads(line)
        for key in sorted(store.list(PREFIX))
        for line in store.read(key).decode().splitlines()
    ]
    calls = [json.loads(record["body"]) for record in records]
    assert [call["inferenceId"] for call in calls] == [*ids, calls[-1]["inferenceId"]]
    assert {record["source"] for record in records} == {"gateway"}
    assert [record["stream"] for record in records[:4]] == ["stdout", "stdout", "stdout", "stderr"]
    assert calls[0]["endpointId"] == "ep-1" and calls[0]["endpointStageId"] == "stage-1"
    assert calls[0]["modelName"] == "m" and calls[0]["action"] == "Endpoint.Model"
    assert calls[2]["status"] == 400 and calls[0]["path"] == "/v2/models/m/infer"
