"""The NSML-way CLI without a platform: folder packing, arguments, connection settings."""

from __future__ import annotations

import io
import json
import os
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain import states
from openmaker import cli, nsml
from openmaker.client import ApiError, Client, CliError, Connection, _decode, resolve_connection
from openmaker.nsml import pack_folder, parse_datasets, parse_hyperparameters


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _names(data: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return sorted(archive.namelist())


# --------------------------------------------------------------------------- packing


def test_packing_skips_vcs_caches_environments_and_bytecode(tmp_path: Path) -> None:
    folder = _tree(
        tmp_path / "project",
        {
            "main.py": b"print('hi')\n",
            "model/net.py": b"",
            "model/__pycache__/net.cpython-311.pyc": b"x",
            "stray.pyc": b"x",
            ".git/HEAD": b"ref: refs/heads/main\n",
            ".venv/bin/python": b"x",
            "venv/lib/site.py": b"x",
            "node_modules/left-pad/index.js": b"x",
            "data/sub/node_modules/x.js": b"x",
            ".env.example": b"A=1\n",
            "configs/base.yaml": b"lr: 0.1\n",
        },
    )

    packed = pack_folder(folder, "main.py")

    assert _names(packed.data) == [
        ".env.example",
        "configs/base.yaml",
        "main.py",
        "model/net.py",
    ]
    assert packed.raw_bytes == len(b"print('hi')\n") + len(b"A=1\n") + len(b"lr: 0.1\n")
    with zipfile.ZipFile(io.BytesIO(packed.data)) as archive:
        assert archive.read("main.py") == b"print('hi')\n"


def test_an_entry_file_in_a_subfolder_is_found(tmp_path: Path) -> None:
    folder = _tree(tmp_path, {"src/train.py": b"", "README": b""})

    assert _names(pack_folder(folder, "src/train.py").data) == ["README", "src/train.py"]


def test_packing_refuses_a_missing_entry_file(tmp_path: Path) -> None:
    folder = _tree(tmp_path, {"train.py": b""})

    with pytest.raises(CliError) as caught:
        pack_folder(folder, "main.py")

    assert caught.value.message.startswith(f"the entry file main.py is not in {folder.resolve()}")


@pytest.mark.parametrize("entry", ["../main.py", "/etc/passwd", ""])
def test_packing_refuses_an_entry_outside_the_folder(tmp_path: Path, entry: str) -> None:
    folder = _tree(tmp_path / "p", {"main.py": b""})

    with pytest.raises(CliError, match="must be a path inside the folder"):
        pack_folder(folder, entry)


def test_packing_refuses_an_entry_in_a_skipped_folder(tmp_path: Path) -> None:
    folder = _tree(tmp_path, {"venv/main.py": b"", "main.py": b""})

    with pytest.raises(CliError, match="not packed"):
        pack_folder(folder, "venv/main.py")


def test_packing_refuses_a_folder_that_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="is not a folder"):
        pack_folder(tmp_path / "absent", "main.py")


def test_packing_refuses_more_than_the_limit_and_names_the_largest_files(tmp_path: Path) -> None:
    folder = _tree(
        tmp_path,
        {"main.py": b"", "weights.bin": os.urandom(20_000), "small.bin": os.urandom(3_000)},
    )

    with pytest.raises(CliError) as caught:
        pack_folder(folder, "main.py", limit=10_000)

    message = caught.value.message
    assert "more than" in message and "upload limit" in message
    assert "weights.bin" in message
    assert "-d NAME=URI" in message


def test_packing_under_the_limit_passes(tmp_path: Path) -> None:
    folder = _tree(tmp_path, {"main.py": b"x" * 50_000})  # compresses well

    packed = pack_folder(folder, "main.py", limit=10_000)

    assert len(packed.data) <= 10_000


def test_the_default_limit_is_the_upload_limit() -> None:
    from chalicelib.api.uploads import MAX_UPLOAD_BYTES

    assert nsml.MAX_UPLOAD_BYTES == MAX_UPLOAD_BYTES == 256 * 2**20


# ----------------------------------------------------------------------- hyperparameters


def test_hyperparameters_are_pairs_and_flags() -> None:
    args = ["--epochs", "3", "--lr", "0.1", "--verbose", "--momentum=0.9", "--bias", "-0.5"]

    assert parse_hyperparameters(args) == [
        {"parameterName": "epochs", "parameterValue": "3"},
        {"parameterName": "lr", "parameterValue": "0.1"},
        {"parameterName": "verbose", "parameterValue": "true"},
        {"parameterName": "momentum", "parameterValue": "0.9"},
        {"parameterName": "bias", "parameterValue": "-0.5"},
    ]
    assert parse_hyperparameters(["--dry-run"]) == [
        {"parameterName": "dry-run", "parameterValue": "true"}
    ]
    assert parse_hyperparameters([]) == []


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["epochs", "3"], "'epochs' is neither"),
        (["--epochs", "3", "4"], "'4' is neither"),
        (["-e", "3"], "'-e' is neither"),
        (["--"], "'--' is neither"),
        (["--1st", "x"], "hyperparameter name '1st'"),
        (["--a.b", "x"], "hyperparameter name 'a.b'"),
        (["--=x"], "hyperparameter name ''"),
        (["--lr", "1", "--lr", "2"], "--lr is given twice"),
    ],
)
def test_other_arguments_are_refused(args: list[str], complaint: str) -> None:
    with pytest.raises(CliError) as caught:
        parse_hyperparameters(args)

    assert complaint in caught.value.message


def test_datasets_are_name_equals_uri() -> None:
    assert parse_datasets(["train=s3://b/train", "test=file:///data/test"]) == [
        {"datasetName": "train", "dataUri": "s3://b/train"},
        {"datasetName": "test", "dataUri": "file:///data/test"},
    ]
    with pytest.raises(CliError, match="NAME=URI"):
        parse_datasets(["s3://b/train"])
    with pytest.raises(CliError, match="dataset name '9x'"):
        parse_datasets(["9x=s3://b/x"])
    with pytest.raises(CliError, match="given twice"):
        parse_datasets(["a-b=s3://b/x", "A_B=s3://b/y"])


def test_a_run_body_has_the_nsml_defaults(tmp_path: Path) -> None:
    options = nsml.RunOptions(
        entry="main.py",
        script_args=["--epochs", "3"],
        folder=tmp_path / "my project",
        flavor="flavor-id",
        image="image-id",
        datasets=["train=s3://bucket/train"],
    )

    body = nsml.training_body(options, "APPKEY", "upload://APPKEY/u1/source.zip")

    assert body["trainingName"].startswith("my-project-")
    assert body["experimentName"] == "nsml"
    assert body["entryPoint"] == "main.py"
    assert body["instanceCount"] == 1
    assert body["hyperparameterList"] == [{"parameterName": "epochs", "parameterValue": "3"}]
    assert body["datasetList"] == [{"datasetName": "train", "dataUri": "s3://bucket/train"}]
    assert body["modelUploadUri"] == "upload://APPKEY/runs/{trainingId}/model"
    assert body["checkPointUploadUri"] == "upload://APPKEY/runs/{trainingId}/checkpoints"
    assert "timeoutMinutes" not in body


def test_the_defaults_name_the_catalogs_entries() -> None:
    catalog = Path(__file__).resolve().parents[2] / "chalicelib" / "catalog"
    flavors = json.loads((catalog / "flavors.json").read_text())
    images = json.loads((catalog / "images.json").read_text())

    assert nsml.DEFAULT_FLAVOR in {f["name"] for f in flavors}
    assert nsml.DEFAULT_IMAGE in {i["imageName"] for i in images}


def test_the_status_sets_follow_the_training_state_machine() -> None:
    machine = states.TRAINING

    assert set(nsml.TERMINAL) == {str(s) for s in machine.terminal}
    assert set(nsml.ACTIVE) == {str(s) for s in machine.statuses} - set(nsml.TERMINAL)
    assert all(nsml.is_terminal(str(s)) == machine.is_terminal(s) for s in machine.statuses)
    assert nsml.is_failure("FAIL_TRAIN") and nsml.is_failure("CREATE_FAILED")
    assert not nsml.is_failure("FAIL_TRAIN_IN_PROGRESS") and not nsml.is_failure("STOPPED")


def test_durations_and_names() -> None:
    assert [nsml.duration(s) for s in (None, 0, 59, 61, 3725)] == [
        "-",
        "0s",
        "59s",
        "1m01s",
        "1h02m05s",
    ]
    assert nsml.slug("__weird name!!") == "weird-name"
    assert nsml.slug("...") == "run"
    assert len(nsml.slug("x" * 80)) == 50


# ------------------------------------------------------------------------ the command line


def test_the_arguments_after_the_double_dash_belong_to_run() -> None:
    args = cli.parse_args(["run", "main.py", "-e", "exp", "--detach", "--", "--epochs", "3"])

    assert (args.entry, args.experiment, args.detach) == ("main.py", "exp", True)
    assert args.script_args == ["--epochs", "3"]
    assert cli.parse_args(["run", "main.py"]).script_args == []
    with pytest.raises(SystemExit):
        cli.parse_args(["ps", "--", "x"])


def test_bad_hyperparameters_fail_before_any_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENMAKER_HOME", str(tmp_path / "no-home"))
    for name in ("OPENMAKER_APPKEY", "OPENMAKER_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    code = cli.main(["run", "main.py", "--", "epochs", "3"])

    assert code == 1
    assert capsys.readouterr().err.startswith("error: the arguments after -- are hyperparameters")


def test_run_without_credentials_explains_where_they_come_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENMAKER_HOME", str(tmp_path))
    for name in ("OPENMAKER_APPKEY", "OPENMAKER_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    code = cli.main(["ps"])

    err = capsys.readouterr().err
    assert code == 1
    assert "no credentials: set OPENMAKER_APPKEY and OPENMAKER_TOKEN" in err
    assert str(tmp_path / "credentials.json") in err


def test_connection_settings_come_from_the_flag_the_environment_or_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENMAKER_HOME", str(tmp_path))
    monkeypatch.delenv("OPENMAKER_URL", raising=False)
    monkeypatch.delenv("OPENMAKER_APPKEY", raising=False)
    monkeypatch.delenv("OPENMAKER_TOKEN", raising=False)
    (tmp_path / "credentials.json").write_text('{"appkey": "from-file", "token": "tok-file"}')

    saved = resolve_connection()
    monkeypatch.setenv("OPENMAKER_URL", "http://platform:1234/")
    monkeypatch.setenv("OPENMAKER_APPKEY", "from-env")
    monkeypatch.setenv("OPENMAKER_TOKEN", "tok-env")
    from_env = resolve_connection()
    flagged = resolve_connection("https://elsewhere")

    assert saved == Connection("http://127.0.0.1:10090", "from-file", "tok-file")
    assert from_env == Connection("http://platform:1234", "from-env", "tok-env")
    assert flagged.url == "https://elsewhere"
    assert "tok-env" not in repr(from_env)
    with pytest.raises(CliError, match="must start with http"):
        resolve_connection("platform:1234")


def test_a_damaged_credentials_file_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENMAKER_HOME", str(tmp_path))
    monkeypatch.delenv("OPENMAKER_APPKEY", raising=False)
    monkeypatch.delenv("OPENMAKER_TOKEN", raising=False)
    (tmp_path / "credentials.json").write_text('{"appkey": "only"}')

    with pytest.raises(CliError, match="has no appkey and token"):
        resolve_connection()


def test_an_unsuccessful_envelope_raises_its_result_message() -> None:
    refusal = {
        "header": {
            "isSuccessful": False,
            "resultCode": 40901,
            "resultMessage": "training x is RUNNING; stop it and delete it when it has ended",
        }
    }

    with pytest.raises(ApiError) as caught:
        _decode("DELETE", "/trainings/x", 409, json.dumps(refusal).encode())
    with pytest.raises(ApiError, match="without the API's envelope"):
        _decode("GET", "/trainings", 502, b"<html>bad gateway</html>")

    assert caught.value.message == refusal["header"]["resultMessage"]
    assert (caught.value.status, caught.value.code) == (409, 40901)
    ok = {"header": {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"}}
    assert _decode("GET", "/x", 200, json.dumps(ok).encode()) == ok


class _Reply:
    status = 201

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = json.dumps(body).encode()

    def __enter__(self) -> _Reply:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def read(self) -> bytes:
        return self.body


def test_the_client_sends_a_bearer_token_and_the_raw_upload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[urllib.request.Request] = []
    upload = {"uploadId": "u1", "uri": "upload://APP/u1/source.zip"}

    def fake_urlopen(request: urllib.request.Request, timeout: float) -> _Reply:
        sent.append(request)
        return _Reply({"header": {"isSuccessful": True}, "upload": upload})

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    client = Client(Connection("http://h:1", "APP", "secret-token"))

    reply = client.upload("source.zip", b"PK\x03\x04zip")

    assert reply == upload
    (request,) = sent
    assert request.full_url == "http://h:1/v1.0/appkeys/APP/uploads?fileName=source.zip"
    assert request.get_method() == "POST"
    assert request.get_header("X-nhn-authorization") == "Bearer secret-token"
    assert request.get_header("Content-type") == "application/zip"
    assert request.data == b"PK\x03\x04zip"
