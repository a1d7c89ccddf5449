"""Every create is idempotent under a client retry that repeats its ``X-Idempotency-Key``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from chalicelib import errors
from chalicelib.domain.common import utc_now
from chalicelib.services import idempotency
from chalicelib.services.tick import tick
from chalicelib.store import models
from chalicelib.store.db import Database
from tests.integration.conftest import (
    ApiClient,
    Reply,
    TrainingCatalog,
    assert_error,
    snapshot_tables,
)

KEY = "X-Idempotency-Key"


def _count(db: Database, model: type[models.Base]) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _create(api: ApiClient, body: dict[str, Any], key: str) -> Reply:
    return api.post("/experiments", body, headers={KEY: key})


def test_a_retry_with_the_same_key_and_body_replays_the_first_response(
    api: ApiClient, db: Database
) -> None:
    body = {"experimentName": "retried", "tagList": [{"tagKey": "a", "tagValue": "b"}]}
    first = _create(api, body, "retry-1")
    assert first.status == 201, first.body
    assert "X-Idempotent-Replay" not in first.headers

    again = _create(api, body, "retry-1")
    assert again.status == 201
    assert again.headers.get("X-Idempotent-Replay") == "true"
    assert again.body == first.body
    assert _count(db, models.Experiment) == 1
    assert _count(db, models.IdempotencyRecord) == 1


def test_the_same_key_with_a_different_body_is_a_conflict_and_creates_nothing(
    api: ApiClient, db: Database
) -> None:
    assert _create(api, {"experimentName": "first"}, "reused").status == 201
    before = snapshot_tables(db)
    reply = _create(api, {"experimentName": "second"}, "reused")
    assert_error(reply, 409, errors.IdempotencyConflictError.result_code)
    assert "X-Idempotency-Key" in reply.header["resultMessage"]
    assert snapshot_tables(db) == before
    names = [e["experimentName"] for e in api.get("/experiments").body["experimentList"]]
    assert names == ["first"]


def test_different_keys_create_different_resources(api: ApiClient, db: Database) -> None:
    one = _create(api, {"experimentName": "one"}, "key-one")
    two = _create(api, {"experimentName": "two"}, "key-two")
    assert one.status == two.status == 201
    assert one.body["experiment"]["experimentId"] != two.body["experiment"]["experimentId"]
    assert _count(db, models.Experiment) == 2


def test_a_new_key_does_not_bypass_the_unique_name_rule(api: ApiClient, db: Database) -> None:
    assert _create(api, {"experimentName": "only"}, "key-a").status == 201
    reply = _create(api, {"experimentName": "only"}, "key-b")
    assert_error(reply, 409, errors.DuplicateNameError.result_code)
    assert _count(db, models.Experiment) == 1


def test_keys_belong_to_one_tenant(api: ApiClient, other_api: ApiClient, db: Database) -> None:
    # Another tenant's use of a key is no conflict...
    assert _create(api, {"experimentName": "alice-exp"}, "shared").status == 201
    bob = _create(other_api, {"experimentName": "bob-exp"}, "shared")
    assert bob.status == 201, bob.body
    assert bob.body["experiment"]["appKey"] == other_api.appkey
    # ...and never a replay of the other tenant's response, even for the same body.
    body = {"experimentName": "same-in-both"}
    alice = _create(api, body, "same-both")
    bob = _create(other_api, body, "same-both")
    assert "X-Idempotent-Replay" not in bob.headers
    assert bob.body["experiment"]["experimentId"] != alice.body["experiment"]["experimentId"]
    assert bob.body["experiment"]["appKey"] == other_api.appkey
    assert _count(db, models.Experiment) == 4


def test_a_failed_create_is_not_remembered_so_a_corrected_retry_succeeds(
    api: ApiClient, db: Database
) -> None:
    bad = _create(api, {"experimentName": "has space"}, "fix-me")
    assert_error(bad, 400, errors.ValidationError.result_code)
    assert _count(db, models.IdempotencyRecord) == 0
    good = _create(api, {"experimentName": "fixed"}, "fix-me")
    assert good.status == 201, good.body


@pytest.mark.parametrize("key", ["k" * 256, "k" * 1000, ""], ids=["256", "1000", "empty"])
def test_a_key_outside_1_to_255_characters_is_rejected(
    api: ApiClient, db: Database, key: str
) -> None:
    before = snapshot_tables(db)
    reply = _create(api, {"experimentName": "keyed"}, key)
    assert_error(reply, 400, errors.BadRequestError.result_code)
    assert "255" in reply.header["resultMessage"]
    assert snapshot_tables(db) == before


def test_a_key_of_exactly_255_characters_is_accepted(api: ApiClient) -> None:
    assert _create(api, {"experimentName": "long-key"}, "k" * 255).status == 201
    assert _create(api, {"experimentName": "long-key"}, "k" * 255).status == 201


def test_template_creates_and_copies_are_idempotent_too(
    api: ApiClient, db: Database, catalog: TrainingCatalog
) -> None:
    body = catalog.own_code_body("keyed-template")
    first = api.post("/training-templates", body, headers={KEY: "tpl"})
    again = api.post("/training-templates", body, headers={KEY: "tpl"})
    assert first.status == again.status == 201
    assert again.headers.get("X-Idempotent-Replay") == "true"
    template_id = first.body["trainingTemplate"]["trainingTemplateId"]
    assert again.body["trainingTemplate"]["trainingTemplateId"] == template_id

    copy_path = f"/training-templates/{template_id}/copy"
    copy = api.post(copy_path, {}, headers={KEY: "copy"})
    copy_again = api.post(copy_path, {}, headers={KEY: "copy"})
    assert copy.status == copy_again.status == 201
    assert copy_again.body == copy.body
    assert _count(db, models.TrainingTemplate) == 2


@pytest.mark.parametrize("round_number", range(3))
def test_concurrent_duplicates_create_exactly_one_resource(
    api: ApiClient, db: Database, round_number: int
) -> None:
    body = {"experimentName": f"raced-{round_number}", "description": "eight at once"}
    key = f"race-{round_number}"
    start = threading.Barrier(8)

    def post(_: int) -> Reply:
        start.wait()
        return _create(api, body, key)

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(post, range(8)))
    assert [r.status for r in replies] == [201] * 8, [r.body for r in replies]
    ids = {r.body["experiment"]["experimentId"] for r in replies}
    assert len(ids) == 1
    assert _count(db, models.Experiment) == 1
    assert _count(db, models.IdempotencyRecord) == 1
    replays = [r for r in replies if r.headers.get("X-Idempotent-Replay") == "true"]
    assert len(replays) == 7


def test_concurrent_duplicates_of_a_template_create_exactly_one(
    api: ApiClient, db: Database, catalog: TrainingCatalog
) -> None:
    body = catalog.own_code_body("raced-template")
    start = threading.Barrier(8)

    def post(_: int) -> Reply:
        start.wait()
        return api.post("/training-templates", body, headers={KEY: "tpl-race"})

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(post, range(8)))
    assert {r.status for r in replies} == {201}, [r.body for r in replies]
    assert len({r.body["trainingTemplate"]["trainingTemplateId"] for r in replies}) == 1
    assert _count(db, models.TrainingTemplate) == 1


@pytest.fixture
def everyone_misses_the_first_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make 8 duplicates all pass the 'already done?' check before any of them commits.

    That is the worst interleaving a real server can produce; the losers must then lose on the
    database's unique constraints and replay the winner.
    """
    real_find = idempotency._find
    looked = threading.local()
    gate = threading.Barrier(8, timeout=30)

    def find_after_everyone_looked(database: Database, appkey: str, key: str) -> Any:
        if not getattr(looked, "once", False):
            looked.once = True
            gate.wait()
            return None
        return real_find(database, appkey, key)

    monkeypatch.setattr(idempotency, "_find", find_after_everyone_looked)


def _race(send: Callable[[], Reply]) -> list[Reply]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: send(), range(8)))


@pytest.mark.usefixtures("everyone_misses_the_first_lookup")
def test_duplicates_that_all_miss_the_lookup_still_create_one_experiment(
    api: ApiClient, db: Database
) -> None:
    replies = _race(lambda: _create(api, {"experimentName": "interleaved"}, "worst-case"))
    assert [r.status for r in replies] == [201] * 8, [r.body for r in replies]
    assert len({r.body["experiment"]["experimentId"] for r in replies}) == 1
    assert sum(r.headers.get("X-Idempotent-Replay") == "true" for r in replies) == 7
    assert _count(db, models.Experiment) == 1


def test_duplicate_copies_that_all_miss_the_lookup_still_make_one_copy(
    api: ApiClient, db: Database, catalog: TrainingCatalog, request: pytest.FixtureRequest
) -> None:
    created = api.post("/training-templates", catalog.own_code_body("source"))
    template_id = created.body["trainingTemplate"]["trainingTemplateId"]
    request.getfixturevalue("everyone_misses_the_first_lookup")
    path = f"/training-templates/{template_id}/copy"
    replies = _race(lambda: api.post(path, {}, headers={KEY: "copy-race"}))
    assert [r.status for r in replies] == [201] * 8, [r.body for r in replies]
    names = {r.body["trainingTemplate"]["trainingTemplateName"] for r in replies}
    assert names == {"source-copy"}
    assert _count(db, models.TrainingTemplate) == 2


def test_the_tick_forgets_records_older_than_24_hours(api: ApiClient, db: Database) -> None:
    now = utc_now()
    with db.session() as session:
        for key, age in (("old", timedelta(hours=25)), ("fresh", timedelta(hours=23))):
            session.add(
                models.IdempotencyRecord(
                    appkey=api.appkey,
                    key=key,
                    fingerprint="0" * 64,
                    status_code=201,
                    response_body="{}",
                    created_at=now - age,
                )
            )
    outcome = tick(db)
    assert outcome["idempotency_records"] == "ok"
    with db.session() as session:
        left = set(session.scalars(select(models.IdempotencyRecord.key)))
    assert left == {"fresh"}


def test_after_the_record_expires_the_key_may_be_used_again(api: ApiClient, db: Database) -> None:
    assert _create(api, {"experimentName": "before"}, "recycled").status == 201
    with db.session() as session:
        record = session.get(models.IdempotencyRecord, (api.appkey, "recycled"))
        assert record is not None
        record.created_at = utc_now() - timedelta(hours=25)
    tick(db)
    reply = _create(api, {"experimentName": "after"}, "recycled")
    assert reply.status == 201, reply.body
    assert "X-Idempotent-Replay" not in reply.headers


def test_the_same_json_written_differently_counts_as_the_same_request(
    api: ApiClient, db: Database
) -> None:
    first = api.request(
        "POST",
        "/experiments",
        raw=b'{"experimentName": "same", "description": "d"}',
        headers={KEY: "reformatted"},
    )
    again = api.request(
        "POST",
        "/experiments",
        raw=b'{ "description":"d",\n "experimentName":"same" }',
        headers={KEY: "reformatted"},
    )
    assert first.status == 201, first.body
    assert again.headers.get("X-Idempotent-Replay") == "true"
    assert again.body == first.body
    assert _count(db, models.Experiment) == 1


def test_every_response_carries_a_request_id(api: ApiClient) -> None:
    replies = [
        api.post("/experiments", {"experimentName": "rid"}, headers={KEY: "rid"}),
        api.post("/experiments", {"experimentName": "rid"}, headers={KEY: "rid"}),
        api.get("/experiments/unknown"),
        api.get("/no-such-route"),
        api.request("PATCH", "/experiments"),
    ]
    for reply in replies:
        assert reply.headers.get("X-Request-Id"), (reply.status, reply.headers)
