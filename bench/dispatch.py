"""Dispatch latency: a training through OpenMaker against a bare Ray job and a plain process.

On one warm local Ray head (``RayHead``, 4 logical CPUs) and one ``python -m openmaker up``
that uses it (``OPENMAKER_RAY_ADDRESS``), the bench runs the same trivial entry point, one
run after the other, ``--runs`` times each:

* **OpenMaker**: ``POST /v1.0/appkeys/{appkey}/trainings`` (``requests``, a ``file://``
  source, flavor m2.c1m2, the CPU training image), then ``GET`` the training every 20 ms
  until it is COMPLETE;
* **raw Ray Jobs**: ``POST {dashboard}/api/jobs/`` with the same script run by the same
  Python (``entrypoint_num_cpus=1``; what ``ray job submit`` sends), then
  ``GET /api/jobs/{id}`` every 20 ms until SUCCEEDED;
* **direct**: ``subprocess.run([python, script])``.

The entry point records ``time.time()`` as its first statement (and its process's creation
time, from /proc) in a file named by its ``--marker`` argument, so "entry point started" is
exact whatever the polling. The runs are interleaved (OpenMaker, raw Ray, direct, repeat) so
that a drift of the machine's speed touches all three alike.

A second pass (``--breakdown-runs``, default 10; 0 skips it) starts another platform on the
same head whose job drivers run under a probe (``OPENMAKER_RUNNER_PYTHON``) that times each
phase of ``runners.training`` (imports, the control-plane GET, staging, the RUNNING report,
the user process start, the upload, the final report); the headline figures never run under
the probe.

It prints p50/p95 per measure, the ratios OpenMaker / raw Ray and OpenMaker / direct, the
breakdown, and the goals with PASS/MISS (it reports, it never asserts), and writes the
figures as JSON to ``bench/results/dispatch-<UTC time>.json``. See bench/README.md.

Usage: ``.venv/bin/python bench/dispatch.py [--runs 20] [--breakdown-runs 10] [--pause 0.3]
[--no-json] [--keep-home]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import requests
from mdtable import markdown

from openmaker.rayhead import RayHead

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
RESULTS_DIR = ROOT / "bench" / "results"
HOST = "127.0.0.1"
RAY_CPUS = 4
FLAVOR = "m2.c1m2"
CPU_IMAGE = "Ubuntu 22.04 CPU PyTorch Training"
POLL_S = 0.02
RUN_TIMEOUT_S = 120.0
START_TIMEOUT_S = 60.0

STARTED_P50_GOAL_S = 1.5
OVERHEAD_GOAL = 1.5
NOISY_SHARE = 0.10  # CPU share of unrelated processes above which a pass is flagged

OM_ENDED = {"COMPLETE", "FAIL_TRAIN", "CREATE_FAILED", "STOPPED"}
OM_RUNNING_OR_LATER = {"RUNNING", "COMPLETE_IN_PROGRESS", "COMPLETE"}
RAY_ENDED = {"SUCCEEDED", "FAILED", "STOPPED"}

# The entry point of every run. Its first statement takes the time; it also works out when
# its process was created (from /proc: 10 ms ticks) and writes both, then exits 0.
ENTRY_POINT = """\
import time

STARTED = time.time()

import json
import os
import sys


def created():
    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
    except OSError:
        return None
    return time.time() - (uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))


path = sys.argv[sys.argv.index("--marker") + 1]
record = {"started": STARTED, "created": created(), "ended": time.time()}
with open(path + ".tmp", "w") as handle:
    json.dump(record, handle)
os.replace(path + ".tmp", path)
"""

# The breakdown pass runs each job driver as ``python probe.py -m runners.training <id>``:
# it times the driver's phases by wrapping its methods and writes them to OUT/<id>.json.
DRIVER_PROBE = """\
import time

T = {"probe_start": time.time()}

import json
import os
import sys

OUT = @OUT@


def _created():
    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
    except OSError:
        return None
    return time.time() - (uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))


T["process_created"] = _created()
import runners.training as training
from runners.control import ControlPlane
from runners.nodejob import NodeJob

T["imported"] = time.time()


def _timed(cls, name, label=None):
    original = getattr(cls, name, None)
    if original is None:  # the driver changed: that phase just goes unmeasured
        return

    def wrapper(*args, **kwargs):
        tag = label(args) if label else name.strip("_")
        T.setdefault(tag + ".start", time.time())
        try:
            return original(*args, **kwargs)
        finally:
            T.setdefault(tag + ".end", time.time())

    setattr(cls, name, wrapper)


_timed(ControlPlane, "job")
_timed(ControlPlane, "report", lambda args: "report " + str(args[1]))
for _name in ("_write_log_meta", "_started", "_watch", "_stop_monitor", "_completing"):
    _timed(training.TrainingDriver, _name)
for _name in ("stage", "start", "upload"):
    _timed(NodeJob, _name)

_id = sys.argv[-1]
_code = 1
try:
    _code = training.main([_id])
finally:
    T["driver_end"] = time.time()
    with open(os.path.join(OUT, _id + ".json.tmp"), "w") as _handle:
        json.dump(T, _handle)
    os.replace(os.path.join(OUT, _id + ".json.tmp"), os.path.join(OUT, _id + ".json"))
sys.exit(_code)
"""


class BenchError(RuntimeError):
    """Something did not start or a run went wrong; the message says which and why."""


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Platform:
    """One ``openmaker up`` process (its own process group) and its default credentials."""

    base_url: str
    appkey: str
    token: str
    home: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1.0/appkeys/{self.appkey}"

    @property
    def headers(self) -> dict[str, str]:
        return {"x-nhn-authorization": f"Bearer {self.token}"}


def platform_env(home: Path, ray_url: str, runner_python: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENMAKER_", "EM_"))}
    env["OPENMAKER_HOME"] = str(home)
    env["OPENMAKER_RAY_ADDRESS"] = ray_url
    env["PYTHONUNBUFFERED"] = "1"
    if runner_python is not None:
        env["OPENMAKER_RUNNER_PYTHON"] = runner_python
    return env


def start_platform(home: Path, ray_url: str, runner_python: str | None = None) -> Platform:
    """``python -m openmaker up`` (its default workers and threads) on the given Ray head;
    waits for ``/health`` and reads the credentials it made."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base_url = f"http://{HOST}:{port}"
    log_path = home.parent / f"{home.name}-up.log"
    log = log_path.open("wb")
    try:
        process = subprocess.Popen(
            [PYTHON, "-m", "openmaker", "up", "--port", str(port)],
            cwd=ROOT,
            env=platform_env(home, ray_url, runner_python),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        log.close()
        raise BenchError(f"cannot start openmaker up: {exc}") from None
    running = Platform(base_url, "", "", home, process, log_path, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            stop_platform(running)
            raise BenchError(
                f"openmaker up exited with {process.returncode}:\n{_log_tail(log_path)}"
            )
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base_url}/health", timeout=1).status_code == 200:
                break
        if time.monotonic() > deadline:
            stop_platform(running)
            raise BenchError(f"openmaker up not healthy in {START_TIMEOUT_S:.0f} s")
        time.sleep(0.1)
    credentials = json.loads((home / "credentials.json").read_text())
    running.appkey, running.token = credentials["appkey"], credentials["token"]
    return running


def stop_platform(running: Platform, grace: float = 15.0) -> None:
    """SIGTERM to the launcher's group, SIGKILL after ``grace``; nothing of it outlives this."""
    process = running.process
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    running.log.close()


@contextlib.contextmanager
def platform_running(
    home: Path, ray_url: str, runner_python: str | None = None
) -> Iterator[Platform]:
    running = start_platform(home, ray_url, runner_python)
    try:
        yield running
    finally:
        stop_platform(running)


@contextlib.contextmanager
def ray_head_running(home: Path) -> Iterator[str]:
    """A local Ray head for this run only (stopped and its temp dir removed afterwards)."""
    head = RayHead(home, num_cpus=RAY_CPUS)
    try:
        yield head.start()
    finally:
        head.stop()
        # A worker that was still exiting may write its session folders again: once more.
        shutil.rmtree(head.temp_dir, ignore_errors=True)
        time.sleep(1.0)
        shutil.rmtree(head.temp_dir, ignore_errors=True)


# --------------------------------------------------------------------------- runs


@dataclass
class Sample:
    """One run; every time is in seconds from just before the submit (or the spawn)."""

    method: str
    job_id: str
    submit_call: float | None  # the HTTP call that submits
    created: float | None  # the entry point's process created (10 ms ticks)
    started: float  # the entry point's first statement
    running: float | None  # the first poll that shows RUNNING (or later)
    complete: float  # COMPLETE / SUCCEEDED seen, or the process ended
    ray_ended: float | None = None  # OpenMaker only: its Ray job SUCCEEDED seen
    statuses: list[str] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)  # absolute times, for breakdowns


def read_marker(path: Path) -> dict[str, float]:
    try:
        data: dict[str, float] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"the entry point left no marker at {path}: {exc}") from None
    return data


class Poller:
    """Calls ``fetch`` every ``POLL_S`` (a fixed cadence, not sleep-after) until ``done``."""

    def __init__(self, what: str, t0: float) -> None:
        self.what = what
        self.deadline = t0 + RUN_TIMEOUT_S
        self.statuses: list[str] = []

    def until(
        self, fetch: Callable[[], str], done: Callable[[str, float], bool]
    ) -> tuple[str, float]:
        next_at = time.time()
        while True:
            status = fetch()
            now = time.time()
            if not self.statuses or self.statuses[-1] != status:
                self.statuses.append(status)
            if done(status, now):
                return status, now
            if now > self.deadline:
                raise BenchError(f"{self.what} went {self.statuses} in {RUN_TIMEOUT_S:.0f} s")
            next_at = max(next_at + POLL_S, now)  # a slow answer delays, never bunches
            time.sleep(max(0.0, next_at - time.time()))


class Runner:
    """The three ways to run the entry point, against one platform and one Ray head."""

    def __init__(self, running: Platform, ray_url: str, work: Path) -> None:
        self.platform = running
        self.ray_url = ray_url
        self.work = work
        self.source = work / "src"
        self.source.mkdir(parents=True, exist_ok=True)
        self.script = self.source / "entry.py"
        self.script.write_text(ENTRY_POINT)
        self.session = requests.Session()
        self.session.headers.update(running.headers)
        self.ray = requests.Session()
        self.experiment_id = self._experiment()

    def close(self) -> None:
        self.session.close()
        self.ray.close()

    def _marker(self, method: str) -> Path:
        return self.work / f"{method}-{uuid.uuid4().hex[:10]}.marker"

    def _experiment(self) -> str:
        reply = self.session.post(
            f"{self.platform.api_url}/experiments",
            json={"experimentName": f"dispatch-bench-{uuid.uuid4().hex[:6]}"},
            timeout=30,
        )
        if reply.status_code != 201:
            raise BenchError(f"cannot create an experiment: {reply.status_code} {reply.text}")
        return str(reply.json()["experiment"]["experimentId"])

    def _ray_status(self, job_id: str) -> str:
        reply = self.ray.get(f"{self.ray_url}/api/jobs/{job_id}", timeout=30)
        if reply.status_code == 404:
            return "UNKNOWN"  # an OpenMaker job that Ray does not list yet
        if reply.status_code != 200:
            raise BenchError(f"GET /api/jobs/{job_id}: {reply.status_code} {reply.text}")
        return str(reply.json()["status"])

    def openmaker(self) -> Sample:
        marker = self._marker("openmaker")
        body: dict[str, Any] = {
            "trainingName": f"bench-{uuid.uuid4().hex[:8]}",
            "experimentId": self.experiment_id,
            "imageId": IMAGE_ID,
            "flavorId": FLAVOR_ID,
            "sourceDirUri": f"file://{self.source}",
            "entryPoint": self.script.name,
            "hyperparameterList": [{"parameterName": "marker", "parameterValue": str(marker)}],
            "modelUploadUri": f"file://{self.work / 'model' / marker.stem}",
            "timeoutMinutes": 10,
        }
        url = f"{self.platform.api_url}/trainings"
        t0 = time.time()
        reply = self.session.post(url, json=body, timeout=60)
        t_post = time.time()
        if reply.status_code != 201:
            raise BenchError(f"POST /trainings: {reply.status_code} {reply.text}")
        training_id = str(reply.json()["training"]["trainingId"])
        seen: dict[str, float] = {}
        reasons: list[str] = []

        def fetch() -> str:
            got = self.session.get(f"{url}/{training_id}", timeout=30)
            if got.status_code != 200:
                raise BenchError(f"GET training: {got.status_code} {got.text}")
            view = got.json()["training"]
            reasons[:] = [str(view.get("statusReason"))]
            return str(view["trainingStatusCode"])

        def done(status: str, now: float) -> bool:
            if status in OM_RUNNING_OR_LATER:
                seen.setdefault("running", now)
            return status in OM_ENDED

        poller = Poller(f"training {training_id}", t0)
        status, t_complete = poller.until(fetch, done)
        if status != "COMPLETE":
            raise BenchError(f"training {training_id} ended {status}: {reasons[0]}")
        # Not timed as such: the next run starts once Ray has settled this job too.
        ray_poller = Poller(f"Ray job of training {training_id}", t0)
        _, t_ray = ray_poller.until(
            lambda: self._ray_status(training_id), lambda s, _: s in RAY_ENDED
        )
        mark = read_marker(marker)
        return Sample(
            "openmaker",
            training_id,
            t_post - t0,
            mark["created"] - t0 if mark.get("created") else None,
            mark["started"] - t0,
            seen["running"] - t0 if "running" in seen else None,
            t_complete - t0,
            t_ray - t0,
            poller.statuses,
            {"t0": t0, "posted": t_post, "complete_seen": t_complete, "ray_end_seen": t_ray}
            | {f"entry_{key}": value for key, value in mark.items() if value},
        )

    def raw_ray(self) -> Sample:
        marker = self._marker("ray")
        command = [PYTHON, str(self.script), "--marker", str(marker)]
        body: dict[str, Any] = {"entrypoint": shlex.join(command), "entrypoint_num_cpus": 1}
        t0 = time.time()
        reply = self.ray.post(f"{self.ray_url}/api/jobs/", json=body, timeout=60)
        t_post = time.time()
        if reply.status_code != 200:
            raise BenchError(f"POST /api/jobs/: {reply.status_code} {reply.text}")
        job_id = str(reply.json()["submission_id"])
        seen: dict[str, float] = {}

        def done(status: str, now: float) -> bool:
            if status in ("RUNNING", "SUCCEEDED"):
                seen.setdefault("running", now)
            return status in RAY_ENDED

        poller = Poller(f"Ray job {job_id}", t0)
        status, t_end = poller.until(lambda: self._ray_status(job_id), done)
        if status != "SUCCEEDED":
            raise BenchError(f"Ray job {job_id} ended {status}")
        mark = read_marker(marker)
        return Sample(
            "ray",
            job_id,
            t_post - t0,
            mark["created"] - t0 if mark.get("created") else None,
            mark["started"] - t0,
            seen["running"] - t0 if "running" in seen else None,
            t_end - t0,
            None,
            poller.statuses,
            {"t0": t0, "posted": t_post, "ended_seen": t_end}
            | {f"entry_{key}": value for key, value in mark.items() if value},
        )

    def direct(self) -> Sample:
        marker = self._marker("direct")
        t0 = time.time()
        subprocess.run(
            [PYTHON, str(self.script), "--marker", str(marker)],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        t_end = time.time()
        mark = read_marker(marker)
        return Sample(
            "direct",
            f"pid-{marker.stem}",
            None,
            mark["created"] - t0 if mark.get("created") else None,
            mark["started"] - t0,
            None,
            t_end - t0,
        )


def _catalog_id(file_name: str, key: str, name: str, id_key: str) -> str:
    items = json.loads((ROOT / "chalicelib" / "catalog" / file_name).read_text())
    for item in items:
        if item.get(key) == name:
            return str(item[id_key])
    raise BenchError(f"no {name!r} in chalicelib/catalog/{file_name}")


FLAVOR_ID = _catalog_id("flavors.json", "name", FLAVOR, "id")
IMAGE_ID = _catalog_id("images.json", "imageName", CPU_IMAGE, "imageId")


# --------------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _values(samples: list[Sample], attr: str) -> list[float]:
    return [v for s in samples if (v := getattr(s, attr)) is not None]


@dataclass
class Summary:
    n: int
    p50: float
    p95: float
    low: float
    high: float


def summarize(values: list[float]) -> Summary | None:
    if not values:
        return None
    return Summary(
        len(values), percentile(values, 0.5), percentile(values, 0.95), min(values), max(values)
    )


METHODS = ("openmaker", "ray", "direct")
MEASURES = (
    ("submit_call", "submit HTTP call"),
    ("created", "submit -> entry process created"),
    ("started", "submit -> entry point started"),
    ("running", "submit -> RUNNING shown"),
    ("complete", "submit -> COMPLETE / SUCCEEDED / exit"),
    ("ray_ended", "submit -> its Ray job SUCCEEDED"),
)


def summaries(samples: dict[str, list[Sample]]) -> dict[str, dict[str, Summary | None]]:
    return {
        attr: {method: summarize(_values(samples[method], attr)) for method in METHODS}
        for attr, _ in MEASURES
    }


def _ms(summary: Summary | None, which: str) -> str:
    return "-" if summary is None else f"{getattr(summary, which) * 1000:.0f}"


def _ratio(top: Summary | None, bottom: Summary | None) -> str:
    if top is None or bottom is None or bottom.p50 <= 0:
        return "-"
    return f"{top.p50 / bottom.p50:.2f}x"


def render_table(table: dict[str, dict[str, Summary | None]]) -> str:
    head = (
        "measure (ms)",
        "OpenMaker p50",
        "p95",
        "raw Ray p50",
        "p95",
        "direct p50",
        "p95",
        "OM / raw Ray",
        "OM / direct",
    )
    rows: list[tuple[str, ...]] = []
    for attr, label in MEASURES:
        row = table[attr]
        om, ray, direct = row["openmaker"], row["ray"], row["direct"]
        rows.append(
            (
                label,
                _ms(om, "p50"),
                _ms(om, "p95"),
                _ms(ray, "p50"),
                _ms(ray, "p95"),
                _ms(direct, "p50"),
                _ms(direct, "p95"),
                _ratio(om, ray),
                # Only where the plain process has the same end point (it has no submit).
                _ratio(om, direct) if attr in ("started", "complete") else "-",
            )
        )
    return markdown(head, rows)


@dataclass
class Goal:
    goal: str
    figure: str
    passed: bool


def evaluate_goals(table: dict[str, dict[str, Summary | None]]) -> list[Goal]:
    goals: list[Goal] = []
    started = table["started"]["openmaker"]
    if started is not None:
        goals.append(
            Goal(
                f"submit -> entry point started p50 <= {STARTED_P50_GOAL_S:g} s",
                f"{started.p50:.3f} s",
                started.p50 <= STARTED_P50_GOAL_S,
            )
        )
    for attr, what in (("started", "submit -> started"), ("complete", "submit -> complete")):
        om, ray = table[attr]["openmaker"], table[attr]["ray"]
        if om is not None and ray is not None and ray.p50 > 0:
            ratio = om.p50 / ray.p50
            goals.append(
                Goal(
                    f"platform overhead <= {OVERHEAD_GOAL:g}x raw Ray Jobs ({what}, p50)",
                    f"{ratio:.2f}x ({om.p50:.3f} vs {ray.p50:.3f} s)",
                    ratio <= OVERHEAD_GOAL,
                )
            )
    return goals


# --------------------------------------------------------------------------- breakdown

# Chains of phases: (first mark, ((label, mark that ends the phase), ...)). In each run a
# phase spans from the last mark present before it, so a chain always sums to its
# end-to-end figure; a phase whose end mark is missing (the driver changed) folds into the
# next one, and the "runs" column shows it.
Chain = tuple[str, tuple[tuple[str, str], ...]]
START_CHAIN: Chain = (
    "t0",
    (
        ("submit HTTP call (insert, Ray submit, answer)", "posted"),
        ("Ray: job accepted -> driver process created", "process_created"),
        ("driver: interpreter start + imports", "imported"),
        ("driver: set-up (control-plane client, store)", "job.start"),
        ("driver: control-plane GET job", "job.end"),
        ("driver: log sink + log meta", "stage.start"),
        ("driver: staging (source copy)", "stage.end"),
        ("driver: report RUNNING", "started.end"),
        ("driver: user process spawn", "start.end"),
        ("user process: interpreter start", "entry_started"),
    ),
)
END_CHAIN: Chain = (
    "entry_started",
    (
        ("entry point runs", "entry_ended"),
        ("driver notices the exit (polls every 0.2 s)", "watch.end"),
        ("driver: stop the metrics reporter (last sample)", "stop_monitor.end"),
        ("driver: drain output, COMPLETE_IN_PROGRESS, upload", "upload.end"),
        ("driver: log flush, result file, report COMPLETE", "report COMPLETE.end"),
        ("client sees COMPLETE (next GET)", "complete_seen"),
    ),
)
AFTER_CHAIN: Chain = (
    "report COMPLETE.end",
    (
        ("driver: clean-up and exit after COMPLETE", "driver_end"),
        ("driver exit -> Ray job SUCCEEDED seen", "ray_end_seen"),
    ),
)
RAY_CHAIN: Chain = (
    "t0",
    (
        ("submit HTTP call (POST /api/jobs/)", "posted"),
        ("Ray: job accepted -> entry process created", "entry_created"),
        ("user process: interpreter start", "entry_started"),
        ("entry point runs", "entry_ended"),
        ("entry point ended -> SUCCEEDED seen", "ended_seen"),
    ),
)


@dataclass
class PhaseFigure:
    group: str
    phase: str
    p50_ms: float
    mean_ms: float
    n: int


def phase_figures(group: str, chain: Chain, marks: list[dict[str, float]]) -> list[PhaseFigure]:
    first, steps = chain
    spans: dict[str, list[float]] = {label: [] for label, _ in steps}
    for run in marks:
        previous = run.get(first)
        if not previous:
            continue
        for label, end in steps:
            if run.get(end):
                spans[label].append(run[end] - previous)
                previous = run[end]
    return [
        PhaseFigure(group, label, percentile(v, 0.5) * 1000, sum(v) / len(v) * 1000, len(v))
        for label, v in spans.items()
        if v
    ]


def breakdown(samples: list[Sample], probes: Path, ray: list[Sample]) -> list[PhaseFigure]:
    marks: list[dict[str, float]] = []
    for sample in samples:
        path = probes / f"{sample.job_id}.json"
        try:
            probe: dict[str, float] = json.loads(path.read_text())
        except (OSError, ValueError):
            print(f"  ! no driver probe for {sample.job_id}", file=sys.stderr)
            continue
        marks.append({**sample.marks, **probe})
    figures = phase_figures("OpenMaker, submit -> entry point started", START_CHAIN, marks)
    figures += phase_figures("OpenMaker, entry point started -> COMPLETE", END_CHAIN, marks)
    figures += phase_figures("OpenMaker, after COMPLETE", AFTER_CHAIN, marks)
    figures += phase_figures("raw Ray Jobs (the main runs)", RAY_CHAIN, [s.marks for s in ray])
    return figures


def render_breakdown(figures: list[PhaseFigure]) -> str:
    blocks: list[str] = []
    for group in dict.fromkeys(f.group for f in figures):
        rows = [
            (f.phase, f"{f.p50_ms:.0f}", f"{f.mean_ms:.0f}", str(f.n))
            for f in figures
            if f.group == group
        ]
        total_p50 = sum(f.p50_ms for f in figures if f.group == group)
        total_mean = sum(f.mean_ms for f in figures if f.group == group)
        rows.append(("sum", f"{total_p50:.0f}", f"{total_mean:.0f}", ""))
        head = ("phase", "p50 ms", "mean ms", "runs")
        blocks.append(f"{group}\n" + markdown(head, rows))
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------- main


def source_digests() -> dict[str, str]:
    """A digest per file of the code a run goes through (app, chalicelib, openmaker,
    runners): it ties figures to a version of the code, and names what changed mid-run."""
    paths = [ROOT / "app.py", ROOT / "requirements.txt"]
    for package in ("chalicelib", "openmaker", "runners"):
        paths += sorted((ROOT / package).rglob("*.py"))
    digests: dict[str, str] = {}
    for path in paths:
        with contextlib.suppress(OSError):
            digests[str(path.relative_to(ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def source_fingerprint(digests: dict[str, str] | None = None) -> str:
    digest = hashlib.sha256()
    for name, value in sorted((digests or source_digests()).items()):
        digest.update(f"{name}\0{value}\n".encode())
    return digest.hexdigest()[:12]


def machine_description() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                model = row.split(":", 1)[1].strip()
                break
    ray = "?"
    with contextlib.suppress(metadata.PackageNotFoundError):
        ray = metadata.version("ray")
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, Ray {ray}"


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


@dataclass
class Usage:
    """CPU during a pass, as shares of the whole machine: this bench's process tree (the
    bench, the Ray head, its workers and job drivers, the platform), every other process,
    and what no sample saw (processes that lived less than a sampling period)."""

    wall_s: float
    ours: float
    other: float
    unseen: float


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.25


def _machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / _CLOCK_TICKS, total / _CLOCK_TICKS


# (pid, start time in ticks) -> (own CPU seconds, in this bench's process tree)
Snapshot = dict[tuple[int, int], tuple[float, bool]]


def _process_snapshot(root: int) -> Snapshot:
    stats: dict[int, list[str]] = {}
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry.name)
        stats[pid] = fields
        children.setdefault(int(fields[1]), []).append(pid)
    tree: set[int] = set()
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid not in tree:
            tree.add(pid)
            stack += children.get(pid, [])
    # After the ")": ppid is fields[1], utime and stime fields[11:13], the start time
    # fields[19] (fields 4, 14-15 and 22 of proc(5)). Reaped children's times (cutime) are
    # left out: the raylet does not collect its workers', so they would be lost or doubled.
    return {
        (pid, int(f[19])): ((int(f[11]) + int(f[12])) / _CLOCK_TICKS, pid in tree)
        for pid, f in stats.items()
    }


class CpuMeter:
    """Samples every process's own CPU time every ``SAMPLE_S`` in a thread, so that the
    short-lived ones (Ray workers, job drivers, the entry points) are seen before they end."""

    def __init__(self) -> None:
        self.root = os.getpid()
        self.start_wall = time.monotonic()
        self.start_busy = _machine_busy_s()
        first = _process_snapshot(self.root)
        self.base = {key: cpu for key, (cpu, _) in first.items()}
        self.last = dict(first)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True, name="cpu-meter")
        self.thread.start()

    def _sample(self) -> None:
        while not self.stopped.wait(SAMPLE_S):
            self._merge(_process_snapshot(self.root))

    def _merge(self, snapshot: Snapshot) -> None:
        for key, (cpu, ours) in snapshot.items():
            earlier = self.last.get(key)
            self.last[key] = (cpu, ours or (earlier is not None and earlier[1]))

    def usage(self) -> Usage:
        self.stopped.set()
        self.thread.join()
        self._merge(_process_snapshot(self.root))
        busy, total = _machine_busy_s()
        used = {True: 0.0, False: 0.0}
        for key, (cpu, ours) in self.last.items():
            used[ours] += max(0.0, cpu - self.base.get(key, 0.0))
        capacity = max(total - self.start_busy[1], 1e-9)
        rest = max(0.0, (busy - self.start_busy[0]) - used[True] - used[False])
        return Usage(
            time.monotonic() - self.start_wall,
            used[True] / capacity,
            used[False] / capacity,
            rest / capacity,
        )


def measure(
    runner: Runner, runs: int, pause: float, methods: tuple[str, ...]
) -> tuple[dict[str, list[Sample]], Usage]:
    """Warm each method once (thrown away), then ``runs`` interleaved rounds."""
    calls: dict[str, Callable[[], Sample]] = {
        "openmaker": runner.openmaker,
        "ray": runner.raw_ray,
        "direct": runner.direct,
    }
    for method in methods:
        calls[method]()
    samples: dict[str, list[Sample]] = {method: [] for method in METHODS}
    meter = CpuMeter()
    try:
        for index in range(runs):
            for method in methods:
                time.sleep(pause)
                sample = calls[method]()
                samples[method].append(sample)
            parts = [
                f"{m} start {samples[m][-1].started * 1000:5.0f} ms"
                f" end {samples[m][-1].complete * 1000:5.0f} ms"
                for m in methods
            ]
            print(f"  run {index + 1:>3}/{runs}: " + ";  ".join(parts), flush=True)
    finally:
        usage = meter.usage()
    print(
        f"  CPU over {usage.wall_s:.0f} s: this bench's processes {usage.ours:.0%} of the "
        f"machine, other processes {usage.other:.0%}, unseen {usage.unseen:.0%}"
        f" (processes that lived < {SAMPLE_S:g} s)",
        flush=True,
    )
    return samples, usage


def write_json(
    args: argparse.Namespace,
    machine: str,
    outcome: Outcome,
    table: dict[str, dict[str, Summary | None]],
    goals: list[Goal],
) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"dispatch-{stamp}.json"
    document = {
        "when": stamp,
        "machine": machine,
        "sources": source_fingerprint(),
        "settings": {
            "runs": args.runs,
            "breakdown_runs": args.breakdown_runs,
            "pause_s": args.pause,
            "poll_s": POLL_S,
            "ray_num_cpus": RAY_CPUS,
            "flavor": FLAVOR,
            "image": CPU_IMAGE,
        },
        "summary_s": {
            attr: {m: asdict(s) if s else None for m, s in row.items()}
            for attr, row in table.items()
        },
        "cpu": asdict(outcome.usage),
        "samples": {m: [asdict(s) for s in runs] for m, runs in outcome.samples.items()},
        "goals": [asdict(goal) for goal in goals],
        "breakdown": [asdict(figure) for figure in outcome.figures],
        "breakdown_cpu": asdict(outcome.probe_usage) if outcome.probe_usage else None,
        "breakdown_samples": [asdict(s) for s in outcome.probe_samples],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each method")
    parser.add_argument(
        "--breakdown-runs",
        type=int,
        default=10,
        help="OpenMaker runs under the driver probe, on a second platform (0: none)",
    )
    parser.add_argument(
        "--pause", type=float, default=0.3, help="seconds of quiet before each run"
    )
    parser.add_argument("--no-json", dest="json", action="store_false", help="no JSON file")
    parser.add_argument("--keep-home", action="store_true", help="keep the temp dir and logs")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.breakdown_runs < 0 or args.pause < 0:
        parser.error("--runs must be positive, --breakdown-runs and --pause not negative")
    return args


_interrupted = False


def _raise_interrupt(signum: int, _frame: Any) -> None:
    """The first Ctrl-C or SIGTERM unwinds to the clean-up; later ones do not cut it short."""
    global _interrupted
    if _interrupted:
        return
    _interrupted = True
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass
class Outcome:
    samples: dict[str, list[Sample]]
    usage: Usage
    probe_samples: list[Sample]
    probe_usage: Usage | None
    figures: list[PhaseFigure]


def run_bench(args: argparse.Namespace, work: Path) -> Outcome:
    print(f"\n== Ray head ({RAY_CPUS} CPUs) and openmaker up in {work}", flush=True)
    with ray_head_running(work / "ray-home") as ray_url:
        print(f"  ray: {ray_url}", flush=True)
        with platform_running(work / "openmaker-home", ray_url) as running:
            print(f"  openmaker: {running.base_url}", flush=True)
            runner = Runner(running, ray_url, work / "runs")
            try:
                print(f"\n== {args.runs} runs of each (after one warm-up each)", flush=True)
                samples, usage = measure(runner, args.runs, args.pause, METHODS)
            finally:
                runner.close()
        probe_samples: list[Sample] = []
        probe_usage: Usage | None = None
        figures: list[PhaseFigure] = []
        if args.breakdown_runs:
            probes = work / "probes"
            probes.mkdir()
            probe = work / "driver_probe.py"
            probe.write_text(DRIVER_PROBE.replace("@OUT@", repr(str(probes))))
            runner_python = f"{shlex.quote(PYTHON)} {shlex.quote(str(probe))}"
            print(
                f"\n== breakdown: {args.breakdown_runs} OpenMaker runs with the driver probe "
                "(a second openmaker up, same Ray head)",
                flush=True,
            )
            with platform_running(work / "probe-home", ray_url, runner_python) as running:
                runner = Runner(running, ray_url, work / "probe-runs")
                try:
                    probed, probe_usage = measure(
                        runner, args.breakdown_runs, args.pause, ("openmaker",)
                    )
                finally:
                    runner.close()
            probe_samples = probed["openmaker"]
            figures = breakdown(probe_samples, probes, samples["ray"])
    return Outcome(samples, usage, probe_samples, probe_usage, figures)


def report(
    args: argparse.Namespace, machine: str, sources: dict[str, str], outcome: Outcome
) -> None:
    table = summaries(outcome.samples)
    now = source_digests()
    changed = sorted(n for n in {*sources, *now} if sources.get(n) != now.get(n))
    if changed:
        print(
            f"\n! the sources changed during the run ({', '.join(changed[:6])}"
            f"{', ...' if len(changed) > 6 else ''}): the figures may mix versions; run again"
        )
    print(f"\n### Dispatch latency, {args.runs} runs each (ms; ratios on p50)\n")
    print(render_table(table))
    skipped = [
        s.statuses
        for s in outcome.samples["openmaker"]
        if "RUNNING" not in s.statuses and s.running is not None
    ]
    if skipped:
        print(
            f"  ({len(skipped)} OpenMaker run(s) went past RUNNING between two polls; "
            "their 'RUNNING shown' is the first later status)"
        )
    for what, usage in (("runs", outcome.usage), ("breakdown runs", outcome.probe_usage)):
        if usage is not None and usage.other > NOISY_SHARE:
            print(
                f"  ! other processes used {usage.other:.0%} of the machine during the {what}:"
                " the figures are disturbed; run again on a quiet machine"
            )
    if outcome.figures:
        print(f"\n### Where the time goes ({len(outcome.probe_samples)} probed runs)\n")
        print(render_breakdown(outcome.figures))
    goals = evaluate_goals(table)
    print("\nGoals")
    for goal in goals:
        verdict = "PASS" if goal.passed else "MISS"
        print(f"  {verdict}  {goal.goal:<66} {goal.figure}")
    if args.json:
        path = write_json(args, machine, outcome, table, goals)
        print(f"\nJSON: {path.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Installed explicitly: a shell starts background jobs with SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    machine = machine_description()
    sources = source_digests()
    print(
        f"OpenMaker dispatch bench on {machine}; load average {load_average()}; "
        f"sources {source_fingerprint(sources)}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="om-dispatch-"))
    keep = args.keep_home
    try:
        outcome = run_bench(args, work)
    except KeyboardInterrupt:
        print("\ninterrupted; the platform and the Ray head are stopped", file=sys.stderr)
        return 130
    except (RuntimeError, requests.RequestException, subprocess.CalledProcessError) as exc:
        # RuntimeError: ours (BenchError) and RayHead's. The logs stay for a look.
        print(f"\nbench failed: {exc}", file=sys.stderr)
        keep = True
        return 1
    finally:
        if keep:
            print(f"kept {work} (platform logs: *-up.log)", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(args, machine, sources, outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
