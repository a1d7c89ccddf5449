"""Training logs (paging, cursors, follow), the Log & Crash-style search, monitoring reads
and uploads, through the app in-process. Logs are written the way a job's driver writes them
(``runners.logsink.LogSink`` into the platform store)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from chalicelib import errors
from chalicelib.objectstore import platform_store
from chalicelib.services import trainings
from runners.logsink import LogSink
from tests.integration import trainings_fixtures
from tests.integration.conftest import ApiClient, assert_error
from tests.integration.trainings_fixtures import Bodies, runner_headers

VALIDATION = errors.ValidationError.result_code
BAD_REQUEST = errors.BadRequestError.result_code

file_root = trainings_fixtures.file_root
use_backend = trainings_fixtures.use_backend
ray = trainings_fixtures.ray
bodies = trainings_fixtures.bodies


def start(api: ApiClient, bodies: Bodies, name: str, *, use_log: bool) -> str:
    reply = api.post("/trainings", bodies.own_code(name, useLog=use_log))
    assert reply.status == 201, reply.body
    training_id: str = reply.body["training"]["trainingId"]
    return training_id


def sink_for(api: ApiClient, training_id: str, *, use_log: bool) -> LogSink:
    prefix = trainings.log_prefix(api.appkey, training_id)
    meta = {"trainingId": training_id, "useLog": use_log}
    meta_key = trainings.log_meta_key(api.appkey, training_id)
    platform_store().write(meta_key, json.dumps(meta).encode())
    return LogSink(platform_store(), prefix, flush_interval=0.05)


def report(api: ApiClient, training_id: str, status: str) -> None:
    reply = api.post(
        f"/internal/v1/trainings/{training_id}/status",
        {"status": status},
        headers=runner_headers(training_id),
        absolute=True,
    )
    assert reply.status == 200, reply.body


def test_pages_and_cursors_deliver_every_line_once(
    api: ApiClient, bodies: Bodies, ray: object
) -> None:
    training_id = start(api, bodies, "paged", use_log=False)
    sink = sink_for(api, training_id, use_log=False)
    for i in range(25):
        sink.write("node0", "stdout", f"line {i}\n")
    sink.write("node0", "stderr", "Traceback (most recent call last):\nValueError: boom\n")
    sink.close()

    first = api.get(f"/trainings/{training_id}/logs", query={"page": 1, "limit": 10})
    assert first.status == 200
    log = first.body["trainingLog"]
    assert log["paging"]["totalCount"] == 27 and len(log["logList"]) == 10
    assert log["trainingStatusCode"] in ("CREATE_REQUESTED", "CREATE_IN_PROGRESS")

    seen: list[str] = []
    cursor = None
    while True:
        query: dict[str, Any] = {"limit": 7}
        if cursor:
            query["cursor"] = cursor
        page = api.get(f"/trainings/{training_id}/logs", query=query).body["trainingLog"]
        if not page["logList"]:
            break
        seen += [line["body"] for line in page["logList"]]
        cursor = page["nextCursor"]
    assert len(seen) == 27 and seen[:2] == ["line 0", "line 1"]
    errors = [
        line
        for line in api.get(f"/trainings/{training_id}/logs", query={"page": 1}).body[
            "trainingLog"
        ]["logList"]
        if line["level"] == "ERROR"
    ]
    assert [e["body"] for e in errors] == [
        "Traceback (most recent call last):",
        "ValueError: boom",
    ]


def test_follow_waits_for_new_lines_and_returns_when_they_come(
    api: ApiClient, bodies: Bodies, ray: object
) -> None:
    training_id = start(api, bodies, "followed", use_log=False)
    report(api, training_id, "RUNNING")
    sink = sink_for(api, training_id, use_log=False)
    sink.write("node0", "stdout", "first\n")
    sink.flush()
    page = api.get(f"/trainings/{training_id}/logs").body["trainingLog"]
    assert [line["body"] for line in page["logList"]] == ["first"]

    timer = threading.Timer(1.0, lambda: (sink.write("node0", "stdout", "later\n"), sink.flush()))
    timer.start()
    began = time.monotonic()
    follow = api.get(
        f"/trainings/{training_id}/logs",
        query={"cursor": page["nextCursor"], "follow": "true", "waitSeconds": 10},
    ).body["trainingLog"]
    waited = time.monotonic() - began
    sink.close()
    assert [line["body"] for line in follow["logList"]] == ["later"]
    assert 0.5 < waited < 9  # it waited for the line, and not for the whole window


def test_follow_of_an_ended_training_returns_at_once(
    api: ApiClient, bodies: Bodies, ray: object
) -> None:
    training_id = start(api, bodies, "ended", use_log=False)
    report(api, training_id, "COMPLETE")
    began = time.monotonic()
    page = api.get(
        f"/trainings/{training_id}/logs", query={"follow": "true", "waitSeconds": 10}
    ).body["trainingLog"]
    assert page["logList"] == [] and page["trainingStatusCode"] == "COMPLETE"
    assert time.monotonic() - began < 5


def test_search_finds_lines_of_use_log_trainings_only(
    api: ApiClient, other_api: ApiClient, bodies: Bodies, ray: object
) -> None:
    logged = start(api, bodies, "logged", use_log=True)
    quiet = start(api, bodies, "quiet", use_log=False)
    for training_id, use_log in ((logged, True), (quiet, False)):
        sink = sink_for(api, training_id, use_log=use_log)
        sink.write("node0", "stdout", "epoch 1 accuracy=0.5\n")
        sink.write("node0", "stderr", "WARNING: learning rate too high\n")
        sink.close()

    found = api.get("/logs", query={"category": "easymaker.training"})
    assert found.status == 200, found.body
    assert {line["resourceId"] for line in found.body["logList"]} == {logged}
    assert all(line["category"] == "easymaker.training" for line in found.body["logList"])
    warnings = api.get("/logs", query={"logLevel": "WARNING"}).body["logList"]
    assert [line["body"] for line in warnings] == ["WARNING: learning rate too high"]
    text = api.get("/logs", query={"text": "ACCURACY", "trainingId": logged}).body["logList"]
    assert len(text) == 1 and text[0]["body"].startswith("epoch 1")
    assert other_api.get("/logs").body["logList"] == []  # another tenant sees nothing
    bad = api.get("/logs", query={"logLevel": "LOUD"})
    assert_error(bad, 400, VALIDATION)


def test_logs_of_another_tenants_training_are_not_found(
    api: ApiClient, other_api: ApiClient, bodies: Bodies, ray: object
) -> None:
    training_id = start(api, bodies, "private", use_log=False)
    assert other_api.get(f"/trainings/{training_id}/logs").status == 404
    assert other_api.get(f"/trainings/{training_id}/monitoring").status == 404


def test_an_upload_becomes_a_source_only_for_its_own_tenant(
    api: ApiClient, other_api: ApiClient, bodies: Bodies, ray: object
) -> None:
    reply = api.post("/uploads", raw=b"PK\x05\x06" + b"\x00" * 18, query={"fileName": "src.zip"})
    assert reply.status == 201, reply.body
    upload = reply.body["upload"]
    assert upload["uri"] == f"upload://{api.appkey}/{upload['uploadId']}/src.zip"
    assert upload["size"] == 22

    ok = api.post("/trainings", bodies.own_code("from-upload", sourceDirUri=upload["uri"]))
    assert ok.status == 201, ok.body
    stolen = other_api.post("/trainings", bodies.own_code("stolen", sourceDirUri=upload["uri"]))
    assert_error(stolen, 400, VALIDATION, field="sourceDirUri", rule="upload")
    missing = api.post(
        "/trainings",
        bodies.own_code("missing", sourceDirUri=f"upload://{api.appkey}/nope/src.zip"),
    )
    assert_error(missing, 400, VALIDATION, field="sourceDirUri", rule="upload")
    empty = api.post("/uploads", raw=b"", query={"fileName": "src.zip"})
    assert_error(empty, 400, BAD_REQUEST)
    bad_name = api.post("/uploads", raw=b"x", query={"fileName": "../x"})
    assert_error(bad_name, 400, VALIDATION)


def test_deleting_a_training_keeps_only_the_logs_it_was_asked_to_keep(
    api: ApiClient, bodies: Bodies, ray: object
) -> None:
    kept = start(api, bodies, "kept", use_log=True)
    dropped = start(api, bodies, "dropped", use_log=False)
    for training_id, use_log in ((kept, True), (dropped, False)):
        sink = sink_for(api, training_id, use_log=use_log)
        sink.write("node0", "stdout", f"hello from {training_id}\n")
        sink.close()
        report(api, training_id, "COMPLETE")
        assert api.delete(f"/trainings/{training_id}").status == 200

    store = platform_store()
    assert list(store.list(trainings.log_prefix(api.appkey, dropped))) == []
    assert not store.exists(trainings.log_meta_key(api.appkey, dropped))
    found = api.get("/logs", query={"text": "hello from"}).body["logList"]
    assert [line["resourceId"] for line in found] == [kept]  # the Log & Crash copy stays
