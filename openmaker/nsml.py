"""The NSML way: ``openmaker run main.py -- --epochs 3``, ``ps``, ``logs``, ``stop``.

``run`` packs a folder (the current one by default) into a zip, uploads it with
``POST /uploads``, creates a training whose entry point is the given file and whose
hyperparameters are the ``--name value`` arguments after ``--``, then follows it: a spinner
until it runs, its log lines as they come (``[source] body``, stderr lines on stderr), and an
exit status from how it ended (0 COMPLETE, 1 failed or stopped, 130 on Ctrl-C after stopping
it). Inside the job, ``from openmaker import job`` reports metrics and saves checkpoints.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TextIO

from openmaker.client import ApiError, Client, CliError

if TYPE_CHECKING:  # rich is imported when a command prints, not when the parser is built
    from rich.console import Console

MAX_UPLOAD_BYTES = 256 * 2**20  # what POST /uploads accepts
SKIP_DIRS = frozenset({".git", "__pycache__", ".venv", "venv", "node_modules"})
SKIP_SUFFIXES = (".pyc",)

DEFAULT_EXPERIMENT = "nsml"
DEFAULT_FLAVOR = "m2.c1m2"
DEFAULT_IMAGE = "Ubuntu 22.04 CPU PyTorch Training"
MODEL_URI = "upload://{appkey}/runs/{{trainingId}}/model"
CHECKPOINT_URI = "upload://{appkey}/runs/{{trainingId}}/checkpoints"

# The training lifecycle (chalicelib.domain.states.TRAINING), as the wire spells it.
STARTING = frozenset({"CREATE_REQUESTED", "CREATE_IN_PROGRESS"})
TERMINAL = frozenset({"COMPLETE", "STOPPED", "FAIL_TRAIN", "CREATE_FAILED"})
ACTIVE = (
    "CREATE_REQUESTED",
    "CREATE_IN_PROGRESS",
    "RUNNING",
    "COMPLETE_IN_PROGRESS",
    "STOP_IN_PROGRESS",
    "FAIL_TRAIN_IN_PROGRESS",
)

POLL_SECONDS = 0.5
FOLLOW_WAIT_SECONDS = 10.0
DRAIN_SECONDS = 1.0  # the last lines land just after the training is settled
INTERRUPTED = 130

PARAMETER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
DATASET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,35}$")
RESOURCE_NAME_MAX = 50


def is_terminal(status: str) -> bool:
    return status in TERMINAL or (status.startswith("FAIL_") and not status.endswith("_PROGRESS"))


def is_failure(status: str) -> bool:
    return status == "CREATE_FAILED" or (
        status.startswith("FAIL_") and not status.endswith("_PROGRESS")
    )


# --------------------------------------------------------------------------- arguments


def parse_hyperparameters(args: Sequence[str]) -> list[dict[str, str]]:
    """``--key value`` pairs (or ``--key=value``) and lone ``--flag`` (value ``"true"``) as
    the API's ``hyperparameterList``; anything else is a :class:`CliError`."""
    values: dict[str, str] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--") or arg == "--":
            raise CliError(
                f"the arguments after -- are hyperparameters, `--name value` or `--flag`; "
                f"{arg!r} is neither"
            )
        name, equals, value = arg[2:].partition("=")
        if not equals:
            following = args[index + 1] if index + 1 < len(args) else None
            if following is not None and not following.startswith("--"):
                value = following
                index += 1
            else:
                value = "true"
        if not PARAMETER_NAME.match(name) or len(name) > 64:
            raise CliError(
                f"hyperparameter name {name!r} (from {arg!r}) must start with a letter and "
                "hold only letters, digits, '_' and '-' (at most 64)"
            )
        if name in values:
            raise CliError(f"hyperparameter --{name} is given twice")
        values[name] = value
        index += 1
    return [{"parameterName": k, "parameterValue": v} for k, v in values.items()]


def parse_datasets(items: Iterable[str]) -> list[dict[str, str]]:
    """``-d NAME=URI`` options as the API's ``datasetList``."""
    datasets: list[dict[str, str]] = []
    seen: set[str] = set()
    for item in items:
        name, equals, uri = item.partition("=")
        name, uri = name.strip(), uri.strip()
        if not equals or not name or not uri:
            raise CliError(f"a dataset is NAME=URI (e.g. train=s3://bucket/train), not {item!r}")
        if not DATASET_NAME.match(name):
            raise CliError(
                f"dataset name {name!r} must start with a letter and hold only letters, "
                "digits, '_' and '-' (at most 36)"
            )
        key = name.upper().replace("-", "_")
        if key in seen:
            raise CliError(f"dataset {name!r} is given twice")
        seen.add(key)
        datasets.append({"datasetName": name, "dataUri": uri})
    return datasets


def slug(text: str, fallback: str = "run") -> str:
    """``text`` as a resource name: letters, digits, '-' and '_', at most 50 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")
    cleaned = re.sub(r"^[^A-Za-z0-9]+", "", cleaned)[:RESOURCE_NAME_MAX].rstrip("-_")
    return cleaned or fallback


def default_name(folder: Path, now: datetime | None = None) -> str:
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{slug(folder.name)[: RESOURCE_NAME_MAX - len(stamp) - 1]}-{stamp}"


# ---------------------------------------------------------------------------- packing


@dataclass
class Packed:
    """A folder as a zip: its bytes and what went in."""

    data: bytes
    files: list[str] = field(default_factory=list)
    raw_bytes: int = 0


def _entry_path(entry: str) -> PurePosixPath:
    path = PurePosixPath(entry.replace(os.sep, "/"))
    if not entry or path.is_absolute() or ".." in path.parts:
        raise CliError(f"the entry file must be a path inside the folder, not {entry!r}")
    return path


def _too_big(limit: int, sizes: dict[str, int]) -> CliError:
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:3]
    listed = ", ".join(f"{name} ({size / 2**20:.1f} MiB)" for name, size in largest)
    return CliError(
        f"the folder packs to more than {limit / 2**20:g} MiB, the upload limit; move large "
        f"files out of it (datasets go in with -d NAME=URI). Largest files: {listed}"
    )


def _included(folder: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            path = Path(root) / name
            if not name.endswith(SKIP_SUFFIXES) and path.is_file():
                yield path


def pack_folder(folder: Path, entry: str, *, limit: int = MAX_UPLOAD_BYTES) -> Packed:
    """Zip ``folder`` in memory, skipping :data:`SKIP_DIRS` and ``*.pyc``; refuse when the
    entry file is not in it or when the zip would be larger than ``limit`` bytes."""
    folder = folder.resolve()
    if not folder.is_dir():
        raise CliError(f"{folder} is not a folder")
    relative = _entry_path(entry)
    if not (folder / relative).is_file():
        raise CliError(f"the entry file {entry} is not in {folder} (--dir picks another folder)")
    if any(part in SKIP_DIRS for part in relative.parts[:-1]) or entry.endswith(SKIP_SUFFIXES):
        raise CliError(f"the entry file {entry} is in a part of the folder that is not packed")
    buffer = io.BytesIO()
    packed = Packed(data=b"")
    sizes: dict[str, int] = {}
    with zipfile.ZipFile(
        buffer, "w", compression=zipfile.ZIP_DEFLATED, strict_timestamps=False
    ) as archive:
        for path in _included(folder):
            name = path.relative_to(folder).as_posix()
            try:
                archive.write(path, name)
            except OSError as exc:
                raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
            sizes[name] = path.stat().st_size
            packed.files.append(name)
            packed.raw_bytes += sizes[name]
            if buffer.tell() > limit:
                raise _too_big(limit, sizes)
    packed.data = buffer.getvalue()
    if len(packed.data) > limit:
        raise _too_big(limit, sizes)
    return packed


# ----------------------------------------------------------------------------- output


def err_console() -> Console:
    """stderr, for what is not the training's own output; long lines are never re-wrapped."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def out_console() -> Console:
    """stdout; wide when it is not a terminal, so table rows never fold into two lines."""
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, 200))
    return console


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 2**20:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 2**20:.1f} MiB"


def duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def local_time(value: Any) -> str:
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _style(status: str) -> str:
    if status == "COMPLETE":
        return "green"
    if is_failure(status):
        return "red"
    if status == "STOPPED":
        return "yellow"
    return "cyan"


def emit_records(records: Iterable[dict[str, Any]], out: TextIO, err: TextIO) -> None:
    """Log records as ``[source] body`` lines; stderr-stream lines go to ``err``."""
    for record in records:
        stream = err if record.get("stream") == "stderr" else out
        stream.write(f"[{record.get('source', '?')}] {record.get('body', '')}\n")
        stream.flush()


# ---------------------------------------------------------------------------- watching


def wait_for(
    client: Client,
    training_id: str,
    done: Callable[[str], bool],
    console: Console,
    label: str,
    *,
    shown: str = "",
) -> dict[str, Any]:
    """Poll the training (spinner on ``console``) until ``done(status)``; return it. Each new
    status is printed once (``shown``: the one already printed)."""
    last = shown
    with console.status(f"{label} ...", spinner="dots") as spinner:
        while True:
            training = client.training(training_id)
            status = str(training["trainingStatusCode"])
            if status != last:
                console.print(f"[dim]{training_id}: {status}[/dim]")
                spinner.update(f"{label}: {status}")
                last = status
            if done(status):
                return training
            time.sleep(POLL_SECONDS)


def stream_logs(
    client: Client,
    training_id: str,
    *,
    follow: bool,
    out: TextIO,
    err: TextIO,
) -> str:
    """Print the training's log from the start; with ``follow``, until it has ended.
    Returns the last status the log API reported."""
    cursor: str | None = None
    while True:
        page = client.training_log(
            training_id, cursor=cursor, follow=follow, wait_seconds=FOLLOW_WAIT_SECONDS
        )
        records = page.get("logList") or []
        emit_records(records, out, err)
        cursor = page.get("nextCursor") or cursor
        status = str(page.get("trainingStatusCode", ""))
        if records:
            continue
        if not follow or is_terminal(status):
            break
    if follow:  # the driver writes its last lines just after it settled the status
        time.sleep(DRAIN_SECONDS)
        while True:
            page = client.training_log(training_id, cursor=cursor)
            records = page.get("logList") or []
            if not records:
                break
            emit_records(records, out, err)
            cursor = page.get("nextCursor") or cursor
    return status


def report_end(training: dict[str, Any], console: Console) -> int:
    """One line on how the training ended; the exit status of ``run``/``train --wait``."""
    status = str(training["trainingStatusCode"])
    training_id = training["trainingId"]
    reason = training.get("statusReason")
    elapsed = duration(training.get("elapsedTimeSeconds"))
    if status == "COMPLETE":
        console.print(f"[green]training {training_id} COMPLETE[/green] in {elapsed}")
        return 0
    console.print(f"[red]training {training_id} ended {status}[/red]", end="")
    console.print(f": {reason}" if reason else "", markup=False, soft_wrap=True)
    return 1


def _stop_and_wait(client: Client, training_id: str, console: Console) -> int:
    console.print(f"interrupted: stopping training {training_id} (Ctrl-C again to stop waiting)")
    try:
        client.stop_training(training_id)
    except ApiError as exc:
        console.print(f"stop: {exc.message}", markup=False)
    try:
        training = wait_for(client, training_id, is_terminal, console, "stopping")
    except KeyboardInterrupt:
        console.print(f"not waiting; `openmaker ps -a` shows training {training_id}")
        return INTERRUPTED
    console.print(f"training {training_id} {training['trainingStatusCode']}")
    return INTERRUPTED


def follow_training(
    client: Client, training_id: str, console: Console, out: TextIO, err: TextIO
) -> int:
    """Spinner until it runs, then its log lines until it ends; Ctrl-C stops it (130)."""
    try:
        started = wait_for(client, training_id, lambda s: s not in STARTING, console, "starting")
        last = str(started["trainingStatusCode"])
        last = stream_logs(client, training_id, follow=True, out=out, err=err) or last
        training = wait_for(client, training_id, is_terminal, console, "finishing", shown=last)
    except KeyboardInterrupt:
        return _stop_and_wait(client, training_id, console)
    return report_end(training, console)


# ------------------------------------------------------------------------------ commands


@dataclass
class RunOptions:
    entry: str
    script_args: list[str] = field(default_factory=list)
    folder: Path | None = None
    experiment: str = DEFAULT_EXPERIMENT
    flavor: str = DEFAULT_FLAVOR
    image: str = DEFAULT_IMAGE
    nodes: int = 1
    datasets: list[str] = field(default_factory=list)
    name: str | None = None
    timeout_minutes: int | None = None
    detach: bool = False


def training_body(options: RunOptions, appkey: str, source_uri: str) -> dict[str, Any]:
    """The ``POST /trainings`` body of a run (flavor and image already ids)."""
    folder = (options.folder or Path.cwd()).resolve()
    body: dict[str, Any] = {
        "trainingName": options.name or default_name(folder),
        "experimentName": options.experiment,
        "imageId": options.image,
        "flavorId": options.flavor,
        "instanceCount": options.nodes,
        "sourceDirUri": source_uri,
        "entryPoint": _entry_path(options.entry).as_posix(),
        "hyperparameterList": parse_hyperparameters(options.script_args),
        "datasetList": parse_datasets(options.datasets),
        "modelUploadUri": MODEL_URI.format(appkey=appkey),
        "checkPointUploadUri": CHECKPOINT_URI.format(appkey=appkey),
        "tagList": [{"tagKey": "origin", "tagValue": "nsml"}],
    }
    if options.timeout_minutes:
        body["timeoutMinutes"] = options.timeout_minutes
    return body


def _sigint_raises() -> None:
    """Ctrl-C must reach us as KeyboardInterrupt even when started with SIGINT ignored."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run(client: Client, options: RunOptions) -> int:
    """``openmaker run``: pack, upload, create, then follow (unless ``detach``)."""
    _sigint_raises()
    console = err_console()
    folder = (options.folder or Path.cwd()).resolve()
    if options.nodes < 1:
        raise CliError("--nodes must be at least 1")
    # Every argument is checked before anything is uploaded.
    parse_hyperparameters(options.script_args)
    parse_datasets(options.datasets)
    try:
        packed = pack_folder(folder, options.entry)
        console.print(
            f"packed {len(packed.files)} file(s) from {folder} ({human_size(len(packed.data))})",
            markup=False,
        )
        flavor_id = client.flavor_id(options.flavor)
        image_id = client.image_id(options.image)
        upload = client.upload("source.zip", packed.data)
        resolved = replace(options, flavor=flavor_id, image=image_id, folder=folder)
        body = training_body(resolved, client.connection.appkey, str(upload["uri"]))
        training = client.create_training(body)
    except KeyboardInterrupt:
        console.print("interrupted: no training was created")
        return INTERRUPTED
    training_id = str(training["trainingId"])
    console.print(
        f"training {training_id} ({training['trainingName']}) created in experiment "
        f"{options.experiment}",
        markup=False,
    )
    if options.detach:
        print(training_id, flush=True)
        console.print(f"follow it with: openmaker logs -f {training_id}", markup=False)
        return 0
    return follow_training(client, training_id, console, sys.stdout, sys.stderr)


def ps(client: Client, *, show_all: bool, limit: int) -> int:
    """``openmaker ps``: a table of the running trainings (all with ``-a``), newest first."""
    query: dict[str, Any] = {"limit": limit}
    if not show_all:
        query["trainingStatusCodeList"] = list(ACTIVE)
    from rich import box
    from rich.table import Table

    trainings = client.trainings(**query)
    console = out_console()
    if not trainings:
        empty = "no trainings" if show_all else "no running trainings (`ps -a` lists all)"
        console.print(empty, markup=False)
        return 0
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("ID", "NAME", "STATUS", "ELAPSED", "CREATED"):
        table.add_column(column, no_wrap=True)
    for training in trainings:
        status = str(training["trainingStatusCode"])
        table.add_row(
            str(training["trainingId"]),
            str(training["trainingName"]),
            f"[{_style(status)}]{status}[/]",
            duration(training.get("elapsedTimeSeconds")),
            local_time(training.get("createdDatetime")),
        )
    console.print(table)
    return 0


def logs(client: Client, training_id: str, *, follow: bool) -> int:
    """``openmaker logs [-f] ID``: the log so far (with ``-f``, until the training ends)."""
    try:
        stream_logs(client, training_id, follow=follow, out=sys.stdout, err=sys.stderr)
    except KeyboardInterrupt:
        return INTERRUPTED
    return 0


def stop(client: Client, training_id: str, *, wait: bool) -> int:
    """``openmaker stop ID``: ask the training to stop (with ``--wait``, until it has)."""
    training = client.stop_training(training_id)
    console = err_console()
    console.print(f"training {training_id}: {training['trainingStatusCode']}", markup=False)
    if wait and not is_terminal(str(training["trainingStatusCode"])):
        training = wait_for(client, training_id, is_terminal, console, "stopping")
        console.print(f"training {training_id}: {training['trainingStatusCode']}", markup=False)
    return 0
