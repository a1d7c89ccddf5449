"""Control-plane speed: OpenMaker's embedded server against ``chalice local``, in one run.

For each metadata backend (SQLite, then a fresh PostgreSQL database made for the run and
dropped afterwards) the bench starts two servers on the same ``app.py``, one after the other
so they never compete for the CPU:

* ``python -m openmaker up`` (its HTTP server + the WSGI adapter), with a fresh
  ``OPENMAKER_HOME``;
* ``chalice local --no-autoreload`` on the same home and database, with an appkey and token
  made by ``python -m openmaker admin create-appkey``.

On each it seeds 100 experiments, then measures get-experiment, list-experiments (100 items)
and create-experiment (unique names) with 1 and with 8 concurrent keep-alive clients. Every
client is its own process with one persistent ``http.client.HTTPConnection``; each case runs
for ``--duration`` seconds or ``--max-requests`` requests, whichever comes first. It prints
one table per backend and the goals with PASS/MISS beside each measured figure (it reports,
it never asserts), and writes the figures as JSON to ``bench/results/``.

Besides latency and throughput it reports, per case, the CPU the server used per request
(its process group plus, on PostgreSQL, the backends of its database, read from /proc), the
CPU share of the clients and of unrelated processes, and a fixed-loop speed probe, so that
a disturbed or slow run can be told from a slow server. See bench/README.md.

Usage: ``.venv/bin/python bench/control_plane.py [--duration 3] [--backends sqlite,postgresql]
[--workers W] [--threads T] [--clients 1,8] [--repeat 1] [--server-env KEY=VALUE]
[--no-chalice] [--no-json] [--keep-home]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from pathlib import Path
from typing import IO, Any

from mdtable import markdown

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
CHALICE = str(VENV_BIN / "chalice") if (VENV_BIN / "chalice").exists() else "chalice"
RESULTS_DIR = ROOT / "bench" / "results"
PG_ADMIN_URL = os.environ.get(
    "OPENMAKER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
HOST = "127.0.0.1"
SEED_COUNT = 100
OPERATIONS = ("create", "get", "list")
# get and list first, so that the list cases see exactly the 100 seeded experiments.
CASE_ORDER = ("get", "list", "create")

GET_P50_MS = 5.0
LIST_P99_MS = 50.0
RATIO_AT_8 = 20.0
RATIO_CLIENTS = 8
NOISY_SHARE = 0.10  # CPU share of unrelated processes above which a case is flagged
SPEED_PROBE_LOOPS = 300_000


class BenchError(RuntimeError):
    """A server did not start or answered wrongly; the message says which and why."""


# --------------------------------------------------------------------------- processes


@dataclass
class Managed:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


class Processes:
    """Every server process this bench starts, each in its own process group.

    ``stop`` ends one group (SIGTERM, then SIGKILL after a grace period); ``stop_all`` runs
    from ``finally`` so that Ctrl-C or an error never leaves a server behind.
    """

    def __init__(self) -> None:
        self.running: list[Managed] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> Managed:
        log = log_path.open("wb")
        try:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            log.close()
            raise BenchError(f"cannot start {name} ({argv[0]}): {exc}") from None
        managed = Managed(name, process, log_path, log)
        self.running.append(managed)
        return managed

    def stop(self, managed: Managed, grace: float = 15.0) -> None:
        process = managed.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=grace)
        # Children (server workers) share the group: make sure none outlives its leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        managed.log.close()
        if managed in self.running:
            self.running.remove(managed)

    def stop_all(self) -> None:
        for managed in list(reversed(self.running)):
            try:
                self.stop(managed)
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(f"warning: could not stop {managed.name}: {exc}", file=sys.stderr)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_env(home: Path, database_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for name in (
        "OPENMAKER_DATABASE_URL",
        "OPENMAKER_ACCESS_LOG",
        "OPENMAKER_STORAGE_ROOT",
        "GUNICORN_CMD_ARGS",
    ):
        env.pop(name, None)
    env["OPENMAKER_HOME"] = str(home)
    if database_url is not None:
        env["OPENMAKER_DATABASE_URL"] = database_url
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_ready(managed: Managed, port: int, timeout: float = 90.0) -> None:
    """Poll ``GET /health`` until it answers 200; fail early if the server exits."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if managed.process.poll() is not None:
            raise BenchError(
                f"{managed.name} exited with {managed.process.returncode}:\n"
                + _log_tail(managed.log_path)
            )
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200:
                return
            last = f"HTTP {response.status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise BenchError(
        f"{managed.name} not ready after {timeout:.0f} s ({last}):\n" + _log_tail(managed.log_path)
    )


@dataclass(frozen=True)
class Server:
    label: str
    port: int
    appkey: str
    token: str
    pgid: int
    pg_database: str | None = None
    description: str = ""


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stat_fields(pid: int | str) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # After the ")" that ends the command name: fields[0] is field 3 of proc(5), so pgrp
    # (field 5) is fields[2], utime (14) fields[11] and stime (15) fields[12].
    fields = stat.rsplit(")", 1)[-1].split()
    return fields if len(fields) > 12 else None


def postgres_backends(database: str) -> list[int]:
    """Process ids of the PostgreSQL backends connected to ``database``."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    return [int(row[0]) for row in rows]


def server_cpu_snapshot(server: Server) -> dict[int, float]:
    """CPU seconds so far of each process serving ``server``: its process group (the
    launcher, the HTTP server and its workers, or chalice local) plus, on PostgreSQL, the
    database backends its connections use."""
    snapshot: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat_fields(entry.name)
            if fields is not None and int(fields[2]) == server.pgid:
                snapshot[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    if server.pg_database:
        for pid in postgres_backends(server.pg_database):
            fields = _proc_stat_fields(pid)
            if fields is not None:
                snapshot[pid] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return snapshot


def connection_split(server: Server) -> list[int]:
    """How many established client connections each server process holds, busiest first.

    A worker keeps a keep-alive connection for its whole life and nothing balances them,
    so 8 clients may sit 6/2 or 8/0 on 2 workers; this shows it (from /proc/net/tcp and
    each process's open sockets).
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cols = row.split()
                # local_address is HEX_IP:HEX_PORT; state 01 is ESTABLISHED; inode is col 9.
                if (
                    len(cols) > 9
                    and cols[3] == "01"
                    and int(cols[1].split(":")[1], 16) == (server.port)
                ):
                    inodes.add(cols[9])
    counts: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat_fields(entry.name)
        if fields is None or int(fields[2]) != server.pgid:
            continue
        held = 0
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        held += 1
        if held:
            counts.append(held)
    return sorted(counts, reverse=True)


_SERVER_FLAGS = (
    "--workers",
    "--threads",
    "--blocking-threads",
    "--runtime-threads",
    "--worker-class",
    "--backpressure",
)


def http_server_description(pgid: int) -> str:
    """What actually serves requests in group ``pgid``, e.g. ``granian --workers 2
    --blocking-threads 2`` (read from the command lines, whatever the launcher chose)."""
    for entry in sorted(
        Path("/proc").iterdir(), key=lambda e: int(e.name) if e.name.isdigit() else 0
    ):
        fields = _proc_stat_fields(entry.name) if entry.name.isdigit() else None
        if fields is None or int(fields[2]) != pgid:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for i, arg in enumerate(argv):
            name = Path(arg).name
            if name in ("granian", "gunicorn", "uvicorn", "hypercorn"):
                words = [name]
                for j in range(i + 1, len(argv) - 1):
                    if argv[j] in _SERVER_FLAGS:
                        words += [argv[j], argv[j + 1]]
                return " ".join(words)
    return "unknown server"


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle (all cores, from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    guest = sum(values[8:10]) if len(values) > 9 else 0  # already counted in user/nice
    return (sum(values) - idle - guest) / _CLOCK_TICKS


def _database_name(database_url: str | None) -> str | None:
    """The PostgreSQL database of ``database_url`` (None for the default SQLite)."""
    return database_url.rsplit("/", 1)[-1] if database_url else None


def start_openmaker(
    procs: Processes,
    home: Path,
    database_url: str | None,
    workers: int | None,
    threads: int | None,
    extra_env: dict[str, str],
) -> tuple[Managed, Server]:
    port = free_port()
    argv = [PYTHON, "-m", "openmaker", "up", "--host", HOST, "--port", str(port)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    env = server_env(home, database_url)
    env.update(extra_env)
    managed = procs.start("openmaker up", argv, env, home / "up.log")
    wait_ready(managed, port)
    credentials = json.loads((home / "credentials.json").read_text())
    server = Server(
        "openmaker",
        port,
        credentials["appkey"],
        credentials["token"],
        managed.pid,
        _database_name(database_url),
        http_server_description(managed.pid),
    )
    print(f"  openmaker up serves with: {server.description}", flush=True)
    return managed, server


def create_appkey(home: Path, database_url: str | None) -> tuple[str, str]:
    completed = subprocess.run(
        [PYTHON, "-m", "openmaker", "admin", "create-appkey", "--name", "bench-chalice-local"],
        cwd=ROOT,
        env=server_env(home, database_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    appkey = re.search(r"^appkey:\s*(\S+)", completed.stdout, re.MULTILINE)
    token = re.search(r"^token:\s*(\S+)", completed.stdout, re.MULTILINE)
    if completed.returncode != 0 or appkey is None or token is None:
        raise BenchError(
            f"openmaker admin create-appkey failed ({completed.returncode}):\n"
            f"{completed.stdout}\n{completed.stderr}"
        )
    return appkey.group(1), token.group(1)


def start_chalice_local(
    procs: Processes, home: Path, database_url: str | None
) -> tuple[Managed, Server]:
    appkey, token = create_appkey(home, database_url)
    port = free_port()
    argv = [CHALICE, "local", "--host", HOST, "--port", str(port), "--no-autoreload"]
    managed = procs.start(
        "chalice local", argv, server_env(home, database_url), home / "chalice-local.log"
    )
    wait_ready(managed, port)
    server = Server(
        "chalice-local",
        port,
        appkey,
        token,
        managed.pid,
        _database_name(database_url),
        "chalice local",
    )
    return managed, server


# --------------------------------------------------------------------------- PostgreSQL


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database for this run; dropped (forcibly) when the block ends."""
    import psycopg
    from psycopg import sql

    name = f"openmaker_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise BenchError(
            f"cannot create a PostgreSQL database through {PG_ADMIN_URL} "
            f"(set OPENMAKER_BENCH_PG_URL, or pass --backends sqlite): {exc}"
        ) from None
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class ClientJob:
    port: int
    appkey: str
    token: str
    operation: str
    index: int
    name_prefix: str
    ids: tuple[str, ...]
    start_at: float
    deadline: float
    max_requests: int


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    last_end: float = 0.0
    cpu_seconds: float = 0.0


def _request_for(job: ClientJob, n: int) -> tuple[str, str, bytes | None]:
    base = f"/v1.0/appkeys/{job.appkey}/experiments"
    if job.operation == "create":
        name = f"{job.name_prefix}-{job.index}-{n}"
        return "POST", base, json.dumps({"experimentName": name}).encode()
    if job.operation == "get":
        return "GET", f"{base}/{job.ids[(job.index * 7919 + n) % len(job.ids)]}", None
    return "GET", f"{base}?limit={SEED_COUNT}", None


def client_main(job: ClientJob, out: Queue[ClientResult]) -> None:
    """One client: a persistent connection, requests back to back until the bound is hit."""
    result = ClientResult()
    headers = {
        "x-nhn-authorization": f"Bearer {job.token}",
        "Content-Type": "application/json",
        "Connection": "keep-alive",
    }
    try:
        conn = http.client.HTTPConnection(HOST, job.port, timeout=60)
        conn.request("GET", "/health")  # opens the connection; not counted
        conn.getresponse().read()
        while time.monotonic() < job.start_at:
            time.sleep(min(0.01, max(0.0, job.start_at - time.monotonic())))
        latencies = result.latencies
        perf = time.perf_counter
        cpu_started = time.process_time()
        for n in range(job.max_requests):
            if time.monotonic() >= job.deadline:
                break
            method, path, body = _request_for(job, n)
            started = perf()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            latencies.append(perf() - started)
            if response.status >= 300:
                result.errors += 1
                if not result.first_error:
                    result.first_error = f"HTTP {response.status}: {data[:300]!r}"
        result.last_end = time.monotonic()
        result.cpu_seconds = time.process_time() - cpu_started
        conn.close()
    except KeyboardInterrupt:
        result.first_error = result.first_error or "interrupted"
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        result.errors += 1
        result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
        result.last_end = time.monotonic()
    out.put(result)


@dataclass
class CaseResult:
    operation: str
    clients: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    server_cpu_ms_per_request: float
    server_cpu_share: float
    client_cpu_share: float
    other_cpu_share: float
    speed_probe_ms: float
    connections_per_process: list[int]
    first_error: str = ""


def speed_probe_ms() -> float:
    """CPU milliseconds for a fixed pure-Python loop (best of three), taken before each case.

    The machine's speed drifts (a virtual machine shares its host): when this figure
    moves, every CPU-bound figure moves with it, so it is reported beside them.
    """
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        total = 0
        for i in range(SPEED_PROBE_LOOPS):
            total += i
        best = min(best, time.process_time() - started)
    return best * 1000


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def run_case(
    server: Server,
    operation: str,
    clients: int,
    duration: float,
    max_requests: int,
    ids: tuple[str, ...],
    tag: str,
) -> CaseResult:
    probe_ms = speed_probe_ms()
    context = multiprocessing.get_context("fork")
    queue: Queue[ClientResult] = context.Queue()
    start_at = time.monotonic() + 0.5 + 0.05 * clients
    per_client = max(1, max_requests // clients)
    jobs = [
        ClientJob(
            port=server.port,
            appkey=server.appkey,
            token=server.token,
            operation=operation,
            index=i,
            name_prefix=f"b{tag}-{clients}",
            ids=ids,
            start_at=start_at,
            deadline=start_at + duration,
            max_requests=per_client,
        )
        for i in range(clients)
    ]
    workers = [context.Process(target=client_main, args=(job, queue), daemon=True) for job in jobs]
    for worker in workers:
        worker.start()
    results: list[ClientResult] = []
    while time.monotonic() < start_at:
        time.sleep(min(0.01, max(0.0, start_at - time.monotonic())))
    cpu_before = server_cpu_snapshot(server)
    busy_before = machine_busy_seconds()
    try:
        split = connection_split(server)
        for _ in workers:
            results.append(queue.get(timeout=duration + 120))
        busy = machine_busy_seconds() - busy_before
        cpu_after = server_cpu_snapshot(server)
        server_cpu = sum(v - cpu_before.get(pid, 0.0) for pid, v in cpu_after.items())
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5)
    latencies = sorted(x for r in results for x in r.latencies)
    end = max((r.last_end for r in results), default=start_at)
    seconds = max(end - start_at, 1e-9)
    errors = sum(r.errors for r in results)
    first_error = next((r.first_error for r in results if r.first_error), "")
    capacity = seconds * (os.cpu_count() or 1)
    client_cpu = sum(r.cpu_seconds for r in results)
    return CaseResult(
        operation=operation,
        clients=clients,
        requests=len(latencies),
        errors=errors,
        seconds=round(seconds, 3),
        rps=len(latencies) / seconds,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        mean_ms=(sum(latencies) / len(latencies) * 1000) if latencies else 0.0,
        server_cpu_ms_per_request=server_cpu * 1000 / max(1, len(latencies)),
        server_cpu_share=server_cpu / capacity,
        client_cpu_share=client_cpu / capacity,
        other_cpu_share=max(0.0, busy - server_cpu - client_cpu) / capacity,
        speed_probe_ms=probe_ms,
        connections_per_process=split,
        first_error=first_error,
    )


def seed(server: Server, count: int, tag: str) -> tuple[str, ...]:
    """``count`` experiments for the get and list cases; their ids."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=60)
    headers = {"x-nhn-authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    ids: list[str] = []
    for i in range(count):
        body = json.dumps({"experimentName": f"seed-{tag}-{i}"})
        conn.request("POST", f"/v1.0/appkeys/{server.appkey}/experiments", body, headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 201:
            raise BenchError(f"{server.label}: seeding failed: HTTP {response.status} {data!r}")
        ids.append(json.loads(data)["experiment"]["experimentId"])
    conn.close()
    return tuple(ids)


def measure(
    server: Server, args: argparse.Namespace, client_counts: list[int]
) -> dict[tuple[str, int], CaseResult]:
    tag = uuid.uuid4().hex[:6]
    ids = seed(server, SEED_COUNT, tag)
    results: dict[tuple[str, int], CaseResult] = {}
    for operation in CASE_ORDER:
        for clients in client_counts:
            runs: list[CaseResult] = []
            for attempt in range(args.repeat):
                case = run_case(
                    server,
                    operation,
                    clients,
                    args.duration,
                    args.max_requests,
                    ids,
                    f"{tag}{attempt}",
                )
                runs.append(case)
                note = f"  ({case.errors} errors: {case.first_error})" if case.errors else ""
                print(
                    f"  {server.label:<13} {operation:<6} {clients} client(s): "
                    f"{case.rps:8.1f} req/s  p50 {case.p50_ms:7.2f} ms  p99 {case.p99_ms:7.2f} ms"
                    f"  n={case.requests}  server CPU {case.server_cpu_ms_per_request:.2f} ms/req"
                    f" ({case.server_cpu_share:.0%} of the machine), clients"
                    f" {case.client_cpu_share:.0%}, other {case.other_cpu_share:.0%},"
                    f" probe {case.speed_probe_ms:.0f} ms,"
                    f" connections {'/'.join(map(str, case.connections_per_process)) or '-'}"
                    f"{note}",
                    flush=True,
                )
            # The run least disturbed by unrelated processes stands for the case.
            results[(operation, clients)] = min(runs, key=lambda r: r.other_cpu_share)
    return results


# --------------------------------------------------------------------------- report


@dataclass
class BackendReport:
    backend: str
    openmaker: dict[tuple[str, int], CaseResult]
    chalice: dict[tuple[str, int], CaseResult]
    server: str = ""
    sources: list[str] = field(default_factory=list)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_table(report: BackendReport, client_counts: list[int]) -> str:
    head = (
        "operation",
        "clients",
        "OpenMaker req/s",
        "p50 ms",
        "p99 ms",
        "chalice-local req/s",
        "p50 ms",
        "p99 ms",
        "ratio",
    )
    rows: list[tuple[str, ...]] = []
    for operation in OPERATIONS:
        for clients in client_counts:
            om = report.openmaker.get((operation, clients))
            ch = report.chalice.get((operation, clients))
            ratio = om.rps / ch.rps if om and ch and ch.rps > 0 else None
            rows.append(
                (
                    operation,
                    str(clients),
                    _fmt(om.rps if om else None),
                    _fmt(om.p50_ms if om else None, 2),
                    _fmt(om.p99_ms if om else None, 2),
                    _fmt(ch.rps if ch else None),
                    _fmt(ch.p50_ms if ch else None, 2),
                    _fmt(ch.p99_ms if ch else None, 2),
                    "-" if ratio is None else f"{ratio:.1f}x",
                )
            )
    return markdown(head, rows)


@dataclass
class Goal:
    backend: str
    goal: str
    figure: str
    passed: bool


def evaluate_goals(report: BackendReport, client_counts: list[int]) -> list[Goal]:
    goals: list[Goal] = []
    for clients in client_counts:
        get = report.openmaker.get(("get", clients))
        if get:
            goals.append(
                Goal(
                    report.backend,
                    f"GET p50 <= {GET_P50_MS:g} ms, {clients} client(s)",
                    f"{get.p50_ms:.2f} ms",
                    get.p50_ms <= GET_P50_MS and get.errors == 0,
                )
            )
    for clients in client_counts:
        listed = report.openmaker.get(("list", clients))
        if listed:
            goals.append(
                Goal(
                    report.backend,
                    f"list p99 <= {LIST_P99_MS:g} ms, {clients} client(s)",
                    f"{listed.p99_ms:.2f} ms",
                    listed.p99_ms <= LIST_P99_MS and listed.errors == 0,
                )
            )
    for operation in OPERATIONS:
        om = report.openmaker.get((operation, RATIO_CLIENTS))
        ch = report.chalice.get((operation, RATIO_CLIENTS))
        if om and ch and ch.rps > 0:
            ratio = om.rps / ch.rps
            goals.append(
                Goal(
                    report.backend,
                    f"{operation} throughput >= {RATIO_AT_8:g}x chalice local, "
                    f"{RATIO_CLIENTS} clients",
                    f"{ratio:.1f}x ({om.rps:.0f} vs {ch.rps:.0f} req/s)",
                    ratio >= RATIO_AT_8 and om.errors == 0,
                )
            )
    return goals


def source_fingerprint() -> str:
    """A short digest of the server's sources (app.py, chalicelib, openmaker, requirements):
    it ties figures to a version of the code, and shows when the code changed mid-run."""
    digest = hashlib.sha256()
    paths = [ROOT / "app.py", ROOT / "requirements.txt"]
    for package in ("chalicelib", "openmaker"):
        paths += sorted((ROOT / package).rglob("*.py"))
    for path in paths:
        with contextlib.suppress(OSError):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def machine_description() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                model = row.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def write_json(
    args: argparse.Namespace, reports: list[BackendReport], goals: list[Goal], machine: str
) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"control_plane-{stamp}.json"

    def cases(results: dict[tuple[str, int], CaseResult]) -> list[dict[str, Any]]:
        return [asdict(case) for case in results.values()]

    document = {
        "when": stamp,
        "machine": machine,
        "sources": source_fingerprint(),
        "settings": {
            "duration_s": args.duration,
            "max_requests": args.max_requests,
            "workers": args.workers,
            "threads": args.threads,
            "server_env": args.server_env,
            "clients": args.clients,
            "repeat": args.repeat,
        },
        "backends": [
            {
                "backend": report.backend,
                "server": report.server,
                "sources": report.sources,
                "openmaker": cases(report.openmaker),
                "chalice_local": cases(report.chalice),
            }
            for report in reports
        ],
        "goals": [asdict(goal) for goal in goals],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- main


def run_backend(
    backend: str, args: argparse.Namespace, procs: Processes, client_counts: list[int]
) -> BackendReport:
    with contextlib.ExitStack() as stack:
        database_url: str | None = None
        if backend == "postgresql":
            database_url = stack.enter_context(fresh_postgres_database())
        home = Path(tempfile.mkdtemp(prefix=f"openmaker-bench-{backend}-"))
        if not args.keep_home:
            stack.callback(shutil.rmtree, home, True)
        print(f"\n== {backend}: home {home}" + (f", {database_url}" if database_url else ""))
        report = BackendReport(backend, {}, {})
        managed, server = start_openmaker(
            procs, home, database_url, args.workers, args.threads, parse_env(args.server_env)
        )
        report.server = server.description
        report.sources.append(source_fingerprint())
        try:
            report.openmaker = measure(server, args, client_counts)
        finally:
            procs.stop(managed)
        if args.chalice:
            report.sources.append(source_fingerprint())
            managed, server = start_chalice_local(procs, home, database_url)
            try:
                report.chalice = measure(server, args, client_counts)
            finally:
                procs.stop(managed)
        return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per case")
    parser.add_argument(
        "--max-requests", type=int, default=20_000, help="requests per case at most"
    )
    parser.add_argument("--backends", default="sqlite,postgresql", help="sqlite,postgresql")
    parser.add_argument(
        "--workers", type=int, help="openmaker up --workers (default: its own default)"
    )
    parser.add_argument(
        "--threads", type=int, help="openmaker up --threads (default: its own default)"
    )
    parser.add_argument("--clients", default="1,8", help="concurrent clients per case")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per case; the one least disturbed by other processes is reported",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for openmaker up, for experiments with the HTTP server's "
        "settings (e.g. GRANIAN_BACKPRESSURE=4); repeatable",
    )
    parser.add_argument(
        "--no-chalice", dest="chalice", action="store_false", help="skip chalice local"
    )
    parser.add_argument("--no-json", dest="json", action="store_false", help="no JSON file")
    parser.add_argument("--keep-home", action="store_true", help="keep the temp homes")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown or not backends:
        parser.error(f"unknown backends: {', '.join(sorted(unknown)) or '(none)'}")
    args.backend_list = backends
    args.client_counts = sorted({int(c) for c in args.clients.split(",") if c.strip()})
    if args.duration <= 0 or args.max_requests < 1 or args.repeat < 1 or not args.client_counts:
        parser.error("--duration, --max-requests, --repeat and --clients must be positive")
    return args


def parse_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BenchError(f"--server-env wants KEY=VALUE, not {pair!r}")
        env[key] = value
    return env


def settings_label(args: argparse.Namespace) -> str:
    parts = ["openmaker up"]
    parts += [f"--workers {args.workers}"] if args.workers is not None else []
    parts += [f"--threads {args.threads}"] if args.threads is not None else []
    parts += args.server_env
    return " ".join(parts) + ("" if len(parts) > 1 else " (its defaults)")


_interrupted = False


def _raise_interrupt(signum: int, _frame: Any) -> None:
    """The first Ctrl-C or SIGTERM unwinds to the cleanup; later ones do not cut it short."""
    global _interrupted
    if _interrupted:
        return
    _interrupted = True
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Installed explicitly: a shell starts background jobs with SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    machine = machine_description()
    sources = source_fingerprint()
    print(
        f"OpenMaker control-plane bench on {machine}; {settings_label(args)}; "
        f"{args.duration:g} s or {args.max_requests} requests per case; sources {sources}",
        flush=True,
    )
    procs = Processes()
    reports: list[BackendReport] = []
    try:
        for backend in args.backend_list:
            reports.append(run_backend(backend, args, procs, args.client_counts))
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()

    goals: list[Goal] = []
    seen = {sources, source_fingerprint(), *(v for r in reports for v in r.sources)}
    if len(seen) > 1:
        print(
            f"\n! the server's sources changed during the run ({', '.join(sorted(seen))}): "
            "the figures mix versions of the code; run again"
        )
    for report in reports:
        print(f"\n### {report.backend} ({report.server})\n")
        print(render_table(report, args.client_counts))
        failures = [
            f"{name} {op}@{c}: {case.errors} errors, first: {case.first_error}"
            for name, results in (("openmaker", report.openmaker), ("chalice", report.chalice))
            for (op, c), case in results.items()
            if case.errors
        ]
        for failure in failures:
            print(f"  ! {failure}")
        cases = [*report.openmaker.values(), *report.chalice.values()]
        busiest = max((case.other_cpu_share for case in cases), default=0.0)
        probes = [case.speed_probe_ms for case in cases]
        if probes:
            print(
                f"  speed probe (fixed loop, lower is faster): {min(probes):.0f}-"
                f"{max(probes):.0f} ms over these cases"
            )
        if busiest > NOISY_SHARE:
            print(
                f"  ! other processes used up to {busiest:.0%} of the machine during these"
                " cases: the figures are disturbed; run again on a quiet machine"
            )
        goals.extend(evaluate_goals(report, args.client_counts))
    print("\nGoals")
    for goal in goals:
        verdict = "PASS" if goal.passed else "MISS"
        print(f"  {verdict}  {goal.backend:<10} {goal.goal:<52} {goal.figure}")
    if args.json:
        print(f"\nJSON: {write_json(args, reports, goals, machine).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
