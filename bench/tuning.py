"""Tuning overhead: a hyperparameter tuning through OpenMaker against raw Optuna on Ray.

On one local Ray head (``RayHead``, 4 logical CPUs) and one ``python -m openmaker up`` that
uses it (``OPENMAKER_RAY_ADDRESS``), the bench runs ``--trials`` (40) trials of the same
objective script (it sleeps ``--sleep`` seconds, 0.2, then prints ``loss=(x - 3)^2`` for its
``--x``), ``--parallel`` (2) at a time, two ways:

* **OpenMaker**: ``POST /v1.0/appkeys/{appkey}/hyperparameter-tunings`` (RANDOM, seed 0,
  ``x`` a double in [0, 10], metric ``loss`` MINIMIZE, flavor m2.c1m2, the CPU training
  image, a ``file://`` source folder), then ``GET`` the tuning every 0.1 s until COMPLETE;
  the wall clock runs from just before the POST to the first GET that shows COMPLETE.
  Each trial's created/started/ended times come from ``GET .../trials`` afterwards.
* **raw**: ``bench/raw_tune.py``, the script a user of bare Ray and Optuna writes, run as
  ``python raw_tune.py`` in a child process: ``ray.init`` on the head's GCS address (from
  ``ray-head.json``), a study with ``RandomSampler(seed=0)`` on an RDB storage (a fresh
  SQLite file where the platform would keep it, with the same connect options),
  ``study.ask()`` with up to ``--parallel`` trials in flight, each a Ray task (``num_cpus=1``)
  running the same script with ``subprocess.run`` and parsing ``loss=`` from its output,
  ``study.tell`` as each one ends, until ``--trials`` trials. The wall clock runs from the
  child's start to its exit (its imports, ``ray.init`` and Ray's shutdown at exit count, as
  the platform's driver start counts on the other side); its study -> last ``tell`` is
  reported too. Where the head runs with Ray's token auth (a token in
  ``~/.ray/auth_token``), this process and the script turn it on the way ``ray start`` did
  for the head; Ray reads the token itself.

One small warm-up of each comes first (thrown away). Then ``--rounds`` rounds (OpenMaker,
then raw, ``--pause`` seconds of quiet before each). A probe times, in this bench's own job,
a new actor against a task on a warm worker and a user's script start-up (``python -c
"import optuna, ray"``).

It prints both wall clocks, the ratio OpenMaker / raw (the goal's), the per-trial overhead of the
platform, the p50 trial durations, the breakdown and the goal with PASS/MISS (it reports,
it never asserts), and writes the figures as JSON to ``bench/results/tuning-<UTC>.json``.
See bench/README.md.

Usage: ``.venv/bin/python bench/tuning.py [--trials 40] [--parallel 2] [--sleep 0.2]
[--rounds 1] [--probes 5] [--pause 2] [--no-json] [--keep-home]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray
import requests
from dispatch import (
    CPU_IMAGE,
    FLAVOR,
    FLAVOR_ID,
    IMAGE_ID,
    NOISY_SHARE,
    PYTHON,
    RAY_CPUS,
    RESULTS_DIR,
    ROOT,
    SAMPLE_S,
    BenchError,
    Chain,
    CpuMeter,
    PhaseFigure,
    Platform,
    Usage,
    load_average,
    machine_description,
    percentile,
    phase_figures,
    platform_running,
    ray_head_running,
    render_breakdown,
    source_digests,
    source_fingerprint,
)
from mdtable import markdown

from chalicelib.dispatch.ray_auth import ray_auth_token
from runners.tuning.search import optuna_storage_url

SEED = 0
X_LOW, X_HIGH = 0.0, 10.0
POLL_S = 0.1
RATIO_GOAL = 1.3
RAW_SCRIPT = Path(__file__).with_name("raw_tune.py")  # the raw side: a user's tuning script
TUNING_TIMEOUT_S = 1800.0
FLAVOR_MEMORY_BYTES = 2048 * 2**20  # m2.c1m2: 1 vCPU, 2 GiB (the trial actors' request)
TUNING_ENDED = {"COMPLETE", "FAIL_HYPERPARAMETER_TUNING", "CREATE_FAILED", "STOPPED"}

# The objective of every trial on both sides: sleeps, then prints its loss.
OBJECTIVE = """\
import argparse
import time

parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float, required=True)
args, _ = parser.parse_known_args()
time.sleep(@SLEEP@)
print(f"loss={(args.x - 3) ** 2:.6f}", flush=True)
"""


# --------------------------------------------------------------------------- samples


@dataclass
class TrialTimes:
    """One trial; times in seconds from just before the POST (or the study's creation).

    OpenMaker: ``created``, ``started``, ``ended`` are the trial's createdDatetime (the
    driver's CREATED report), startedDatetime (its RUNNING report: the code was started)
    and endedDatetime (its SUCCEEDED report, after the upload). Raw: ``created`` is the
    ``ask``, ``started``/``ended`` the Ray task's own start and end, ``settled`` the
    ``tell``."""

    number: int
    status: str
    value: float | None
    created: float
    started: float | None
    ended: float | None
    settled: float | None

    @property
    def whole(self) -> float | None:
        """created (ask) -> settled (tell): the slot time of one trial."""
        return None if self.settled is None else self.settled - self.created

    @property
    def running(self) -> float | None:
        """started -> ended: the code's run as each side sees it."""
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


@dataclass
class Round:
    method: str  # "openmaker" or "raw"
    wall_s: float
    trials: list[TrialTimes]
    marks: dict[str, float] = field(default_factory=dict)  # absolute times (time.time())
    ident: str = ""  # the tuning's id or the study's name
    statuses: list[str] = field(default_factory=list)


def _epoch(wire: str | None) -> float | None:
    """The platform's wire datetime (``2026-11-22T07:02:00.123+00:00``) as a Unix time."""
    if not wire:
        return None
    return datetime.fromisoformat(wire).astimezone(UTC).timestamp()


# --------------------------------------------------------------------------- OpenMaker


class PlatformSide:
    """Tunings through the platform's public API, as the SDK sends them."""

    def __init__(self, running: Platform, work: Path, source: Path) -> None:
        self.platform = running
        self.work = work
        self.source = source
        self.session = requests.Session()
        self.session.headers.update(running.headers)
        self.url = f"{running.api_url}/hyperparameter-tunings"
        self.experiment_id = self._experiment()

    def close(self) -> None:
        self.session.close()

    def _experiment(self) -> str:
        reply = self.session.post(
            f"{self.platform.api_url}/experiments",
            json={"experimentName": f"tuning-bench-{uuid.uuid4().hex[:6]}"},
            timeout=30,
        )
        if reply.status_code != 201:
            raise BenchError(f"cannot create an experiment: {reply.status_code} {reply.text}")
        return str(reply.json()["experiment"]["experimentId"])

    def body(self, name: str, trials: int, parallel: int) -> dict[str, Any]:
        return {
            "hyperparameterTuningName": name,
            "experimentId": self.experiment_id,
            "imageId": IMAGE_ID,
            "flavorId": FLAVOR_ID,
            "instanceCount": parallel,  # the SDK: distributed nodes (1) x parallel trials
            "parallelTrialCount": parallel,
            "sourceDirUri": f"file://{self.source}",
            "entryPoint": "objective.py",
            "modelUploadUri": f"file://{self.work / 'models' / name}",
            "hyperparameterSpecList": [
                {
                    "hyperparameterName": "x",
                    "hyperparameterTypeCode": "double",
                    "hyperparameterMinValue": f"{X_LOW:g}",
                    "hyperparameterMaxValue": f"{X_HIGH:g}",
                }
            ],
            "metricList": [{"name": "loss"}],
            "objectiveMetric": {"name": "loss"},
            "objectiveTypeCode": "MINIMIZE",
            "maxTrialCount": trials,
            "tuningStrategyName": "RANDOM",
            "tuningStrategyRandomState": SEED,
            "timeoutMinutes": 60,
        }

    def _get(self, path: str = "") -> dict[str, Any]:
        reply = self.session.get(f"{self.url}/{path}", timeout=30)
        if reply.status_code != 200:
            raise BenchError(
                f"GET hyperparameter-tunings/{path}: {reply.status_code} {reply.text}"
            )
        found: dict[str, Any] = reply.json()
        return found

    def run(self, trials: int, parallel: int) -> Round:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        body = self.body(name, trials, parallel)
        t0 = time.time()
        reply = self.session.post(self.url, json=body, timeout=60)
        t_post = time.time()
        if reply.status_code != 201:
            raise BenchError(f"POST /hyperparameter-tunings: {reply.status_code} {reply.text}")
        tuning_id = str(reply.json()["hyperparameterTuning"]["hyperparameterTuningId"])
        statuses: list[str] = []
        next_at = time.time()
        while True:
            view = self._get(tuning_id)["hyperparameterTuning"]
            now = time.time()
            status = str(view["hyperparameterTuningStatusCode"])
            if not statuses or statuses[-1] != status:
                statuses.append(status)
            if status in TUNING_ENDED:
                break
            if now - t0 > TUNING_TIMEOUT_S:
                raise BenchError(f"tuning {tuning_id} went {statuses} in {TUNING_TIMEOUT_S:.0f} s")
            next_at = max(next_at + POLL_S, now)  # a fixed cadence; a slow answer delays
            time.sleep(max(0.0, next_at - time.time()))
        if status != "COMPLETE":
            reason = view.get("hyperparameterTuningStatusReason")
            raise BenchError(f"tuning {tuning_id} ended {status}: {reason}")
        listed = self._get(f"{tuning_id}/trials")["trialList"]
        rows: list[TrialTimes] = []
        for item in listed:
            created = _epoch(item.get("createdDatetime"))
            started, ended = _epoch(item.get("startedDatetime")), _epoch(item.get("endedDatetime"))
            value = item.get("objectiveMetricValue")
            rows.append(
                TrialTimes(
                    int(str(item["trialName"]).rsplit("-", 1)[-1]),
                    str(item["trialStatusCode"]),
                    None if value is None else float(value),
                    (created or t0) - t0,
                    None if started is None else started - t0,
                    None if ended is None else ended - t0,
                    None if ended is None else ended - t0,
                )
            )
        rows.sort(key=lambda row: row.created)
        failed = [f"{row.number} {row.status}" for row in rows if row.status != "SUCCEEDED"]
        if failed or len(rows) != trials:
            raise BenchError(
                f"tuning {tuning_id}: {len(rows)} trials, not all SUCCEEDED: {failed}"
            )
        marks = {"t0": t0, "posted": t_post, "complete_seen": now}
        for key in ("createdDatetime", "startedDatetime", "endedDatetime"):
            stamp = _epoch(view.get(key))
            if stamp is not None:
                marks[f"tuning_{key}"] = stamp
        return Round("openmaker", now - t0, rows, marks, tuning_id, statuses)


# --------------------------------------------------------------------------- raw


def noop() -> float:
    return time.time()


class ProbeActor:
    """A trivial actor: what any Ray actor costs to start, without the platform's imports."""

    def ping(self) -> float:
        return time.time()


def _join_token_auth() -> bool:
    """Turn Ray's token auth on in this process the way ``ray start`` did for the head: a
    token in Ray's usual places (``RAY_AUTH_TOKEN``, ``~/.ray/auth_token``) turns it on unless
    ``RAY_AUTH_MODE`` says otherwise. A driver that joins a running cluster is not switched
    on by itself; Ray reads the token on its own. Whether this turned it on."""
    if "RAY_AUTH_MODE" in os.environ or ray_auth_token() is None:
        return False
    try:
        from ray._private.authentication import authentication_token_setup as setup
    except ImportError:  # a Ray without token auth
        return False
    return bool(setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False))


class RawSide:
    """The driver a user of bare Ray + Optuna writes, in this process."""

    def __init__(self, gcs_address: str, work: Path, script: Path) -> None:
        self.token_auth = _join_token_auth()
        self.gcs_address = gcs_address
        t0 = time.time()
        ray.init(
            address=gcs_address,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
        self.init_s = time.time() - t0
        _install_signals()  # ray.init puts its own SIGTERM handler in: take it back
        self.work = work
        self.script = script

    def close(self) -> None:
        with contextlib.suppress(Exception):
            ray.shutdown()

    def run(self, trials: int, parallel: int) -> Round:
        """``bench/raw_tune.py`` as a user runs it, timed from its start to its exit."""
        name = f"raw-{uuid.uuid4().hex[:8]}"
        # Where the platform would keep the studies of a database here (same SQLite options).
        url, _engine_kwargs = optuna_storage_url(f"sqlite:///{self.work / name}.db")
        command = [
            PYTHON,
            str(RAW_SCRIPT),
            *("--address", self.gcs_address, "--storage", url, "--study", name),
            *("--script", str(self.script), "--python", PYTHON),
            *("--trials", str(trials), "--parallel", str(parallel), "--seed", str(SEED)),
            *("--low", repr(X_LOW), "--high", repr(X_HIGH)),
        ]
        env = dict(os.environ)
        if self.token_auth:
            env["RAY_AUTH_MODE"] = "token"  # as for this process (see _join_token_auth)
        t0 = time.time()
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        t_end = time.time()
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            said = (done.stdout + done.stderr)[-2000:]
            raise BenchError(f"{RAW_SCRIPT.name} exited {done.returncode}: {said}")
        found = json.loads(lines[-1])
        rows = [
            TrialTimes(
                int(t["number"]),
                "SUCCEEDED",
                float(t["value"]),
                t["asked"] - t0,
                t["started"] - t0,
                t["ended"] - t0,
                t["told"] - t0,
            )
            for t in found["trials"]
        ]
        rows.sort(key=lambda row: row.created)
        marks = {"t0": t0, "exited": t_end, **found["marks"]}
        return Round("raw", t_end - t0, rows, marks, name)

    # -- what a trial's worker costs -----------------------------------------------------

    def probe(self, count: int) -> dict[str, list[float]]:
        """Round trips of a no-op task on a warm worker and starts of a new actor (with the
        flavor's request, up to its first answer), one at a time, ``count`` of each."""
        task = ray.remote(num_cpus=1)(noop)
        actor_class: Any = ray.remote(ProbeActor)
        ray.get(task.remote())  # a warm worker
        tasks: list[float] = []
        actors: list[float] = []
        for _ in range(count):
            t0 = time.perf_counter()
            ray.get(task.remote())
            tasks.append(time.perf_counter() - t0)
        for _ in range(count):
            t0 = time.perf_counter()
            actor = actor_class.options(num_cpus=1, memory=FLAVOR_MEMORY_BYTES).remote()
            ray.get(actor.ping.remote())
            actors.append(time.perf_counter() - t0)
            ray.kill(actor, no_restart=True)
            time.sleep(0.5)  # its process gone before the next
        # What a user's tuning script pays before its study (left out of the raw wall clock):
        # a fresh interpreter importing ray and optuna (ray.init is init_s).
        imports: list[float] = []
        for _ in range(count):
            t0 = time.perf_counter()
            subprocess.run([PYTHON, "-c", "import optuna, ray"], check=True)
            imports.append(time.perf_counter() - t0)
        return {"task_round_trip_s": tasks, "actor_start_s": actors, "script_imports_s": imports}


# --------------------------------------------------------------------------- statistics


def p50(values: list[float]) -> float:
    return percentile(values, 0.5)


def _known(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def slot_gaps(trials: list[TrialTimes], parallel: int) -> list[float]:
    """How long a freed slot stays empty: the i-th trial to end frees the slot that the
    (parallel + i)-th trial to be created takes; the gap is settled -> created."""
    ended = sorted(_known([t.settled for t in trials]))
    created = sorted(t.created for t in trials)
    return [created[parallel + i] - end for i, end in enumerate(ended[: len(created) - parallel])]


@dataclass
class Figures:
    """What the report shows, from the measured rounds (medians over rounds)."""

    om_wall_s: float
    raw_wall_s: float  # the raw script, start to exit
    ratio: float  # the goal's ratio: OpenMaker / the raw script
    raw_loop_s: float  # the raw script's study -> last tell (warm Ray, no start-up)
    loop_ratio: float
    overhead_ms: float  # (OM wall - raw wall) / trials x parallel
    om_whole_p50_s: float
    raw_whole_p50_s: float
    om_running_p50_s: float
    raw_running_p50_s: float
    om_gap_p50_s: float
    raw_gap_p50_s: float


def figures(rounds: list[Round], trials: int, parallel: int) -> Figures:
    om = [r for r in rounds if r.method == "openmaker"]
    raw = [r for r in rounds if r.method == "raw"]
    om_wall, raw_wall = p50([r.wall_s for r in om]), p50([r.wall_s for r in raw])

    def across(side: list[Round], attr: str) -> float:
        return p50(_known([getattr(t, attr) for r in side for t in r.trials]))

    def gaps(side: list[Round]) -> float:
        return p50([g for r in side for g in slot_gaps(r.trials, parallel)])

    raw_loop = p50([r.marks["end"] - r.marks["study"] for r in raw])
    return Figures(
        om_wall,
        raw_wall,
        om_wall / raw_wall,
        raw_loop,
        om_wall / raw_loop,
        (om_wall - raw_wall) / trials * parallel * 1000,
        across(om, "whole"),
        across(raw, "whole"),
        across(om, "running"),
        across(raw, "running"),
        gaps(om),
        gaps(raw),
    )


# Chains of phases for dispatch.phase_figures: consecutive, so each sums to its end to end.
TUNING_CHAIN: Chain = (
    "t0",
    (
        ("submit HTTP call (insert, capacity check, Ray job submit)", "posted"),
        ("Ray job start -> driver reports RUNNING (imports, study, ray.init)", "running"),
        ("RUNNING -> first trial CREATED", "first_created"),
        ("first trial CREATED -> last trial SUCCEEDED (the trials)", "last_ended"),
        ("last trial SUCCEEDED -> COMPLETE seen (clean-up, report, next GET)", "complete_seen"),
    ),
)
RAW_CHAIN: Chain = (
    "t0",
    (
        ("python starts, imports optuna and ray", "imported"),
        ("ray.init (joins the cluster)", "initialized"),
        ("study created, the trials run, last tell", "end"),
        ("exit (ray.shutdown at exit)", "exited"),
    ),
)
OM_TRIAL_CHAIN: Chain = (
    "created",
    (
        ("CREATED reported -> RUNNING reported (slot actor: stage, start the code)", "started"),
        ("the code runs; exit seen, outputs uploaded, SUCCEEDED reported", "ended"),
    ),
)
RAW_TRIAL_CHAIN: Chain = (
    "created",
    (
        ("ask -> Ray task running (a warm worker)", "started"),
        ("task: the objective's process (interpreter, sleep)", "ended"),
        ("task ended -> ray.wait returns, tell", "settled"),
    ),
)


def tuning_marks(r: Round) -> dict[str, float]:
    m = r.marks
    marks: dict[str, float] = {k: m[k] for k in ("t0", "posted", "complete_seen") if k in m}
    if "tuning_startedDatetime" in m:
        marks["running"] = m["tuning_startedDatetime"]
    if r.trials:
        marks["first_created"] = m["t0"] + min(t.created for t in r.trials)
        marks["last_ended"] = m["t0"] + max(_known([t.settled for t in r.trials]))
    return marks


def trial_marks(r: Round) -> list[dict[str, float]]:
    """Absolute marks of each trial."""
    t0 = r.marks["t0"]
    found = []
    for t in r.trials:
        marks = {"created": t0 + t.created}
        for key in ("started", "ended", "settled"):
            value = getattr(t, key)
            if value is not None:
                marks[key] = t0 + value
        found.append(marks)
    return found


def breakdown(rounds: list[Round]) -> list[PhaseFigure]:
    om = [r for r in rounds if r.method == "openmaker"]
    raw = [r for r in rounds if r.method == "raw"]
    found = phase_figures(
        "OpenMaker, submit -> COMPLETE seen (per tuning)",
        TUNING_CHAIN,
        [tuning_marks(r) for r in om],
    )
    found += phase_figures(
        "raw Ray + Optuna, python raw_tune.py start -> exit (per run)",
        RAW_CHAIN,
        [r.marks for r in raw],
    )
    found += phase_figures(
        "OpenMaker, one trial: CREATED -> SUCCEEDED (per trial)",
        OM_TRIAL_CHAIN,
        [marks for r in om for marks in trial_marks(r)],
    )
    found += phase_figures(
        "raw Ray + Optuna, one trial: ask -> tell (per trial)",
        RAW_TRIAL_CHAIN,
        [marks for r in raw for marks in trial_marks(r)],
    )
    return found


# --------------------------------------------------------------------------- rendering


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def render_main(f: Figures, rounds: list[Round], raw_init_s: float) -> str:
    om = [r for r in rounds if r.method == "openmaker"]
    raw = [r for r in rounds if r.method == "raw"]
    head = ("measure", "OpenMaker", "raw Ray + Optuna", "OM / raw")
    rows = [
        ("wall clock (s)", f"{f.om_wall_s:.2f}", f"{f.raw_wall_s:.2f}", f"{f.ratio:.2f}x"),
        (
            "raw without its start-up: study -> last tell (s)",
            "-",
            f"{f.raw_loop_s:.2f}",
            f"{f.loop_ratio:.2f}x",
        ),
        (
            "trials per second",
            f"{len(om[0].trials) / f.om_wall_s:.2f}",
            f"{len(raw[0].trials) / f.raw_wall_s:.2f}",
            "-",
        ),
        (
            "per trial: created -> settled, p50 (ms)",
            _ms(f.om_whole_p50_s),
            _ms(f.raw_whole_p50_s),
            f"{f.om_whole_p50_s / f.raw_whole_p50_s:.2f}x",
        ),
        (
            "per trial: started -> ended, p50 (ms)",
            _ms(f.om_running_p50_s),
            _ms(f.raw_running_p50_s),
            f"{f.om_running_p50_s / f.raw_running_p50_s:.2f}x",
        ),
        ("slot empty between trials, p50 (ms)", _ms(f.om_gap_p50_s), _ms(f.raw_gap_p50_s), "-"),
        ("platform overhead per trial (ms)", f"{f.overhead_ms:.0f}", "-", "-"),
    ]
    text = markdown(head, rows)
    if len(om) > 1 or len(raw) > 1:
        walls = "; ".join(
            f"{side} " + ", ".join(f"{r.wall_s:.2f}" for r in rs)
            for side, rs in (("OpenMaker", om), ("raw", raw))
        )
        text += f"\n\n(medians over rounds; walls {walls} s)"
    return (
        text + "\n\nwall clock: OpenMaker submit -> COMPLETE seen; raw `python raw_tune.py`"
        " start -> exit (imports, ray.init, the study, the trials: what a user runs instead)."
        " created -> settled: OpenMaker's trial createdDatetime -> endedDatetime"
        " (CREATED -> SUCCEEDED reports), raw ask -> tell. started -> ended: OpenMaker's"
        " startedDatetime -> endedDatetime (RUNNING -> SUCCEEDED), raw the Ray task's own"
        f" start -> end. ray.init from this bench took {raw_init_s * 1000:.0f} ms."
    )


def render_probe(probe: dict[str, list[float]]) -> str:
    labels = {
        "task_round_trip_s": "no-op task on a warm worker, round trip",
        "actor_start_s": "new actor (1 CPU, 2 GiB): .remote() -> first answer",
        "script_imports_s": "a user's script start: python -c 'import optuna, ray'",
    }
    rows = [
        (labels.get(key, key), _ms(p50(values)), _ms(max(values)), str(len(values)))
        for key, values in probe.items()
        if values
    ]
    return "Ray alone, in this bench's job (probe)\n" + markdown(
        ("what", "p50 ms", "max ms", "n"), rows
    )


# --------------------------------------------------------------------------- main


@dataclass
class Outcome:
    rounds: list[Round]
    raw_init_s: float
    usage_om: Usage | None
    usage_raw: Usage | None
    figures: list[PhaseFigure]
    probe: dict[str, list[float]]


def _gcs_address(ray_home: Path) -> str:
    try:
        state = json.loads((ray_home / "ray-head.json").read_text())
        return str(state["gcs_address"])
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"no gcs_address in {ray_home / 'ray-head.json'}: {exc}") from None


@contextlib.contextmanager
def metered(into: list[Usage]) -> Iterator[None]:
    meter = CpuMeter()
    try:
        yield
    finally:
        into.append(meter.usage())


def _say_round(r: Round) -> None:
    whole = p50(_known([t.whole for t in r.trials]))
    print(
        f"  {r.method:<9} {len(r.trials)} trials in {r.wall_s:6.2f} s"
        f"  (per trial p50 {whole * 1000:.0f} ms)",
        flush=True,
    )


def run_bench(args: argparse.Namespace, work: Path) -> Outcome:
    source = work / "src"
    source.mkdir(parents=True)
    script = source / "objective.py"
    script.write_text(OBJECTIVE.replace("@SLEEP@", repr(args.sleep)))
    print(f"\n== Ray head ({RAY_CPUS} CPUs) and openmaker up in {work}", flush=True)
    with ray_head_running(work / "ray-home") as ray_url:
        gcs = _gcs_address(work / "ray-home")
        print(f"  ray: {ray_url} (GCS {gcs})", flush=True)
        with platform_running(work / "openmaker-home", ray_url) as running:
            print(f"  openmaker: {running.base_url}", flush=True)
            (work / "raw").mkdir()
            side = PlatformSide(running, work / "runs", source)
            raw: RawSide | None = None
            try:
                raw = RawSide(gcs, work / "raw", script)
                warm = max(args.parallel, 2)
                print(f"\n== warm-up: {warm} trials each (thrown away)", flush=True)
                _say_round(side.run(warm, args.parallel))
                _say_round(raw.run(warm, args.parallel))
                rounds: list[Round] = []
                om_usage: list[Usage] = []
                raw_usage: list[Usage] = []
                print(
                    f"\n== {args.rounds} round(s): {args.trials} trials, {args.parallel} at a "
                    f"time, {args.sleep:g} s objective",
                    flush=True,
                )
                for _ in range(args.rounds):
                    time.sleep(args.pause)
                    with metered(om_usage):
                        rounds.append(side.run(args.trials, args.parallel))
                    _say_round(rounds[-1])
                    time.sleep(args.pause)
                    with metered(raw_usage):
                        rounds.append(raw.run(args.trials, args.parallel))
                    _say_round(rounds[-1])
                print("\n== Ray probe", flush=True)
                probe = raw.probe(args.probes) if args.probes else {}
            finally:
                if raw is not None:
                    raw.close()
                side.close()
    return Outcome(
        rounds,
        raw.init_s,
        _merge_usage(om_usage),
        _merge_usage(raw_usage),
        breakdown(rounds),
        probe,
    )


def _merge_usage(usages: list[Usage]) -> Usage | None:
    if not usages:
        return None
    wall = sum(u.wall_s for u in usages)
    return Usage(
        wall,
        sum(u.ours * u.wall_s for u in usages) / wall,
        sum(u.other * u.wall_s for u in usages) / wall,
        sum(u.unseen * u.wall_s for u in usages) / wall,
    )


def write_json(
    args: argparse.Namespace, machine: str, outcome: Outcome, result: Figures, passed: bool
) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"tuning-{stamp}.json"
    document = {
        "when": stamp,
        "machine": machine,
        "sources": source_fingerprint(),
        "settings": {
            "trials": args.trials,
            "parallel": args.parallel,
            "sleep_s": args.sleep,
            "rounds": args.rounds,
            "poll_s": POLL_S,
            "ray_num_cpus": RAY_CPUS,
            "flavor": FLAVOR,
            "image": CPU_IMAGE,
            "strategy": "RANDOM",
            "seed": SEED,
        },
        "figures": asdict(result),
        "goal": {"ratio_at_most": RATIO_GOAL, "ratio": result.ratio, "passed": passed},
        "raw_ray_init_s": outcome.raw_init_s,
        "breakdown": [asdict(figure) for figure in outcome.figures],
        "ray_probe_s": outcome.probe,
        "cpu": {
            "openmaker": asdict(outcome.usage_om) if outcome.usage_om else None,
            "raw": asdict(outcome.usage_raw) if outcome.usage_raw else None,
        },
        "rounds": [asdict(r) for r in outcome.rounds],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def report(
    args: argparse.Namespace, machine: str, sources: dict[str, str], outcome: Outcome
) -> None:
    result = figures(outcome.rounds, args.trials, args.parallel)
    now = source_digests()
    changed = sorted(n for n in {*sources, *now} if sources.get(n) != now.get(n))
    if changed:
        print(
            f"\n! the sources changed during the run ({', '.join(changed[:6])}"
            f"{', ...' if len(changed) > 6 else ''}): the figures may mix versions; run again"
        )
    print(
        f"\n### Tuning: {args.trials} trials of a {args.sleep:g} s objective, "
        f"{args.parallel} in parallel\n"
    )
    print(render_main(result, outcome.rounds, outcome.raw_init_s))
    print(
        f"\nPlatform overhead per trial = (OpenMaker wall - raw wall) / {args.trials} trials"
        f" x {args.parallel} slots: with the slots kept busy, a wall clock is about"
        " trials / parallel x the slot time of one trial, so this is how much longer one"
        " trial holds its slot on the platform."
    )
    for what, usage in (("OpenMaker", outcome.usage_om), ("raw", outcome.usage_raw)):
        if usage is not None:
            print(
                f"  CPU during the {what} rounds ({usage.wall_s:.0f} s): this bench's processes"
                f" {usage.ours:.0%} of the machine, other processes {usage.other:.0%},"
                f" unseen {usage.unseen:.0%} (processes that lived < {SAMPLE_S:g} s)"
            )
            if usage.other > NOISY_SHARE:
                print("  ! other processes were busy: the figures are disturbed; run again")
    if outcome.figures or outcome.probe:
        print("\n### Where the time goes (p50 / mean ms)\n")
        blocks = [render_breakdown(outcome.figures)] if outcome.figures else []
        if outcome.probe:
            blocks.append(render_probe(outcome.probe))
        print("\n\n".join(blocks))
    passed = result.ratio <= RATIO_GOAL
    print("\nGoal")
    print(
        f"  {'PASS' if passed else 'MISS'}  ratio <= {RATIO_GOAL:g}"
        f"  {result.ratio:.2f}x ({result.om_wall_s:.2f} vs {result.raw_wall_s:.2f} s)"
    )
    if args.json:
        path = write_json(args, machine, outcome, result, passed)
        print(f"\nJSON: {path.relative_to(ROOT)}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=40, help="trials per tuning")
    parser.add_argument("--parallel", type=int, default=2, help="trials at a time (1-10)")
    parser.add_argument("--sleep", type=float, default=0.2, help="the objective's seconds")
    parser.add_argument("--rounds", type=int, default=1, help="measured rounds of each")
    parser.add_argument(
        "--probes", type=int, default=5, help="actor starts and task round trips timed (0: none)"
    )
    parser.add_argument("--pause", type=float, default=2.0, help="seconds of quiet before each")
    parser.add_argument("--no-json", dest="json", action="store_false", help="no JSON file")
    parser.add_argument("--keep-home", action="store_true", help="keep the temp dir and logs")
    args = parser.parse_args(argv)
    if not 1 <= args.parallel <= 10 or args.trials < args.parallel or args.rounds < 1:
        parser.error("--parallel must be 1-10, --trials at least --parallel, --rounds >= 1")
    if args.sleep < 0 or args.probes < 0 or args.pause < 0:
        parser.error("--sleep, --probes and --pause must not be negative")
    return args


_interrupted = False


def _raise_interrupt(signum: int, _frame: Any) -> None:
    """The first Ctrl-C or SIGTERM unwinds to the clean-up; later ones do not cut it short."""
    global _interrupted
    if _interrupted:
        return
    _interrupted = True
    raise KeyboardInterrupt(f"signal {signum}")


def _install_signals() -> None:
    # Installed explicitly: a shell starts background jobs with SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _install_signals()
    machine = machine_description()
    sources = source_digests()
    print(
        f"OpenMaker tuning bench on {machine}; load average {load_average()}; "
        f"sources {source_fingerprint(sources)}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="om-tuning-"))
    keep = args.keep_home
    try:
        outcome = run_bench(args, work)
    except KeyboardInterrupt:
        print("\ninterrupted; the platform and the Ray head are stopped", file=sys.stderr)
        return 130
    except (RuntimeError, requests.RequestException, subprocess.CalledProcessError) as exc:
        # RuntimeError: ours (BenchError), RayHead's and Ray's. The logs stay for a look.
        print(f"\nbench failed: {exc}", file=sys.stderr)
        keep = True
        return 1
    finally:
        if keep:
            print(f"kept {work} (platform log: openmaker-home-up.log)", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(args, machine, sources, outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
