"""TensorBoard on demand, behind the platform's own authentication.

``tensorboardAccessUri`` of a training, an experiment or a hyperparameter tuning is
``/tensorboard/{kind}s/{id}/`` on the platform. :class:`TensorBoardProxy` answers those paths
before Chalice routing: it authenticates the caller (an API token header, or the cookie a
ticket was exchanged for), checks that the board's resource belongs to the caller's appkey,
asks the :class:`TensorBoardManager` of this server worker for a TensorBoard over the
resource's ``EM_TENSORBOARD_LOG_DIR`` directories, and streams the request to it over
loopback.

Each TensorBoard is a child process (``python -m openmaker.tensorboard``: TensorBoard's own
server, plus a watch that ends it when the worker that started it is gone) listening on
127.0.0.1 under ``--path_prefix /tensorboard/{kind}s/{id}``. It is started on the first
request, reused while in use, stopped after ``idle_seconds`` without a request, and at most
``max_boards`` run at once per worker (the least recently used one makes room).

Tickets never reach TensorBoard or a log: a ticket request is answered here with a cookie and
a redirect to the same path without the ticket, and logged URLs leave the query out.
"""

from __future__ import annotations

import atexit
import http.client
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, quote, urlencode

from chalicelib.api import tensorboard as boards
from chalicelib.config import get_settings
from chalicelib.errors import (
    ForbiddenError,
    MethodNotAllowedError,
    NotFoundError,
    OpenMakerError,
    UnauthorizedError,
)
from chalicelib.observability import logger
from chalicelib.services import auth
from chalicelib.store.db import get_database

IDLE_SECONDS = 600.0
REAP_EVERY_SECONDS = 30.0
MAX_BOARDS = 8
START_TIMEOUT_SECONDS = 30.0
RELOAD_INTERVAL_SECONDS = 5
PROXY_TIMEOUT_SECONDS = 120.0
READY_MARK = "OPENMAKER-TENSORBOARD-READY"
CHUNK = 64 * 1024
REPO_ROOT = Path(__file__).resolve().parents[1]

Logdirs = tuple[tuple[str, str], ...]
Spawn = Callable[[list[str], Path | None], "subprocess.Popen[bytes]"]


class TensorBoardStartError(RuntimeError):
    """A TensorBoard did not come up (its own error output is in its log file)."""


def tensorboard_args(kind: str, resource_id: str, logdirs: Logdirs) -> list[str]:
    """TensorBoard's flags: one unnamed directory is ``--logdir``, else ``--logdir_spec``."""
    if len(logdirs) == 1 and not logdirs[0][0]:
        source = ["--logdir", logdirs[0][1]]
    else:
        source = ["--logdir_spec", ",".join(f"{name}:{path}" for name, path in logdirs)]
    return [
        *source,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--path_prefix",
        f"/tensorboard/{kind}s/{resource_id}",
        "--reload_interval",
        str(RELOAD_INTERVAL_SECONDS),
        "--load_fast",
        "false",
        "--window_title",
        f"{kind} {resource_id}",
    ]


def child_command(kind: str, resource_id: str, logdirs: Logdirs) -> list[str]:
    """``python -m openmaker.tensorboard --parent PID -- <tensorboard flags>``."""
    return [
        sys.executable,
        "-m",
        "openmaker.tensorboard",
        "--parent",
        str(os.getpid()),
        "--",
        *tensorboard_args(kind, resource_id, logdirs),
    ]


def _spawn(command: list[str], log_path: Path | None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        stderr: Any = log_path.open("ab")
    else:
        stderr = subprocess.DEVNULL
    try:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            close_fds=True,
        )
    finally:
        if log_path is not None:
            stderr.close()


def _read_ready_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """The URL the child prints once its server listens; fail if it exits or takes too long."""
    stream: IO[bytes] | None = process.stdout
    if stream is None:
        raise TensorBoardStartError("the TensorBoard child has no output pipe")
    deadline = time.monotonic() + timeout
    buffered = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            break
        buffered += chunk
        for line in buffered.decode(errors="replace").splitlines():
            if line.startswith(READY_MARK):
                return line[len(READY_MARK) :].strip()
    try:  # output closed: it is exiting (or was silent until the deadline)
        code = process.wait(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
        code = None
    if code is not None:
        raise TensorBoardStartError(f"TensorBoard exited with {code} before it was ready")
    raise TensorBoardStartError(f"TensorBoard was not ready within {timeout:.0f} s")


def _port_of(url: str) -> int:
    hostport = url.split("://", 1)[-1].split("/", 1)[0]
    return int(hostport.rsplit(":", 1)[1])


@dataclass
class _Board:
    key: tuple[str, str]
    logdirs: Logdirs
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    last_used: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class TensorBoardManager:
    """The TensorBoard children of one server worker process (thread-safe).

    ``spawn`` and ``wait_ready`` are the seams tests replace; ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_boards: int = MAX_BOARDS,
        reap_every: float | None = REAP_EVERY_SECONDS,
        start_timeout: float = START_TIMEOUT_SECONDS,
        log_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        spawn: Spawn = _spawn,
        wait_ready: Callable[[subprocess.Popen[bytes], float], str] = _read_ready_line,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_boards = max(1, max_boards)
        self.reap_every = reap_every
        self.start_timeout = start_timeout
        self.log_dir = log_dir
        self.clock = clock
        self._spawn = spawn
        self._wait_ready = wait_ready
        self._boards: dict[tuple[str, str], _Board] = {}
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None
        self._stopped = threading.Event()
        self._exit_hook = False

    # -- public ---------------------------------------------------------------------------

    def ensure(self, kind: str, resource_id: str, logdirs: Logdirs) -> int:
        """The port of a running TensorBoard for this board, started (or restarted, when
        its directories changed or it died) if need be."""
        key = (kind, resource_id)
        self._started()
        while True:
            with self._lock:
                board = self._boards.get(key)
                if board is None:
                    board = self._boards[key] = _Board(key, logdirs, last_used=self.clock())
                board.last_used = self.clock()
            with board.lock:
                with self._lock:
                    current = self._boards.get(key) is board
                if current:  # not reaped or evicted while this thread waited for it
                    return self._ensure_locked(board, logdirs)

    def _ensure_locked(self, board: _Board, logdirs: Logdirs) -> int:
        """``ensure`` for a board whose lock this thread holds."""
        key = board.key
        if board.alive() and board.logdirs == logdirs:
            board.last_used = self.clock()
            return board.port
        self._terminate(board)
        board.logdirs = logdirs
        self._make_room(keep=key)
        process = self._spawn(child_command(*key, logdirs), self._log(key))
        board.process = process
        try:
            board.port = _port_of(self._wait_ready(process, self.start_timeout))
        except Exception:
            self._terminate(board)
            with self._lock:
                if self._boards.get(key) is board:
                    del self._boards[key]
            raise
        board.last_used = self.clock()
        return board.port

    def touch(self, kind: str, resource_id: str) -> None:
        with self._lock:
            board = self._boards.get((kind, resource_id))
            if board is not None:
                board.last_used = self.clock()

    def stop(self, kind: str, resource_id: str) -> None:
        with self._lock:
            board = self._boards.pop((kind, resource_id), None)
        if board is not None:
            with board.lock:
                self._terminate(board)

    def running(self) -> dict[tuple[str, str], int]:
        """(kind, id) -> port of every TensorBoard that is up."""
        with self._lock:
            return {key: b.port for key, b in self._boards.items() if b.alive()}

    def pids(self) -> list[int]:
        with self._lock:
            return [b.process.pid for b in self._boards.values() if b.process and b.alive()]

    def reap(self, idle_seconds: float | None = None) -> list[tuple[str, str]]:
        """Stop the boards nobody used for ``idle_seconds``; the (kind, id) stopped."""
        limit = self.idle_seconds if idle_seconds is None else idle_seconds
        now = self.clock()
        with self._lock:
            idle = [
                b
                for b in self._boards.values()
                if now - b.last_used >= limit and not b.lock.locked()
            ]
            for board in idle:
                del self._boards[board.key]
        for board in idle:
            with board.lock:
                self._terminate(board)
        return [board.key for board in idle]

    def stop_all(self) -> None:
        self._stopped.set()
        with self._lock:
            boards = list(self._boards.values())
            self._boards.clear()
        for board in boards:
            self._terminate(board)

    # -- internals ------------------------------------------------------------------------

    def _log(self, key: tuple[str, str]) -> Path | None:
        return self.log_dir / f"{key[0]}-{key[1]}.log" if self.log_dir is not None else None

    def _started(self) -> None:
        """On first use: stop the children at exit, and reap idle ones in the background."""
        with self._lock:
            if not self._exit_hook:
                self._exit_hook = True
                atexit.register(self.stop_all)
            if self.reap_every is not None and self._reaper is None:
                self._reaper = threading.Thread(
                    target=self._reap_forever, name="tensorboard-reaper", daemon=True
                )
                self._reaper.start()

    def _reap_forever(self) -> None:
        assert self.reap_every is not None
        while not self._stopped.wait(self.reap_every):
            try:
                self.reap()
            except Exception:  # noqa: BLE001 - the reaper must outlive one bad stop
                _log_exception("reaping idle TensorBoards failed")

    def _make_room(self, keep: tuple[str, str]) -> None:
        """Stop least recently used boards until a new one fits under ``max_boards``."""
        while True:
            with self._lock:
                others = [
                    b
                    for key, b in self._boards.items()
                    if key != keep and b.alive() and not b.lock.locked()
                ]
                if len(others) < self.max_boards:
                    return
                victim = min(others, key=lambda b: b.last_used)
                del self._boards[victim.key]
            with victim.lock:
                self._terminate(victim)

    @staticmethod
    def _terminate(board: _Board) -> None:
        process, board.process, board.port = board.process, None, 0
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def manager_from_env() -> TensorBoardManager:
    """The worker's manager: ``OPENMAKER_TENSORBOARD_IDLE_SECONDS`` (600) and
    ``OPENMAKER_TENSORBOARD_MAX`` (8) tune it; children's output goes to
    ``$OPENMAKER_HOME/tensorboard-logs/``."""
    idle = float(os.environ.get("OPENMAKER_TENSORBOARD_IDLE_SECONDS") or IDLE_SECONDS)
    return TensorBoardManager(
        idle_seconds=idle,
        max_boards=int(os.environ.get("OPENMAKER_TENSORBOARD_MAX") or MAX_BOARDS),
        reap_every=max(1.0, min(REAP_EVERY_SECONDS, idle / 2)),
        log_dir=get_settings().home / "tensorboard-logs",
    )


def _log_exception(message: str) -> None:
    logger.exception(message)


# --- the proxy -----------------------------------------------------------------------------

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Never passed on to TensorBoard: the platform's credentials and what the proxy sets itself.
NOT_FORWARDED = HOP_BY_HOP | {
    "host",
    "cookie",
    "authorization",
    "x-nhn-authorization",
    "x-easymaker-token",
    "content-length",
}
RESOLVE_CACHE_SECONDS = 5.0
_CACHE_MAX = 1024

Reply = tuple[int, list[tuple[str, str]], Iterable[bytes]]


class TensorBoardUnavailableError(OpenMakerError):
    """The board's TensorBoard could not be started or did not answer."""

    result_code = 50300
    http_status = 503


class TensorBoardProxy:
    """Answers ``/tensorboard/{trainings|experiments|hyperparameter-tunings}/{id}/...``.
    Errors are raised as ``OpenMakerError`` for the WSGI adapter to render in the API's
    envelope."""

    def __init__(self, manager: TensorBoardManager | None = None) -> None:
        self._manager = manager
        self._manager_lock = threading.Lock()
        self._logdir_cache: dict[tuple[str, str, str], tuple[Logdirs, float]] = {}
        self._owner_cache: dict[tuple[str, str], tuple[str, float]] = {}

    @property
    def manager(self) -> TensorBoardManager:
        with self._manager_lock:
            if self._manager is None:
                self._manager = manager_from_env()
            return self._manager

    def handle(self, environ: dict[str, Any]) -> Reply:
        path = str(environ.get("PATH_INFO") or "/").encode("latin-1").decode("utf-8", "replace")
        parts = path.split("/", 4)  # "", "tensorboard", "{kind}s", "{id}", rest
        if len(parts) < 4 or parts[2] not in boards.KINDS or not _valid_id(parts[3]):
            raise NotFoundError(f"no tensorboard at {path[:200]}")
        kind, resource_id = boards.KINDS[parts[2]], parts[3]
        prefix = boards.board_path(kind, resource_id)
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        query = str(environ.get("QUERY_STRING", ""))
        pairs = parse_qsl(query, keep_blank_values=True)
        tickets = [value for name, value in pairs if name == "ticket"]
        if tickets:
            if method not in ("GET", "HEAD"):
                raise MethodNotAllowedError("a tensorboard ticket is opened with GET")
            rest = [(name, value) for name, value in pairs if name != "ticket"]
            return self._exchange(kind, resource_id, path, rest, tickets[-1])
        if len(parts) == 4:  # "/tensorboard/trainings/{id}": TensorBoard wants the slash
            location = quote(prefix + "/") + (f"?{query}" if query else "")
            return 301, [("Location", location), ("Content-Length", "0")], [b""]
        headers = _request_headers(environ)
        if any(headers.get(name) for name in ("x-easymaker-token", "x-nhn-authorization")):
            appkey = self._by_token(kind, resource_id, headers)
        else:
            appkey = self._by_cookie(kind, resource_id, environ.get("HTTP_COOKIE", ""))
        logdirs = self._logdirs(appkey, kind, resource_id)
        return self._forward(environ, method, kind, resource_id, logdirs, path, query)

    # -- authentication -------------------------------------------------------------------

    def _by_token(self, kind: boards.Kind, resource_id: str, headers: dict[str, str]) -> str:
        """The owner's appkey when the token is one of its tokens. An unknown board and
        another tenant's are both 404; a missing or unknown token is 401, as on the API."""
        owner = self._owner(kind, resource_id)
        try:
            return auth.authenticate(get_database(), owner or "", headers)
        except ForbiddenError:
            raise NotFoundError(f"{kind} {resource_id} not found") from None

    @staticmethod
    def _by_cookie(kind: boards.Kind, resource_id: str, header: str) -> str:
        values = _cookies(header, boards.COOKIE_NAME)
        if not values:
            raise UnauthorizedError(
                "missing access token: send 'x-nhn-authorization: Bearer <token>' or "
                "'X-EasyMaker-Token: <token>', or open the URL of a tensorboard ticket"
            )
        for value in values:
            try:
                return boards.verify(boards.COOKIE, value, kind, resource_id)
            except UnauthorizedError:
                continue
        raise UnauthorizedError("the tensorboard session is invalid or has expired")

    def _exchange(
        self,
        kind: boards.Kind,
        resource_id: str,
        path: str,
        rest: list[tuple[str, str]],
        ticket: str,
    ) -> Reply:
        """A valid ticket becomes a cookie for this board, and a redirect drops the ticket
        from the address bar (and from anything that logs URLs from here on)."""
        appkey = boards.verify(boards.TICKET, ticket, kind, resource_id)
        self._logdirs(appkey, kind, resource_id)  # 404 when the resource is gone
        cookie, _ = boards.sign(boards.COOKIE, appkey, kind, resource_id, boards.COOKIE_SECONDS)
        prefix = boards.board_path(kind, resource_id)
        attributes = [
            f"{boards.COOKIE_NAME}={cookie}",
            f"Path={quote(prefix)}/",
            f"Max-Age={boards.COOKIE_SECONDS}",
            "HttpOnly",
            "SameSite=Strict",
        ]
        if get_settings().public_url.startswith("https://"):
            attributes.append("Secure")
        target = path if path.startswith(prefix + "/") else prefix + "/"
        location = quote(target) + (f"?{urlencode(rest)}" if rest else "")
        headers = [
            ("Location", location),
            ("Set-Cookie", "; ".join(attributes)),
            ("Cache-Control", "no-store"),
            ("Referrer-Policy", "no-referrer"),
            ("Content-Length", "0"),
        ]
        return 302, headers, [b""]

    # -- resolution (cached a few seconds: one page of a board makes many requests) -------

    def _owner(self, kind: boards.Kind, resource_id: str) -> str | None:
        key = (kind, resource_id)
        now = time.monotonic()
        cached = self._owner_cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        with get_database().session(read_only=True) as session:
            owner = boards.owner_of(session, kind, resource_id)
        if owner is not None:
            _remember(self._owner_cache, key, (owner, now + RESOLVE_CACHE_SECONDS))
        return owner

    def _logdirs(self, appkey: str, kind: boards.Kind, resource_id: str) -> Logdirs:
        key = (appkey, kind, resource_id)
        now = time.monotonic()
        cached = self._logdir_cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        with get_database().session(read_only=True) as session:
            found = boards.logdirs(session, appkey, kind, resource_id)
        _remember(self._logdir_cache, key, (found, now + RESOLVE_CACHE_SECONDS))
        return found

    # -- forwarding -----------------------------------------------------------------------

    def _forward(
        self,
        environ: dict[str, Any],
        method: str,
        kind: boards.Kind,
        resource_id: str,
        logdirs: Logdirs,
        path: str,
        query: str,
    ) -> Reply:
        body = _read_body(environ)
        headers = {
            name: value
            for name, value in _request_headers(environ).items()
            if name not in NOT_FORWARDED and not name.startswith("x-forwarded-")
        }
        headers["content-length"] = str(len(body))
        target = quote(path) + (f"?{query}" if query else "")
        for attempt in (1, 2):
            try:
                port = self.manager.ensure(kind, resource_id, logdirs)
            except TensorBoardStartError as exc:
                _log_exception(f"TensorBoard for {kind} {resource_id} did not start")
                raise TensorBoardUnavailableError(str(exc)) from None
            connection = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=PROXY_TIMEOUT_SECONDS
            )
            try:
                connection.request(method, target, body=body, headers=headers)
                response = connection.getresponse()
            except OSError:
                connection.close()
                if attempt == 1:
                    self.manager.stop(kind, resource_id)  # it died under us: start anew
                    continue
                raise TensorBoardUnavailableError("TensorBoard did not answer") from None
            reply_headers = [
                (name, value)
                for name, value in response.getheaders()
                if name.lower() not in HOP_BY_HOP
            ]
            return response.status, reply_headers, _stream(connection, response)
        raise TensorBoardUnavailableError("TensorBoard did not answer")


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


def _stream(
    connection: http.client.HTTPConnection, response: http.client.HTTPResponse
) -> Iterator[bytes]:
    try:
        while True:
            chunk = response.read1(CHUNK)
            if not chunk:
                return
            yield chunk
    finally:
        response.close()
        connection.close()


def _valid_id(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c.isalnum() or c in "-_" for c in value)


def _request_headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").lower(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = str(environ["CONTENT_TYPE"])
    return headers


def _cookies(header: str, name: str) -> list[str]:
    """Every value of cookie ``name`` (a browser may send one per matching path)."""
    values = []
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name and value:
            values.append(value.strip('"'))
    return values


def _read_body(environ: dict[str, Any]) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > 0:
        return bytes(environ["wsgi.input"].read(length))
    if "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower():
        return bytes(environ["wsgi.input"].read())
    return b""


# --- the child process ---------------------------------------------------------------------


def _watch_parent(parent: int) -> None:
    """End this TensorBoard when the server worker that started it is gone."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def serve(argv: list[str]) -> int:
    """``python -m openmaker.tensorboard --parent PID -- <tensorboard flags>``: serve until
    stopped, or until the parent process exits."""
    if len(argv) < 3 or argv[0] != "--parent" or argv[2] != "--":
        print("usage: python -m openmaker.tensorboard --parent PID -- FLAGS", file=sys.stderr)
        return 2
    parent = int(argv[1])
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=["tensorboard", *argv[3:]])
    url = board.launch()
    sys.stdout.write(f"{READY_MARK} {url}\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nobody reads the pipe any more; never block on it
    os.close(devnull)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
