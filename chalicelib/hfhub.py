"""Hugging Face models from a hub model id: the tick's check and a pod's download.

A HUGGING_FACE model created with a ``model_id`` parameter points at
``hf://{org}/{name}[@{revision}]`` (the URI rules live in ``chalicelib.domain.model`` and are
re-exported here). :func:`check_hub_model` asks the hub about the repo when the model is
created (ACTIVE, or CREATE_FAILED with the reason), and takes the task of a model created
without one from the repo's ``pipeline_tag``; :func:`download_hub_model` fetches, when a
pod starts, only what the Python runtime reads: safetensors weights, JSON configs and
tokenizer files of the repo's top folder, never pickle-format weights.

The hub is ``OPENMAKER_HF_ENDPOINT``, else ``HF_ENDPOINT``, else https://huggingface.co. Only
the model's own token (its ``hf_token`` parameter) is sent: a token saved on the machine or
in the process's ``HF_TOKEN`` is never used (``token=False``), and the token is never logged
nor put in a reason or an exception message. ``huggingface_hub`` is imported on first use, so
the control plane imports this module without it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib.domain.model import (
    HUB_SCHEME,
    HUGGING_FACE_TASKS,
    hub_token,
    hub_uri,
    is_hub_uri,
    parse_hub_uri,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "HUB_SCHEME",
    "PIPELINE_TASKS",
    "HubCheck",
    "HubModelError",
    "check_hub_model",
    "download_hub_model",
    "fetch_model",
    "hub_endpoint",
    "hub_token",
    "hub_uri",
    "is_hub_uri",
    "parse_hub_uri",
]

DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_SECONDS = 20.0
# What the Python runtime reads (serving/runtimes/python/huggingface_model.py): weights,
# configs, tokenizers. ``*`` crosses '/' in these patterns, hence "*/*" among the refused.
SERVED_PATTERNS = (
    "*.safetensors",
    "*.json",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "tokenizer*",
    "spiece.model",
    "merges.txt",
    "vocab*",
)
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.pkl", "*.pickle")
REFUSED_PATTERNS = (*PICKLE_PATTERNS, "*/*")  # never pickles; only the repo's top folder
# The hub's pipeline tags of the tasks served here (HUGGING_FACE_TASKS).
PIPELINE_TASKS = {
    "text-classification": "sequence_classification",
    "token-classification": "token_classification",
    "fill-mask": "fill_mask",
    "text-generation": "text_generation",
    "text2text-generation": "text2text_generation",
}
WEIGHT_SUFFIXES = (
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".pkl",
    ".pickle",
    ".onnx",
    ".gguf",
)


class HubModelError(Exception):
    """A hub model that cannot be served here; the message is the reason (secret-free)."""


@dataclass(frozen=True)
class HubCheck:
    """What the tick's check found: why the model cannot be served (None when it can), and
    the task its pipeline tag names when the model was created without one."""

    problem: str | None = None
    task: str | None = None


def hub_endpoint() -> str:
    """The hub's base URL, without a trailing slash."""
    endpoint = os.environ.get("OPENMAKER_HF_ENDPOINT") or os.environ.get("HF_ENDPOINT")
    return (endpoint or DEFAULT_ENDPOINT).rstrip("/")


def check_hub_model(
    model_id: str, revision: str | None, token: str | None, task: str | None = None
) -> HubCheck:
    """Whether the hub model can be served here, and its task.

    Lists the repo's files through the hub API (and, for a gated repo, asks for the first
    weights file with ``token``): refused when the repo or revision does not exist, when it
    is gated or private and the token is missing or lacks access, when it has no
    ``*.safetensors`` weights in its top folder, or when the hub cannot be reached. Without a
    ``task``, the repo's ``pipeline_tag`` names it (:data:`PIPELINE_TASKS`); another tag, or
    none, is refused. Never raises; the reason never holds the token.
    """
    endpoint = hub_endpoint()
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.file_download import get_hf_file_metadata, hf_hub_url

        info = HfApi(endpoint=endpoint, token=False).model_info(
            model_id, revision=revision, timeout=TIMEOUT_SECONDS, token=token or False
        )
        files = [sibling.rfilename for sibling in info.siblings or []]
        weights = sorted(f for f in files if "/" not in f and f.endswith(".safetensors"))
        if not weights:
            return HubCheck(_no_safetensors(model_id, files))
        if info.gated:  # the hub lists a gated repo to anyone; its files need the token
            url = hf_hub_url(model_id, weights[0], revision=info.sha, endpoint=endpoint)
            get_hf_file_metadata(
                url, token=token or False, timeout=TIMEOUT_SECONDS, endpoint=endpoint
            )
    except Exception as exc:  # noqa: BLE001 - every failure is the model's reason
        return HubCheck(_hub_failure(exc, model_id, revision, token, endpoint))
    if task is not None:
        return HubCheck()
    return _pipeline_task(model_id, info.pipeline_tag)


def download_hub_model(uri: str, dest: Path, token: str | None) -> Path:
    """Download the served files of the ``hf://`` model ``uri`` into the directory ``dest``.

    Only :data:`SERVED_PATTERNS` of the repo's top folder are fetched, never pickle-format
    weights; the hub's cache goes to a temporary folder and its bookkeeping in ``dest`` is
    removed, so ``dest`` holds the repo's served files only.

    Raises:
        HubModelError: the URI is not a hub model's, the hub refused or could not be
            reached, or no ``*.safetensors`` weights were downloaded.
    """
    try:
        model_id, revision = parse_hub_uri(uri)
    except ValueError as exc:
        raise HubModelError(str(exc)) from None
    endpoint = hub_endpoint()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        from huggingface_hub import snapshot_download

        with tempfile.TemporaryDirectory(prefix="openmaker-hf-cache-") as cache:
            snapshot_download(
                model_id,
                revision=revision,
                local_dir=dest,
                cache_dir=cache,
                token=token or False,
                endpoint=endpoint,
                allow_patterns=list(SERVED_PATTERNS),
                ignore_patterns=list(REFUSED_PATTERNS),
                etag_timeout=TIMEOUT_SECONDS,
                max_workers=4,
            )
    except Exception as exc:  # noqa: BLE001 - re-raised as the reason, the token scrubbed
        raise HubModelError(_hub_failure(exc, model_id, revision, token, endpoint)) from None
    shutil.rmtree(dest / ".cache" / "huggingface", ignore_errors=True)  # the hub's bookkeeping
    with contextlib.suppress(OSError):
        (dest / ".cache").rmdir()  # when nothing else is in it
    if not any(dest.glob("*.safetensors")):
        raise HubModelError(
            f"Hugging Face model {model_id}: no *.safetensors weights were downloaded from "
            f"{endpoint}; only safetensors weights are served"
        )
    return dest


def fetch_model(uri: str, dest: Path, parameters: Iterable[tuple[str, str]]) -> None:
    """A pod's artifact into ``dest``: a hub model's files (with its ``hf_token``
    parameter), or whatever a storage URI names."""
    if is_hub_uri(uri):
        download_hub_model(uri, dest, hub_token(parameters))
        return
    from chalicelib.objectstore.transfer import download_uri

    download_uri(uri, dest)


# -- reasons ----------------------------------------------------------------------------


def _pipeline_task(model_id: str, tag: str | None) -> HubCheck:
    """The task a repo's pipeline tag names, or why it names none served here."""
    found = PIPELINE_TASKS.get(tag or "")
    if found is not None:
        return HubCheck(task=found)
    said = "it has no pipeline tag on the hub"
    if tag:
        said = f"its pipeline tag {tag[:64]!r} is not a task served here"
    tasks = ", ".join(HUGGING_FACE_TASKS)
    return HubCheck(
        f"Hugging Face model {model_id}: {said}; give a task parameter, one of {tasks}"
    )


def _no_safetensors(model_id: str, files: list[str]) -> str:
    top = [f for f in files if "/" not in f]
    pickles = sorted(f for f in top if f.endswith(WEIGHT_SUFFIXES))
    has = f"this repo has {', '.join(pickles[:5])}" if pickles else "this repo has no weights"
    return (
        f"Hugging Face model {model_id}: only safetensors weights are served; {has} "
        "and no *.safetensors file in its top folder"
    )[:1000]


def _hub_failure(
    exc: BaseException, model_id: str, revision: str | None, token: str | None, endpoint: str
) -> str:
    """A reason for a failed hub call, naming the endpoint and never the token."""
    return _scrub(_describe(_root_cause(exc), model_id, revision, token, endpoint), token)[:1000]


def _root_cause(exc: BaseException) -> BaseException:
    """snapshot_download wraps a failed listing in LocalEntryNotFoundError: its cause."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    if isinstance(exc, LocalEntryNotFoundError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def _describe(
    exc: BaseException, model_id: str, revision: str | None, token: str | None, endpoint: str
) -> str:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RevisionNotFoundError,
    )

    status = _status(exc) if isinstance(exc, HfHubHTTPError) else None
    if isinstance(exc, RevisionNotFoundError):
        return f"revision {revision} of Hugging Face model {model_id} does not exist on {endpoint}"
    if isinstance(exc, GatedRepoError) or status in (401, 403):
        answered = "to the hf_token given" if token else "without a token"
        return (
            f"gated model: give an hf_token parameter with access to {model_id} (the hub at "
            f"{endpoint} answered {status or 'access denied'} {answered}; a private repo "
            "answers the same)"
        )
    if status == 404:
        return f"Hugging Face model {model_id} does not exist on {endpoint}"
    if status is not None:
        return f"the Hugging Face hub at {endpoint} answered HTTP {status} for {model_id}"
    if isinstance(exc, OfflineModeIsEnabled | ConnectionError | TimeoutError) or _is_transport(
        exc
    ):
        return f"the Hugging Face hub at {endpoint} cannot be reached: {type(exc).__name__}"
    return f"Hugging Face model {model_id} could not be fetched: {type(exc).__name__}: {exc}"


def _status(exc: Any) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return int(code) if code is not None else None


def _is_transport(exc: BaseException) -> bool:
    """A connection, proxy or timeout failure of the hub's HTTP client."""
    try:
        import httpx2
    except ImportError:
        return False
    return isinstance(exc, httpx2.TransportError)


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text
