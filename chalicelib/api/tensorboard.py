"""TensorBoard access: tickets for browsers, and which log directories a board shows.

A browser cannot send the API token with a plain link, so the console asks for a ticket
(``POST /tensorboard-tickets``): a short-lived, HMAC-signed value bound to the appkey and to
one training, experiment or hyperparameter tuning. Opening
``{tensorboardAccessUri}?ticket=...`` exchanges it for an HttpOnly, SameSite=Strict cookie
scoped to that board's path (see ``openmaker.tensorboard``, which proxies ``/tensorboard/``
to a TensorBoard process started on demand).

The signing key lives in a 0600 file of its own under ``OPENMAKER_HOME`` (not the runner
secret, which the runner nodes can read).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import StringConstraints, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from chalicelib.api.envelope import RequestContext, ResourceApi
from chalicelib.config import get_settings
from chalicelib.domain.common import WireDatetime, WireModel
from chalicelib.errors import UnauthorizedError
from chalicelib.store import models
from chalicelib.store.repository import get_owned

api = ResourceApi(__name__, "tensorboard")

Kind = Literal["training", "experiment", "hyperparameter-tuning"]
# The path segment of each board kind (``/tensorboard/{segment}/{id}/``).
KINDS: dict[str, Kind] = {
    "trainings": "training",
    "experiments": "experiment",
    "hyperparameter-tunings": "hyperparameter-tuning",
}
# The resource behind each kind, and what a 404 calls it.
RESOURCES: dict[Kind, tuple[Any, str]] = {
    "training": (models.Training, "training"),
    "experiment": (models.Experiment, "experiment"),
    "hyperparameter-tuning": (models.HyperparameterTuning, "hyperparameter tuning"),
}
TICKET = "ticket"
COOKIE = "cookie"
COOKIE_NAME = "om_tb"
TICKET_SECONDS = 60
COOKIE_SECONDS = 12 * 3600
SECRET_FILE_NAME = "tensorboard.secret"
# Where an experiment without trainings (a tuning without trials) points TensorBoard: a
# directory nobody writes.
EMPTY_LOGDIR = ".no-trainings"

ResourceId = Annotated[str, StringConstraints(min_length=1, max_length=36)]


class TensorBoardTicketCreate(WireModel):
    """Exactly one of ``trainingId``, ``experimentId`` and ``hyperparameterTuningId``."""

    training_id: ResourceId | None = None
    experiment_id: ResourceId | None = None
    hyperparameter_tuning_id: ResourceId | None = None

    @model_validator(mode="after")
    def _one_resource(self) -> TensorBoardTicketCreate:
        if len(self.boards()) != 1:
            raise ValueError(
                "give exactly one of trainingId, experimentId and hyperparameterTuningId"
            )
        return self

    def boards(self) -> list[tuple[Kind, str]]:
        """The (kind, id) pairs the body names."""
        named: list[tuple[Kind, str | None]] = [
            ("training", self.training_id),
            ("experiment", self.experiment_id),
            ("hyperparameter-tuning", self.hyperparameter_tuning_id),
        ]
        return [(kind, resource_id) for kind, resource_id in named if resource_id is not None]


class TensorBoardTicket(WireModel):
    url: str
    expires_at: WireDatetime


def board_path(kind: Kind, resource_id: str) -> str:
    """The path prefix a board is served under (TensorBoard's ``--path_prefix``)."""
    return f"/tensorboard/{kind}s/{resource_id}"


# --- signed tickets and cookies ------------------------------------------------------------

_secrets: dict[Path, bytes] = {}
_secrets_lock = threading.Lock()


def secret_file() -> Path:
    return get_settings().home / SECRET_FILE_NAME


def _create_secret(path: Path) -> None:
    """Write the key to a private temporary file and link it into place: several server
    workers may race here, and none ever reads a half-written key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        with contextlib.suppress(FileExistsError):  # another worker won: its key is the key
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _secret() -> bytes:
    path = secret_file()
    with _secrets_lock:
        key = _secrets.get(path)
        if key is None:
            if not path.exists():
                _create_secret(path)
            key = path.read_bytes().strip()
            _secrets[path] = key
        return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(purpose: str, body: str) -> str:
    return _b64(hmac.new(_secret(), f"{purpose}.{body}".encode(), hashlib.sha256).digest())


def sign(
    purpose: str,
    appkey: str,
    kind: Kind,
    resource_id: str,
    seconds: int,
    now: float | None = None,
) -> tuple[str, int]:
    """A value only this platform can make: ``{payload}.{mac}``, and when it expires."""
    expires = int((time.time() if now is None else now) + seconds)
    payload = {"a": appkey, "k": kind, "r": resource_id, "x": expires}
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{_mac(purpose, body)}", expires


def verify(
    purpose: str, value: str, kind: Kind, resource_id: str, now: float | None = None
) -> str:
    """The appkey a ticket or cookie was issued to; 401 if it is forged, expired or was
    issued for another board. The value itself is never echoed."""
    refused = UnauthorizedError(f"the tensorboard {purpose} is invalid or has expired")
    body, _, mac = value.partition(".")
    if not body or not mac or not hmac.compare_digest(mac, _mac(purpose, body)):
        raise refused
    try:
        payload = json.loads(_unb64(body))
        appkey, issued_kind = str(payload["a"]), payload["k"]
        issued_resource, expires = payload["r"], int(payload["x"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise refused from None
    if issued_kind != kind or issued_resource != resource_id:
        raise refused
    if expires <= (time.time() if now is None else now):
        raise refused
    return appkey


# --- which runs a board shows --------------------------------------------------------------


def training_logdir(appkey: str, training_id: str) -> Path:
    """``EM_TENSORBOARD_LOG_DIR`` of a training (``runners.nodejob.tensorboard_dir``)."""
    return get_settings().storage_root / "tensorboard" / appkey / training_id


def owner_of(session: Session, kind: Kind, resource_id: str) -> str | None:
    """The appkey that owns a board's resource, or None when there is none."""
    model = RESOURCES[kind][0]
    found: str | None = session.scalar(select(model.appkey).where(model.id == resource_id))
    return found


def _get_owned(session: Session, appkey: str, kind: Kind, resource_id: str) -> None:
    model, label = RESOURCES[kind]
    get_owned(session, model, appkey, resource_id, label)


def logdirs(
    session: Session, appkey: str, kind: Kind, resource_id: str
) -> tuple[tuple[str, str], ...]:
    """(run name, directory) pairs of a board; 404 unless ``appkey`` owns the resource.

    A training's board reads its own directory (a single pair with no name); an
    experiment's board reads each of its trainings' directories, named by training name; a
    hyperparameter tuning's board reads each of its trials' directories, named
    ``trial-{number}`` as the trial list names them.
    """
    _get_owned(session, appkey, kind, resource_id)
    if kind == "training":
        return (("", str(training_logdir(appkey, resource_id))),)
    runs = RUNS[kind](session, appkey, resource_id)
    if not runs:
        empty = get_settings().storage_root / "tensorboard" / EMPTY_LOGDIR
        return (("", str(empty)),)
    return tuple((name, str(training_logdir(appkey, run_id))) for name, run_id in runs)


def _experiment_runs(session: Session, appkey: str, experiment_id: str) -> list[tuple[str, str]]:
    """(run name, training id) of an experiment's trainings; a repeated name gets the id."""
    rows = session.execute(
        select(models.Training.id, models.Training.name)
        .where(models.Training.appkey == appkey, models.Training.experiment_id == experiment_id)
        .order_by(models.Training.created_at, models.Training.id)
    ).all()
    runs: list[tuple[str, str]] = []
    used: set[str] = set()
    for training_id, name in rows:
        run = name if name not in used else f"{name}-{training_id[:8]}"
        used.add(run)
        runs.append((run, training_id))
    return runs


def _tuning_runs(session: Session, appkey: str, tuning_id: str) -> list[tuple[str, str]]:
    """(run name, trial id) of a tuning's trials. A trial runs as a training whose id is the
    trial's (``runners.tuning.trial.trial_job``), so its ``EM_TENSORBOARD_LOG_DIR`` is
    :func:`training_logdir` of the trial id."""
    rows = session.execute(
        select(models.Trial.id, models.Trial.number)
        .where(models.Trial.tuning_id == tuning_id)
        .order_by(models.Trial.number)
    ).all()
    return [(f"trial-{number}", trial_id) for trial_id, number in rows]


RUNS: dict[Kind, Callable[[Session, str, str], list[tuple[str, str]]]] = {
    "experiment": _experiment_runs,
    "hyperparameter-tuning": _tuning_runs,
}


# --- the route -----------------------------------------------------------------------------


@api.route(
    "/tensorboard-tickets",
    "POST",
    summary=(
        "A one-minute ticket that opens a training's, experiment's or hyperparameter "
        "tuning's TensorBoard"
    ),
    body=TensorBoardTicketCreate,
    response_key="tensorboardTicket",
    response_model=TensorBoardTicket,
    status=201,
)
def create_tensorboard_ticket(
    ctx: RequestContext, body: TensorBoardTicketCreate
) -> TensorBoardTicket:
    ((kind, resource_id),) = body.boards()
    _get_owned(ctx.session, ctx.appkey, kind, resource_id)
    ticket, expires = sign(TICKET, ctx.appkey, kind, resource_id, TICKET_SECONDS)
    url = f"{get_settings().public_url}{board_path(kind, resource_id)}/?ticket={ticket}"
    return TensorBoardTicket(url=url, expires_at=datetime.fromtimestamp(expires, tz=UTC))
