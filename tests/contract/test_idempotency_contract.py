"""An ``X-Idempotency-Key`` create runs once and replays its first answer, on every backend."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from chalice import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from chalicelib.domain.experiment import ExperimentCreate
from chalicelib.errors import BadRequestError, IdempotencyConflictError, ValidationError
from chalicelib.services import auth
from chalicelib.services.experiments import ExperimentService
from chalicelib.services.idempotency import Work, fingerprint, run_once
from chalicelib.store import models
from chalicelib.store.db import Database
from tests.contract.conftest import race

ROUTE = "/v1.0/appkeys/{appKey}/experiments"


def request_fingerprint(body: dict[str, Any]) -> str:
    return fingerprint("POST", ROUTE, {}, json.dumps(body).encode())


def create_experiment(appkey: str, name: str | None = None) -> Work:
    """A create handler's work; without ``name`` each attempt picks a new one."""
    counter = itertools.count()

    def work(session: Session) -> tuple[int, dict[str, Any]]:
        chosen = name or f"idem-{next(counter)}"
        created = ExperimentService(session, appkey).create(
            ExperimentCreate(experiment_name=chosen)
        )
        return 201, {"experiment": created.model_dump(mode="json", by_alias=True)}

    return work


def experiment_count(database: Database, appkey: str) -> int:
    query = select(func.count()).where(models.Experiment.appkey == appkey)
    with database.session() as session:
        return int(session.scalar(query) or 0)


def is_replay(response: Response) -> bool:
    return (response.headers or {}).get("X-Idempotent-Replay") == "true"


def test_the_same_key_twice_creates_one_row_and_replays_the_first_body(
    database: Database, appkey: str
) -> None:
    print_ = request_fingerprint({"experimentName": "idem"})
    first = run_once(database, appkey, "key-1", print_, create_experiment(appkey, "idem"))
    again = run_once(database, appkey, "key-1", print_, create_experiment(appkey, "idem"))
    assert (first.status_code, again.status_code) == (201, 201)
    assert (is_replay(first), is_replay(again)) == (False, True)
    assert again.body == first.body
    assert json.loads(first.body)["experiment"]["experimentName"] == "idem"
    assert experiment_count(database, appkey) == 1


@pytest.mark.parametrize("name", ["idem", None], ids=["one-name", "new-name-per-attempt"])
def test_six_concurrent_requests_with_one_key_create_one_row(
    database: Database, appkey: str, name: str | None
) -> None:
    print_ = request_fingerprint({"experimentName": name})
    work = create_experiment(appkey, name)
    outcomes = race(6, lambda _i: run_once(database, appkey, "key-race", print_, work))
    responses = [o for o in outcomes if isinstance(o, Response)]
    assert len(responses) == 6, outcomes
    assert {r.body for r in responses} == {responses[0].body}
    assert {r.status_code for r in responses} == {201}
    assert sum(not is_replay(r) for r in responses) == 1
    assert experiment_count(database, appkey) == 1


def test_a_reused_key_with_a_different_request_is_a_conflict(
    database: Database, appkey: str
) -> None:
    first = request_fingerprint({"experimentName": "idem"})
    run_once(database, appkey, "key-1", first, create_experiment(appkey, "idem"))
    changed = request_fingerprint({"experimentName": "other"})
    with pytest.raises(IdempotencyConflictError):
        run_once(database, appkey, "key-1", changed, create_experiment(appkey, "other"))
    assert experiment_count(database, appkey) == 1


def test_a_key_is_scoped_to_its_appkey(database: Database, appkey: str) -> None:
    other_appkey = auth.create_project(database, name="other")
    print_ = request_fingerprint({"experimentName": "idem"})
    mine = run_once(database, appkey, "key-1", print_, create_experiment(appkey, "idem"))
    theirs = run_once(
        database, other_appkey, "key-1", print_, create_experiment(other_appkey, "idem")
    )
    assert not is_replay(mine) and not is_replay(theirs)
    assert mine.body != theirs.body
    assert (experiment_count(database, appkey), experiment_count(database, other_appkey)) == (1, 1)


def test_a_failed_request_is_not_recorded_and_may_be_retried_with_its_key(
    database: Database, appkey: str
) -> None:
    print_ = request_fingerprint({"experimentName": "idem"})

    def fail(session: Session) -> tuple[int, dict[str, Any]]:
        create_experiment(appkey, "idem")(session)
        raise ValidationError("refused after writing")

    with pytest.raises(ValidationError):
        run_once(database, appkey, "key-1", print_, fail)
    assert experiment_count(database, appkey) == 0
    retried = run_once(database, appkey, "key-1", print_, create_experiment(appkey, "idem"))
    assert not is_replay(retried)
    assert experiment_count(database, appkey) == 1


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_an_empty_or_overlong_key_is_refused(database: Database, appkey: str, key: str) -> None:
    with pytest.raises(BadRequestError):
        run_once(database, appkey, key, "f", create_experiment(appkey, "idem"))
    assert experiment_count(database, appkey) == 0
