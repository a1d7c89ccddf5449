"""A fake Hugging Face hub on loopback: the endpoints ``huggingface_hub`` calls for
``HfApi.model_info`` / ``list_repo_files`` and ``snapshot_download``.

Routes (huggingface_hub 2.x): ``GET /api/models/{repo}`` and
``/api/models/{repo}/revision/{rev}`` (``id``, ``sha``, ``siblings``, ``gated``, and
``pipeline_tag`` when the repo has one),
``GET /api/models/{repo}/tree/{rev}`` (the file listing snapshot_download reads), and
``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` with the ``X-Repo-Commit``, ``ETag`` and
``Content-Length`` headers a download needs. Repos are folders the test builds. A gated
repo answers 401 without ``Authorization: Bearer <its token>`` and 403 with another token;
with ``public_listing`` its model info answers anyone (as huggingface.co does) and only
its listing and files need the token. Every request is recorded (path and whether it was
authorized), never the token itself.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

DEFAULT_REVISION = "main"


@dataclass
class FakeRepo:
    folder: Path
    token: str | None = None  # gated: this token (and only it) reads the repo
    public_listing: bool = False  # gated, but its model info answers anyone
    revisions: tuple[str, ...] = (DEFAULT_REVISION,)
    sha: str = ""
    pipeline_tag: str | None = None  # the hub's task tag (``fill-mask`` ...); None: no tag

    def __post_init__(self) -> None:
        if not self.sha:
            self.sha = hashlib.sha1(str(self.folder).encode()).hexdigest()

    def files(self) -> list[str]:
        return sorted(
            str(path.relative_to(self.folder)) for path in self.folder.rglob("*") if path.is_file()
        )


@dataclass
class Request:
    method: str
    path: str
    authorized: bool


@dataclass
class FakeHub:
    """The hub's repos by id, the server's URL once started, and what was asked."""

    repos: dict[str, FakeRepo] = field(default_factory=dict)
    url: str = ""
    requests: list[Request] = field(default_factory=list)

    def add(self, repo_id: str, folder: Path, **options: Any) -> FakeRepo:
        repo = FakeRepo(folder, **options)
        self.repos[repo_id] = repo
        return repo

    def downloaded(self) -> list[str]:
        """The files fetched with GET, as ``repo_id:path``."""
        found = []
        for request in self.requests:
            if request.method == "GET" and "/resolve/" in request.path:
                repo, _, rest = request.path.lstrip("/").partition("/resolve/")
                found.append(f"{repo}:{rest.split('/', 1)[1]}")
        return found


class HubHandler(BaseHTTPRequestHandler):
    """The hub's routes over :attr:`hub` (set on a subclass per server)."""

    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: pytest shows failures, not every request

    def do_GET(self) -> None:
        self._route(body=True)

    def do_HEAD(self) -> None:
        self._route(body=False)

    def _route(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path.startswith("/api/models/"):
            self._api(path.removeprefix("/api/models/"), body)
        elif "/resolve/" in path:
            self._resolve(path.lstrip("/"), body)
        else:
            self._reply(404, {"error": "not a hub route"}, body, _code("NotFound"))

    def _api(self, rest: str, body: bool) -> None:
        repo_id, marker, revision = rest, "", DEFAULT_REVISION
        for candidate in ("/revision/", "/tree/"):
            if candidate in rest:
                repo_id, marker, revision = rest.partition(candidate)
                break
        repo = self._repo(repo_id, body, public=marker != "/tree/")
        if repo is None or not self._revision(repo, revision, body):
            return
        if marker == "/tree/":
            self._reply(200, [_tree_entry(repo.folder, name) for name in repo.files()], body)
            return
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.sha,
            "private": False,
            "gated": "manual" if repo.token else False,
            "siblings": [{"rfilename": name} for name in repo.files()],
        }
        if repo.pipeline_tag is not None:
            info["pipeline_tag"] = repo.pipeline_tag
        self._reply(200, info, body)

    def _resolve(self, rest: str, body: bool) -> None:
        repo_id, _, tail = rest.partition("/resolve/")
        revision, _, name = tail.partition("/")
        repo = self._repo(repo_id, body, public=False)
        if repo is None or not self._revision(repo, revision, body):
            return
        file = repo.folder / name
        if not name or ".." in name.split("/") or not file.is_file():
            headers = {**_code("EntryNotFound"), "X-Repo-Commit": repo.sha}
            self._reply(404, {"error": "Entry not found"}, body, headers)
            return
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{_blob_id(file)}"')
        self.send_header("X-Repo-Commit", repo.sha)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _repo(self, repo_id: str, body: bool, public: bool) -> FakeRepo | None:
        repo = self.hub.repos.get(repo_id)
        authorization = self.headers.get("Authorization")
        authorized = repo is not None and (
            repo.token is None or authorization == f"Bearer {repo.token}"
        )
        self.hub.requests.append(Request(self.command, self.path, authorized))
        if repo is None:
            self._reply(404, {"error": "Repository not found"}, body, _code("RepoNotFound"))
            return None
        if authorized or (public and repo.public_listing):
            return repo
        status = 401 if authorization is None else 403
        message = {"error": f"Access to model {repo_id} is restricted."}
        self._reply(status, message, body, _code("GatedRepo"))
        return None

    def _revision(self, repo: FakeRepo, revision: str, body: bool) -> bool:
        if revision in repo.revisions or revision == repo.sha:
            return True
        self._reply(404, {"error": "Invalid rev id"}, body, _code("RevisionNotFound"))
        return False

    def _reply(
        self, status: int, payload: Any, body: bool, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)


def _tree_entry(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    return {"type": "file", "path": name, "size": path.stat().st_size, "oid": _blob_id(path)}


def _code(error_code: str) -> dict[str, str]:
    return {"X-Error-Code": error_code}


def _blob_id(file: Path) -> str:
    """The file's git blob id, as the hub's ETag of a non-LFS file."""
    data = file.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def serve(hub: FakeHub) -> Iterator[FakeHub]:
    """Serve ``hub`` on 127.0.0.1 (a free port) while the generator is open."""
    handler = type("BoundHubHandler", (HubHandler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-hub", daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running fake hub with no repos, set as ``OPENMAKER_HF_ENDPOINT``."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for hub in serve(FakeHub()):
        monkeypatch.setenv("OPENMAKER_HF_ENDPOINT", hub.url)
        yield hub


SERVED = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
SERVED += ["vocab.txt", "special_tokens_map.json"]
NOT_SERVED = ["pytorch_model.bin", "flax_model.msgpack", "tf_model.h5", "README.md"]
NOT_SERVED += ["onnx/model.onnx", "onnx/config.json", "checkpoints/model.safetensors"]


def safetensors_repo(folder: Path) -> Path:
    """A repo with small stand-ins for every kind of file: what a pod downloads
    (:data:`SERVED`) and what it must not (:data:`NOT_SERVED`). The weights are a valid
    safetensors file; nothing here is a loadable model (``huggingface_model`` is)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    weights = len(header).to_bytes(8, "little") + header + b"\0" * 8
    for name in SERVED + NOT_SERVED:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(weights if name.endswith(".safetensors") else f"{name}\n".encode())
    return folder


def pickle_only_repo(folder: Path) -> Path:
    """A repo whose weights are only ``pytorch_model.bin`` (with its config)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickled weights")
    return folder
