"""Experiments, training templates and tokens behave the same on every metadata-store backend."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import select

from chalicelib.domain.catalog import CoreType, GroupType
from chalicelib.domain.common import Tag
from chalicelib.domain.experiment import ExperimentCreate, ExperimentQuery, ExperimentUpdate
from chalicelib.domain.training import TrainingTemplateCreate, TrainingTemplateQuery
from chalicelib.errors import (
    DependentResourceError,
    DuplicateNameError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)
from chalicelib.services import auth, experiments
from chalicelib.services.catalog import get_catalog
from chalicelib.services.experiments import ExperimentService
from chalicelib.services.training_templates import TrainingTemplateService
from chalicelib.store import models
from chalicelib.store.db import Database
from tests.contract.conftest import insert_experiment, race


def create_experiments(database: Database, appkey: str, *names: str) -> list[str]:
    """Create one experiment per name, each in its own unit of work, oldest first."""
    ids = []
    for name in names:
        with database.session() as session:
            created = ExperimentService(session, appkey).create(
                ExperimentCreate(experiment_name=name, tag_list=[Tag(tag_key="k", tag_value=name)])
            )
        ids.append(created.experiment_id)
    return ids


def list_experiments(
    database: Database, appkey: str, **query: Any
) -> tuple[list[str], int, list[str]]:
    """(names, totalCount, ids) of one page."""
    with database.session() as session:
        found, paging = ExperimentService(session, appkey).list(ExperimentQuery(**query))
    return [e.experiment_name for e in found], paging.total_count, [e.experiment_id for e in found]


# --- experiments ---------------------------------------------------------------------------


def test_a_created_experiment_is_active_and_reads_back_identically(
    database: Database, appkey: str
) -> None:
    with database.session() as session:
        created = ExperimentService(session, appkey).create(
            ExperimentCreate(
                experiment_name="mnist",
                description="digits",
                tag_list=[Tag(tag_key="team", tag_value="vision")],
            )
        )
    with database.session() as session:
        fetched = ExperimentService(session, appkey).get(created.experiment_id)
    assert fetched == created
    assert fetched.experiment_status_code == "ACTIVE"
    assert fetched.app_key == appkey
    assert fetched.tag_list == [Tag(tag_key="team", tag_value="vision")]


def test_experiments_are_listed_newest_first(database: Database, appkey: str) -> None:
    create_experiments(database, appkey, "first", "second", "third")
    names, total, _ = list_experiments(database, appkey)
    assert (names, total) == (["third", "second", "first"], 3)


def test_experiments_are_filtered_by_id_list_and_name_list(
    database: Database, appkey: str
) -> None:
    ids = create_experiments(database, appkey, "a", "b", "c", "d")
    names, total, _ = list_experiments(database, appkey, experiment_id_list=[ids[0], ids[2]])
    assert (names, total) == (["c", "a"], 2)
    names, total, _ = list_experiments(database, appkey, experiment_name_list=["b", "d", "zz"])
    assert (names, total) == (["d", "b"], 2)
    names, total, _ = list_experiments(
        database, appkey, experiment_id_list=[ids[0], ids[1]], experiment_name_list=["b", "c"]
    )
    assert (names, total) == (["b"], 1)
    assert list_experiments(database, appkey, experiment_status_code_list=["ACTIVE"])[1] == 4
    assert (
        list_experiments(database, appkey, experiment_status_code_list=["CREATE_FAILED"])[1] == 0
    )


def test_experiment_pages_split_the_newest_first_order_and_report_the_total(
    database: Database, appkey: str
) -> None:
    create_experiments(database, appkey, "e1", "e2", "e3", "e4", "e5")
    pages = [list_experiments(database, appkey, page=n, limit=2)[:2] for n in (1, 2, 3, 4)]
    assert pages == [(["e5", "e4"], 5), (["e3", "e2"], 5), (["e1"], 5), ([], 5)]


def test_an_experiment_name_is_unique_within_an_appkey(database: Database, appkey: str) -> None:
    create_experiments(database, appkey, "taken")
    with pytest.raises(DuplicateNameError), database.session() as session:
        ExperimentService(session, appkey).create(ExperimentCreate(experiment_name="taken"))
    other = create_experiments(database, appkey, "other")[0]
    with pytest.raises(DuplicateNameError), database.session() as session:
        ExperimentService(session, appkey).update(other, ExperimentUpdate(experiment_name="taken"))
    assert list_experiments(database, appkey)[:2] == (["other", "taken"], 2)


def test_of_eight_concurrent_creates_with_one_name_exactly_one_succeeds(
    database: Database, appkey: str
) -> None:
    outcomes = race(8, lambda _i: create_experiments(database, appkey, "contested")[0])
    created = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if not isinstance(o, str)]
    assert len(created) == 1
    assert all(isinstance(o, DuplicateNameError) for o in refused), refused
    assert list_experiments(database, appkey)[2] == created


def test_the_same_experiment_name_is_allowed_in_another_appkey(
    database: Database, appkey: str
) -> None:
    other_appkey = auth.create_project(database, name="other")
    mine = create_experiments(database, appkey, "shared-name")
    theirs = create_experiments(database, other_appkey, "shared-name")
    assert mine != theirs
    assert list_experiments(database, appkey)[2] == mine
    assert list_experiments(database, other_appkey)[2] == theirs


def test_another_appkeys_experiment_is_not_found(database: Database, appkey: str) -> None:
    other_appkey = auth.create_project(database, name="other")
    theirs = create_experiments(database, other_appkey, "private")[0]
    with database.session() as session:
        service = ExperimentService(session, appkey)
        with pytest.raises(NotFoundError):
            service.get(theirs)
        with pytest.raises(NotFoundError):
            service.update(theirs, ExperimentUpdate(description="mine now"))
        with pytest.raises(NotFoundError):
            service.delete(theirs)
    assert list_experiments(database, appkey, experiment_id_list=[theirs])[:2] == ([], 0)
    assert list_experiments(database, other_appkey)[2] == [theirs]


def test_an_experiment_with_dependents_refuses_deletion_until_they_are_gone(
    database: Database, appkey: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    row_id = create_experiments(database, appkey, "busy")[0]
    monkeypatch.setitem(experiments.DEPENDENTS, "trainings", lambda _session, _id: 2)
    with pytest.raises(DependentResourceError) as refused, database.session() as session:
        ExperimentService(session, appkey).delete(row_id)
    assert "2 trainings" in refused.value.message
    assert "delete them first" in refused.value.message
    assert list_experiments(database, appkey)[2] == [row_id]

    monkeypatch.delitem(experiments.DEPENDENTS, "trainings")
    with database.session() as session:
        ExperimentService(session, appkey).delete(row_id)
    with pytest.raises(NotFoundError), database.session() as session:
        ExperimentService(session, appkey).get(row_id)


def test_an_experiment_still_being_created_refuses_deletion(
    database: Database, appkey: str
) -> None:
    row_id = insert_experiment(database, appkey, name="pending")
    with pytest.raises(DependentResourceError), database.session() as session:
        ExperimentService(session, appkey).delete(row_id)
    assert list_experiments(database, appkey)[2] == [row_id]


def test_an_experiment_update_changes_only_the_given_fields(
    database: Database, appkey: str
) -> None:
    row_id = create_experiments(database, appkey, "before")[0]
    with database.session() as session:
        original = ExperimentService(session, appkey).get(row_id)
    with database.session() as session:
        ExperimentService(session, appkey).update(row_id, ExperimentUpdate(description="d"))
    with database.session() as session:
        updated = ExperimentService(session, appkey).get(row_id)
    assert (updated.experiment_name, updated.description) == ("before", "d")
    assert updated.tag_list == original.tag_list
    assert updated.created_datetime == original.created_datetime
    assert updated.updated_datetime >= original.updated_datetime


# --- training templates --------------------------------------------------------------------


@pytest.fixture
def template_spec() -> dict[str, Any]:
    """A valid own-code training spec on a CPU training image and a CPU flavor."""
    catalog = get_catalog()
    image = next(
        i
        for i in catalog.images
        if i.image_type_code == GroupType.TRAINING and i.core_type_code == CoreType.CPU
    )
    flavor = next(
        f
        for f in catalog.flavors
        if f.core_type_code == CoreType.CPU and GroupType.TRAINING in f.group_type_list
    )
    return {
        "imageId": image.image_id,
        "flavorId": flavor.id,
        "sourceDirUri": "file:///srv/code/mnist",
        "entryPoint": "train.py",
        "modelUploadUri": "file:///srv/models/mnist",
        "hyperparameterList": [{"parameterName": "epochs", "parameterValue": 3}],
        "datasetList": [{"datasetName": "train", "dataUri": "s3://datasets/mnist/train"}],
        "tagList": [{"tagKey": "team", "tagValue": "vision"}],
    }


def template(spec: dict[str, Any], name: str, **changes: Any) -> TrainingTemplateCreate:
    return TrainingTemplateCreate.model_validate({**spec, "trainingTemplateName": name, **changes})


def test_a_training_template_survives_create_update_copy_and_delete(
    database: Database, appkey: str, template_spec: dict[str, Any]
) -> None:
    with database.session() as session:
        created = TrainingTemplateService(session, appkey).create(template(template_spec, "tpl"))
    with database.session() as session:
        assert TrainingTemplateService(session, appkey).get(created.training_template_id) == (
            created
        )
    assert created.hyperparameter_list[0].parameter_value == "3"
    assert created.dataset_list[0].data_uri == "s3://datasets/mnist/train"

    with database.session() as session:
        updated = TrainingTemplateService(session, appkey).update(
            created.training_template_id,
            template(template_spec, "tpl-v2", timeoutMinutes=60, description="shorter"),
        )
    with database.session() as session:
        fetched = TrainingTemplateService(session, appkey).get(created.training_template_id)
    assert fetched == updated
    assert (fetched.training_template_name, fetched.timeout_minutes) == ("tpl-v2", 60)
    assert fetched.created_datetime == created.created_datetime

    with database.session() as session:
        service = TrainingTemplateService(session, appkey)
        first = service.copy(created.training_template_id, None)
        second = service.copy(created.training_template_id, None)
        named = service.copy(created.training_template_id, "tpl-named")
    assert [first.training_template_name, second.training_template_name] == [
        "tpl-v2-copy",
        "tpl-v2-copy-2",
    ]
    assert named.training_template_name == "tpl-named"
    spec_fields = {"image_id", "flavor_id", "timeout_minutes", "hyperparameter_list", "tag_list"}
    assert first.model_dump(include=spec_fields) == fetched.model_dump(include=spec_fields)

    with database.session() as session:
        TrainingTemplateService(session, appkey).delete(created.training_template_id)
    with database.session() as session:
        service = TrainingTemplateService(session, appkey)
        with pytest.raises(NotFoundError):
            service.get(created.training_template_id)
        remaining, paging = service.list(TrainingTemplateQuery())
    assert [t.training_template_name for t in remaining] == [
        "tpl-named",
        "tpl-v2-copy-2",
        "tpl-v2-copy",
    ]
    assert paging.total_count == 3


def test_a_training_template_name_is_unique_within_an_appkey(
    database: Database, appkey: str, template_spec: dict[str, Any]
) -> None:
    with database.session() as session:
        service = TrainingTemplateService(session, appkey)
        service.create(template(template_spec, "one"))
        two = service.create(template(template_spec, "two"))
    with pytest.raises(DuplicateNameError), database.session() as session:
        TrainingTemplateService(session, appkey).create(template(template_spec, "one"))
    with pytest.raises(DuplicateNameError), database.session() as session:
        TrainingTemplateService(session, appkey).update(
            two.training_template_id, template(template_spec, "one")
        )
    with pytest.raises(DuplicateNameError), database.session() as session:
        TrainingTemplateService(session, appkey).copy(two.training_template_id, "one")
    other_appkey = auth.create_project(database, name="other")
    with database.session() as session:
        TrainingTemplateService(session, other_appkey).create(template(template_spec, "one"))
        with pytest.raises(NotFoundError):
            TrainingTemplateService(session, other_appkey).get(two.training_template_id)


# --- tokens --------------------------------------------------------------------------------


@pytest.fixture
def token(database: Database, appkey: str) -> str:
    auth.forget_cached_tokens()  # every lookup below must reach the backend under test
    return auth.create_token(database, appkey, description="contract")


def test_a_token_authenticates_its_appkey_with_either_header_style(
    database: Database, appkey: str, token: str
) -> None:
    assert auth.authenticate(database, appkey, {"x-nhn-authorization": f"Bearer {token}"}) == (
        appkey
    )
    auth.forget_cached_tokens()
    assert auth.authenticate(database, appkey, {"x-easymaker-token": token}) == appkey


def test_a_token_is_forbidden_for_another_appkey(
    database: Database, appkey: str, token: str
) -> None:
    other_appkey = auth.create_project(database, name="other")
    with pytest.raises(ForbiddenError):
        auth.authenticate(database, other_appkey, {"x-easymaker-token": token})


def test_an_unknown_or_missing_token_is_unauthorized(
    database: Database, appkey: str, token: str
) -> None:
    with pytest.raises(UnauthorizedError):
        auth.authenticate(database, appkey, {"x-easymaker-token": token + "x"})
    with pytest.raises(UnauthorizedError):
        auth.authenticate(database, appkey, {})
    with pytest.raises(UnauthorizedError):
        auth.authenticate(database, appkey, {"x-nhn-authorization": token})


def test_tokens_are_stored_only_as_sha256_digests(
    database: Database, appkey: str, token: str
) -> None:
    with database.session() as session:
        rows = session.scalars(select(models.AccessToken)).all()
        stored = [(r.appkey, r.token_hash, r.description, r.id) for r in rows]
    assert [(a, h, d) for a, h, d, _ in stored] == [
        (appkey, hashlib.sha256(token.encode()).hexdigest(), "contract")
    ]
    assert all(token not in str(value) for row in stored for value in row)


def test_a_token_for_an_unknown_appkey_is_not_issued(database: Database) -> None:
    with pytest.raises(NotFoundError):
        auth.create_token(database, "no-such-appkey")
