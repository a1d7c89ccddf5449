"""Who may call what: tokens, appkeys, tenant isolation, and the admin CLI that issues them."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import chalice.app
import pytest
from sqlalchemy import select

from chalicelib import errors
from chalicelib.config import reset_settings
from chalicelib.services.catalog import get_catalog
from chalicelib.store.db import Database, get_database, reset_database
from chalicelib.store.models import AccessToken
from openmaker.server import ChaliceWSGI
from tests.integration.conftest import (
    ApiClient,
    TrainingCatalog,
    assert_error,
    new_tenant,
    snapshot_tables,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
UNAUTHORIZED = errors.UnauthorizedError.result_code
FORBIDDEN = errors.ForbiddenError.result_code
NOT_FOUND = errors.NotFoundError.result_code


def _anonymous(api: ApiClient) -> ApiClient:
    return ApiClient(api.wsgi, api.appkey, None)


# --- authentication ------------------------------------------------------------------------


def test_a_request_without_a_token_is_unauthorized(api: ApiClient, db: Database) -> None:
    before = snapshot_tables(db)
    reply = _anonymous(api).post("/experiments", {"experimentName": "x"})
    assert_error(reply, 401, UNAUTHORIZED)
    assert "x-nhn-authorization" in reply.header["resultMessage"]
    assert snapshot_tables(db) == before


@pytest.mark.parametrize(
    "header,value",
    [
        ("x-nhn-authorization", "Basic dXNlcjpwYXNz"),
        ("x-nhn-authorization", "Bearer "),
        ("x-nhn-authorization", "Bearer"),
        ("x-nhn-authorization", "Token abc"),
        ("authorization", "Basic x"),
    ],
    ids=["basic scheme", "bearer without token", "bare bearer", "other scheme", "basic auth"],
)
def test_a_malformed_authorization_header_is_unauthorized(
    api: ApiClient, header: str, value: str
) -> None:
    reply = _anonymous(api).get("/experiments", headers={header: value})
    assert_error(reply, 401, UNAUTHORIZED)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-nhn-authorization": "Bearer omk_not-a-real-token"},
        {"X-EasyMaker-Token": "omk_not-a-real-token"},
    ],
    ids=["bearer", "easymaker token"],
)
def test_an_unknown_token_is_unauthorized(api: ApiClient, headers: dict[str, str]) -> None:
    reply = _anonymous(api).get("/experiments", headers=headers)
    assert_error(reply, 401, UNAUTHORIZED)
    assert "omk_not-a-real-token" not in repr(reply.body)


def test_a_token_of_one_appkey_is_forbidden_on_another(
    api: ApiClient, other_api: ApiClient, db: Database
) -> None:
    before = snapshot_tables(db)
    borrowed = ApiClient(api.wsgi, other_api.appkey, api.token)
    assert_error(borrowed.get("/experiments"), 403, FORBIDDEN)
    assert_error(borrowed.post("/experiments", {"experimentName": "x"}), 403, FORBIDDEN)
    unknown_appkey = ApiClient(api.wsgi, "NoSuchAppkey", api.token)
    assert_error(unknown_appkey.get("/experiments"), 403, FORBIDDEN)
    assert snapshot_tables(db) == before


@pytest.mark.parametrize(
    "style",
    ["x-nhn-authorization", "X-EasyMaker-Token", "lower-case bearer"],
)
def test_both_header_styles_authenticate(api: ApiClient, style: str) -> None:
    headers = {
        "x-nhn-authorization": {"x-nhn-authorization": f"Bearer {api.token}"},
        "X-EasyMaker-Token": {"X-EasyMaker-Token": str(api.token)},
        "lower-case bearer": {"x-nhn-authorization": f"bearer {api.token}"},
    }[style]
    client = _anonymous(api)
    created = client.post("/experiments", {"experimentName": "via-header"}, headers=headers)
    assert created.status == 201, created.body
    listed = client.get("/experiments", headers=headers)
    assert [e["experimentName"] for e in listed.body["experimentList"]] == ["via-header"]


def test_health_and_the_openapi_document_need_no_token(api: ApiClient) -> None:
    anonymous = _anonymous(api)
    health = anonymous.get("/health", absolute=True)
    assert health.status == 200 and health.body["health"]["status"] == "UP"
    assert anonymous.get("/openapi.json", absolute=True).status == 200


def test_tokens_are_stored_only_as_sha256_digests(api: ApiClient, db: Database) -> None:
    assert api.token is not None
    with db.engine.connect() as connection:
        rows = connection.execute(select(AccessToken.__table__)).all()
    assert rows
    assert hashlib.sha256(api.token.encode()).hexdigest() in {row.token_hash for row in rows}
    everything = repr(snapshot_tables(db))
    assert api.token not in everything
    assert api.token.removeprefix("omk_") not in everything


# --- tenant isolation ----------------------------------------------------------------------


@pytest.fixture
def alice_resources(api: ApiClient, catalog: TrainingCatalog) -> dict[str, str]:
    experiment = api.post(
        "/experiments",
        {"experimentName": "alice-private", "description": "alice-secret-description"},
    )
    template = api.post(
        "/training-templates",
        catalog.own_code_body("alice-template", description="alice-secret-description"),
    )
    assert experiment.status == 201 and template.status == 201
    return {
        "experiment": experiment.body["experiment"]["experimentId"],
        "template": template.body["trainingTemplate"]["trainingTemplateId"],
    }


def test_another_tenant_cannot_read_change_or_delete_an_experiment(
    api: ApiClient, other_api: ApiClient, db: Database, alice_resources: dict[str, str]
) -> None:
    path = f"/experiments/{alice_resources['experiment']}"
    before = snapshot_tables(db)
    replies = [
        other_api.get(path),
        other_api.put(path, {"experimentName": "stolen", "description": "bob"}),
        other_api.delete(path),
    ]
    for reply in replies:
        assert_error(reply, 404, NOT_FOUND)
        assert "alice-private" not in repr(reply.body)
        assert "alice-secret-description" not in repr(reply.body)
    assert snapshot_tables(db) == before
    mine = api.get(path)
    assert mine.status == 200 and mine.body["experiment"]["experimentName"] == "alice-private"


def test_another_tenant_cannot_read_replace_copy_or_delete_a_template(
    api: ApiClient,
    other_api: ApiClient,
    db: Database,
    catalog: TrainingCatalog,
    alice_resources: dict[str, str],
) -> None:
    path = f"/training-templates/{alice_resources['template']}"
    before = snapshot_tables(db)
    replies = [
        other_api.get(path),
        other_api.put(path, catalog.own_code_body("stolen")),
        other_api.post(path + "/copy", {}),
        other_api.delete(path),
    ]
    for reply in replies:
        assert_error(reply, 404, NOT_FOUND)
        assert "alice-template" not in repr(reply.body)
        assert "alice-secret-description" not in repr(reply.body)
    assert snapshot_tables(db) == before
    assert api.get(path).status == 200


def test_lists_show_only_the_callers_own_resources(
    api: ApiClient,
    other_api: ApiClient,
    catalog: TrainingCatalog,
    alice_resources: dict[str, str],
) -> None:
    assert other_api.post("/experiments", {"experimentName": "bob-exp"}).status == 201
    assert other_api.post("/training-templates", catalog.own_code_body("bob-tpl")).status == 201

    bob_experiments = other_api.get("/experiments").body
    assert [e["experimentName"] for e in bob_experiments["experimentList"]] == ["bob-exp"]
    assert bob_experiments["paging"]["totalCount"] == 1
    assert {e["appKey"] for e in bob_experiments["experimentList"]} == {other_api.appkey}
    bob_templates = other_api.get("/training-templates").body["trainingTemplateList"]
    assert [t["trainingTemplateName"] for t in bob_templates] == ["bob-tpl"]

    # Filters by another tenant's id or name find nothing rather than leaking it.
    by_id = other_api.get(
        "/experiments", query={"experimentIdList": alice_resources["experiment"]}
    )
    assert by_id.body["experimentList"] == [] and by_id.body["paging"]["totalCount"] == 0
    by_name = other_api.get(
        "/training-templates", query={"trainingTemplateNameList": "alice-template"}
    )
    assert by_name.body["trainingTemplateList"] == []

    alice = api.get("/experiments").body["experimentList"]
    assert [e["experimentName"] for e in alice] == ["alice-private"]


def test_names_are_unique_per_tenant_only(
    api: ApiClient, other_api: ApiClient, catalog: TrainingCatalog
) -> None:
    for client in (api, other_api):
        assert client.post("/experiments", {"experimentName": "same-name"}).status == 201
        template = client.post("/training-templates", catalog.own_code_body("same-name"))
        assert template.status == 201, template.body
    assert api.post("/experiments", {"experimentName": "same-name"}).status == 409
    assert other_api.post("/training-templates", catalog.own_code_body("same-name")).status == 409


def test_renaming_into_another_tenants_name_is_allowed(
    api: ApiClient, other_api: ApiClient
) -> None:
    assert api.post("/experiments", {"experimentName": "taken-by-alice"}).status == 201
    bob = other_api.post("/experiments", {"experimentName": "bob"}).body["experiment"]
    renamed = other_api.put(
        f"/experiments/{bob['experimentId']}", {"experimentName": "taken-by-alice"}
    )
    assert renamed.status == 200, renamed.body
    assert renamed.body["experiment"]["experimentName"] == "taken-by-alice"


def test_concurrent_requests_of_different_tenants_never_see_each_others_request(
    wsgi: ChaliceWSGI, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A threaded server runs requests side by side; each must keep its own token and body.

    Chalice keeps the current request on the app object; the pause below widens the window
    between storing it and reading it in the view, where another thread could replace it.
    """
    original = chalice.app.RestAPIEventHandler.__call__

    def paused(self: Any, event: Any, context: Any) -> Any:
        time.sleep(0.002)
        return original(self, event, context)

    monkeypatch.setattr(chalice.app.RestAPIEventHandler, "__call__", paused)
    clients = [ApiClient(wsgi, *new_tenant(db, f"tenant-{i}")) for i in range(6)]

    def create_several(index: int) -> list[tuple[int, Any, str]]:
        client = clients[index]
        outcomes = []
        for n in range(5):
            reply = client.post("/experiments", {"experimentName": f"t{index}-e{n}"})
            experiment = reply.body.get("experiment", {})
            outcomes.append((reply.status, experiment.get("experimentName"), f"t{index}-e{n}"))
            assert experiment.get("appKey") in (None, client.appkey)
        return outcomes

    with ThreadPoolExecutor(len(clients)) as pool:
        outcomes = [o for batch in pool.map(create_several, range(len(clients))) for o in batch]
    assert [o for o in outcomes if o[0] != 201 or o[1] != o[2]] == []
    for index, client in enumerate(clients):
        names = sorted(
            e["experimentName"] for e in client.get("/experiments").body["experimentList"]
        )
        assert names == [f"t{index}-e{n}" for n in range(5)]


# --- the admin CLI ------------------------------------------------------------------------


def _admin(home: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAKER_")}
    env["OPENMAKER_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-m", "openmaker", "admin", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def cli_home(tmp_path: Path, openmaker_home: Path) -> Path:
    """A separate OpenMaker home for the CLI (``openmaker_home`` resets the caches after)."""
    return tmp_path / "cli-home"


def _reset_caches() -> None:
    """What tests/conftest.py does when it switches homes: settings, database, catalog."""
    reset_settings()
    reset_database()
    get_catalog.cache_clear()


def test_the_admin_cli_issues_appkeys_and_tokens_that_the_api_accepts(
    cli_home: Path, wsgi: ChaliceWSGI, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = _admin(cli_home, "create-appkey", "--name", "x")
    match = re.search(r"appkey:\s*(\S+)\s+token:\s*(omk_\S+)", created)
    assert match, created
    appkey, first_token = match.groups()

    second = re.search(r"token:\s*(omk_\S+)", _admin(cli_home, "create-token", appkey))
    assert second, "create-token printed no token"
    second_token = second.group(1)
    assert second_token != first_token

    listing = _admin(cli_home, "list-appkeys")
    line = next(line for line in listing.splitlines() if line.startswith(appkey))
    assert line.split("\t")[1:] == ["x", "2 token(s)"]
    assert first_token not in listing and second_token not in listing

    monkeypatch.setenv("OPENMAKER_HOME", str(cli_home))
    _reset_caches()
    for token, name in ((first_token, "from-cli"), (second_token, "from-cli-2")):
        client = ApiClient(wsgi, appkey, token)
        reply = client.post("/experiments", {"experimentName": name})
        assert reply.status == 201, reply.body
        assert reply.body["experiment"]["appKey"] == appkey
    database = get_database()
    assert database.url.endswith(str(cli_home / "openmaker.db"))
    with database.engine.connect() as connection:
        stored = repr(connection.execute(select(AccessToken.__table__)).all())
    assert first_token not in stored and second_token not in stored


def test_the_admin_cli_refuses_a_token_for_an_unknown_appkey(cli_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAKER_")}
    env["OPENMAKER_HOME"] = str(cli_home)
    done = subprocess.run(
        [sys.executable, "-m", "openmaker", "admin", "create-token", "NoSuchAppkey"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "NoSuchAppkey not found" in done.stderr
    assert "omk_" not in done.stdout
