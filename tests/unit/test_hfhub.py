"""chalicelib/hfhub.py against a fake hub on loopback: the hub URI and id rules, the tick's check
(the reasons it gives, the task a pipeline tag names) and a pod's download (safetensors,
configs and tokenizers only), with the model's token never in a reason, an exception or a log.

Unit tests refuse the network (tests/unit/conftest.py); this module narrows that to
loopback, where the fake hub listens: nothing here reaches the internet.
"""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib import hfhub
from chalicelib.domain.model import HUGGING_FACE_TASKS, hub_model_id_problem
from serving.runtimes.python.config import Task
from tests.serving.fake_hub import (
    NOT_SERVED,
    SERVED,
    FakeHub,
    pickle_only_repo,
    safetensors_repo,
)
from tests.serving.fake_hub import fake_hub as fake_hub  # the fixture

TOKEN = "hf_right_token_abcdefghijklmnop"
WRONG = "hf_wrong_token_qrstuvwxyz012345"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Loopback only (overrides the conftest's fixture of this name)."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if self.family == socket.AF_UNIX or host in ("127.0.0.1", "::1", "localhost"):
            return real_connect(self, address)
        raise AssertionError(f"unit tests must not use the network (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield


@pytest.fixture
def hub(fake_hub: FakeHub, tmp_path: Path) -> FakeHub:
    fake_hub.add("org/tiny", safetensors_repo(tmp_path / "tiny"), revisions=("main", "v1"))
    fake_hub.add("solo", safetensors_repo(tmp_path / "solo"))
    fake_hub.add("org/pickled", pickle_only_repo(tmp_path / "pickled"))
    fake_hub.add("org/gated", safetensors_repo(tmp_path / "gated"), token=TOKEN)
    fake_hub.add(
        "org/listed", safetensors_repo(tmp_path / "listed"), token=TOKEN, public_listing=True
    )
    return fake_hub


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# -- URIs, ids, endpoint ---------------------------------------------------------------------


def test_a_hub_uri_names_the_model_and_its_revision() -> None:
    assert hfhub.hub_uri("org/name") == "hf://org/name"
    assert hfhub.hub_uri("name", "v1.0") == "hf://name@v1.0"
    assert hfhub.parse_hub_uri("hf://org/name@refs/pr/1") == ("org/name", "refs/pr/1")
    assert hfhub.parse_hub_uri("hf://org/name") == ("org/name", None)
    with pytest.raises(ValueError):
        hfhub.parse_hub_uri("s3://bucket/model")
    with pytest.raises(ValueError):
        hfhub.parse_hub_uri("hf://org/../etc")


@pytest.mark.parametrize(
    "model_id",
    ["", "a/b/c", "org/..", "../x", "org/na me", "org/name?x", "-org/x", "x" * 97, "org/a--b"],
)
def test_a_malformed_model_id_is_refused(model_id: str) -> None:
    assert hub_model_id_problem(model_id) is not None
    with pytest.raises(ValueError):
        hfhub.hub_uri(model_id)


@pytest.mark.parametrize("model_id", ["bert-base-uncased", "google-bert/bert_base.v2", "a" * 96])
def test_a_well_formed_model_id_is_accepted(model_id: str) -> None:
    assert hub_model_id_problem(model_id) is None


def test_the_endpoint_comes_from_openmaker_then_hf_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENMAKER_HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hfhub.hub_endpoint() == "https://huggingface.co"
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example/")
    assert hfhub.hub_endpoint() == "https://mirror.example"
    monkeypatch.setenv("OPENMAKER_HF_ENDPOINT", "http://hub.internal:8080")
    assert hfhub.hub_endpoint() == "http://hub.internal:8080"


def test_the_control_plane_knows_the_runtimes_tasks() -> None:
    assert set(HUGGING_FACE_TASKS) == {task.value for task in Task}


def test_the_token_is_the_hf_token_parameter_or_another_token_credential() -> None:
    assert hfhub.hub_token([("task", "fill_mask"), ("HF-TOKEN", "a")]) == "a"
    assert hfhub.hub_token([("hub_access_token", "b"), ("hf_token", "c")]) == "c"
    assert hfhub.hub_token([("hub_access_token", "b")]) == "b"
    assert hfhub.hub_token([("password", "p"), ("hf_token", "")]) is None


# -- the tick's check --------------------------------------------------------------------------


def test_a_safetensors_repo_passes_the_check(hub: FakeHub) -> None:
    assert hfhub.check_hub_model("org/tiny", None, None, "fill_mask") == hfhub.HubCheck()
    assert hfhub.check_hub_model("org/tiny", "v1", None, "fill_mask") == hfhub.HubCheck()
    assert hfhub.check_hub_model("solo", None, None, "text_generation") == hfhub.HubCheck()


@pytest.mark.parametrize(("tag", "task"), sorted(hfhub.PIPELINE_TASKS.items()))
def test_without_a_task_the_repos_pipeline_tag_names_it(
    hub: FakeHub, tmp_path: Path, tag: str, task: str
) -> None:
    hub.add("org/tagged", safetensors_repo(tmp_path / "tagged"), pipeline_tag=tag)

    assert hfhub.check_hub_model("org/tagged", None, None) == hfhub.HubCheck(task=task)


def test_every_served_task_has_its_pipeline_tag() -> None:
    assert sorted(hfhub.PIPELINE_TASKS.values()) == sorted(HUGGING_FACE_TASKS)


@pytest.mark.parametrize(
    ("tag", "named"),
    [
        ("summarization", "its pipeline tag 'summarization' is not a task served here"),
        (None, "it has no pipeline tag on the hub"),
    ],
    ids=["another tag", "no tag"],
)
def test_without_a_task_another_pipeline_tag_or_none_is_refused_naming_the_tasks(
    hub: FakeHub, tmp_path: Path, tag: str | None, named: str
) -> None:
    hub.add("org/tagged", safetensors_repo(tmp_path / "tagged"), pipeline_tag=tag)

    found = hfhub.check_hub_model("org/tagged", None, None)

    assert found.task is None and found.problem is not None
    assert found.problem.startswith(f"Hugging Face model org/tagged: {named}; ")
    assert "give a task parameter" in found.problem
    assert all(task in found.problem for task in HUGGING_FACE_TASKS)


def test_a_given_task_is_kept_whatever_the_pipeline_tag(hub: FakeHub, tmp_path: Path) -> None:
    hub.add("org/tagged", safetensors_repo(tmp_path / "tagged"), pipeline_tag="summarization")

    assert hfhub.check_hub_model("org/tagged", None, None, "fill_mask") == hfhub.HubCheck()


def test_a_repo_with_only_pickle_weights_is_refused_naming_them(hub: FakeHub) -> None:
    reason = hfhub.check_hub_model("org/pickled", None, None).problem
    assert reason is not None
    assert "only safetensors weights are served" in reason
    assert "pytorch_model.bin" in reason


def test_a_missing_repo_or_revision_is_refused(hub: FakeHub) -> None:
    assert "org/nothing does not exist" in str(
        hfhub.check_hub_model("org/nothing", None, None).problem
    )
    assert "revision v9" in str(hfhub.check_hub_model("org/tiny", "v9", None).problem)


@pytest.mark.parametrize("repo", ["org/gated", "org/listed"])
def test_a_gated_repo_needs_a_token_with_access(
    hub: FakeHub, repo: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    without = hfhub.check_hub_model(repo, None, None).problem
    wrong = hfhub.check_hub_model(repo, None, WRONG).problem
    right = hfhub.check_hub_model(repo, None, TOKEN, "fill_mask").problem

    assert without is not None and "gated model: give an hf_token parameter with access" in without
    assert "401" in without
    assert wrong is not None and "gated model" in wrong and "403" in wrong
    assert WRONG not in wrong
    assert right is None
    assert TOKEN not in caplog.text and WRONG not in caplog.text


def test_an_unreachable_hub_is_named_in_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OPENMAKER_HF_ENDPOINT", f"http://127.0.0.1:{port}")

    reason = hfhub.check_hub_model("org/tiny", None, TOKEN).problem

    assert reason is not None and "cannot be reached" in reason
    assert f"127.0.0.1:{port}" in reason and TOKEN not in reason


# -- a pod's download ----------------------------------------------------------------------------


def test_the_download_takes_weights_configs_and_tokenizers_only(
    hub: FakeHub, tmp_path: Path
) -> None:
    dest = tmp_path / "model"

    hfhub.download_hub_model("hf://org/tiny@v1", dest, None)

    assert files_in(dest) == sorted(SERVED)
    fetched = {name.split(":", 1)[1] for name in hub.downloaded()}
    assert fetched == set(SERVED)
    assert not fetched & set(NOT_SERVED)


def test_a_gated_download_sends_the_token_and_never_shows_it(
    hub: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hfhub.download_hub_model("hf://org/gated", tmp_path / "ok", TOKEN)
    assert files_in(tmp_path / "ok") == sorted(SERVED)

    for token, status in ((None, "401"), (WRONG, "403")):
        with pytest.raises(hfhub.HubModelError) as refused:
            hfhub.download_hub_model("hf://org/gated", tmp_path / f"no-{status}", token)
        assert "gated model" in str(refused.value) and status in str(refused.value)
        assert refused.value.__suppress_context__  # the hub's error, with its request, is left
        shown = "".join(traceback.format_exception(refused.value))
        assert TOKEN not in shown and WRONG not in shown

    assert TOKEN not in caplog.text and WRONG not in caplog.text
    assert all(r.authorized for r in hub.requests if "/org/gated/resolve/" in r.path)


def test_a_pickle_only_or_missing_repo_downloads_nothing_served(
    hub: FakeHub, tmp_path: Path
) -> None:
    with pytest.raises(hfhub.HubModelError, match="only safetensors weights are served"):
        hfhub.download_hub_model("hf://org/pickled", tmp_path / "out" / "pickled", None)
    assert "org/pickled:pytorch_model.bin" not in hub.downloaded()
    with pytest.raises(hfhub.HubModelError, match="does not exist"):
        hfhub.download_hub_model("hf://org/nothing", tmp_path / "out" / "nothing", None)
    with pytest.raises(hfhub.HubModelError, match="not a Hugging Face hub URI"):
        hfhub.download_hub_model("file:///tmp/x", tmp_path / "x", None)


def test_fetch_model_takes_a_hub_model_with_its_hf_token_parameter(
    hub: FakeHub, tmp_path: Path
) -> None:
    parameters = [("task", "fill_mask"), ("hf_token", TOKEN)]

    hfhub.fetch_model("hf://org/gated", tmp_path / "model", parameters)

    assert files_in(tmp_path / "model") == sorted(SERVED)
