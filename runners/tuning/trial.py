"""One trial of a hyperparameter tuning: a training with the job contract, run on one node.

A trial is the tuning's training specification with the suggested hyperparameters added to
``hyperparameter_list`` (so the code gets them as ``--name value`` and ``EM_HP_*``), its
outputs sent to the trial's own folders and its log to the trial's own prefix. It runs
through the same :class:`~runners.nodejob.NodeJob` as a training, on a :class:`TrialSlot`
actor holding the flavor's resources: one actor per parallel slot, kept for the whole tuning
and running trial after trial.

The log passes through a :class:`MetricTap`, which hands every complete line of the user's
processes to a :class:`~runners.tuning.metrics.MetricCollector`: the objective's values
arrive with their step while the trial runs, so the driver can stop it early.

The driver talks to workers through the small :class:`Launcher` / :class:`Worker` /
:class:`Call` interface: :class:`RayLauncher` on Ray, and anything with the same shape (an
in-process one in the tests). It waits on the calls it has out (``Launcher.wait``), so an
answer — a trial that started, ended or reported a value — is acted on at once.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import time
from typing import Any, Protocol

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError

from chalicelib.objectstore import platform_store
from chalicelib.objectstore.base import ObjectStore
from runners.logsink import LogSink
from runners.monitor import Sampler, nvidia_smi_source
from runners.nodejob import JobFailedError, Layout, NodeJob, Rendezvous
from runners.tuning.metrics import MetricCollector

MAX_TAP_LINE = 64 * 1024  # a longer unterminated line is parsed as it is, then dropped
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # a progress bar's \r ends a line as well
WATCH_STEP_SECONDS = 0.02  # how soon a watch sees new metric values (an exit: at once)

# What :meth:`TrialRunner.watch` answers: exit code, new observations, summary, problem.
Watch = tuple[int | None, list[tuple[int, float]], dict[str, dict[str, float]], str | None]


def is_user_source(source: str) -> bool:
    """The log sources of the user's processes (``node0``, ``node1``...)."""
    return source.startswith("node")


class MetricTap(LogSink):
    """A log sink that also parses the user's output for metrics.

    Every complete line written by a ``node*`` source, on stdout or stderr, is fed to
    ``collector``; the objective's ``(step, value)`` observations wait in :meth:`drain`.
    """

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        collector: MetricCollector,
        **options: Any,
    ) -> None:
        super().__init__(store, prefix, **options)
        self.collector = collector
        self._tap_lock = threading.Lock()
        self._lines: dict[tuple[str, str], str] = {}
        self._observations: list[tuple[int, float]] = []

    def write(self, source: str, stream: str, text: str | bytes) -> None:
        super().write(source, stream, text)  # checks source and stream first
        if not is_user_source(source) or not text:
            return
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        key = (source, stream)
        with self._tap_lock:
            *lines, rest = _LINE_BREAK.split(self._lines.pop(key, "") + text)
            for line in lines:
                self._feed_locked(line)
            if len(rest) > MAX_TAP_LINE:
                self._feed_locked(rest)
                rest = ""
            if rest:
                self._lines[key] = rest

    def end_stream(self, source: str, stream: str) -> None:
        super().end_stream(source, stream)
        with self._tap_lock:
            rest = self._lines.pop((source, stream), "")
            if rest:
                self._feed_locked(rest)

    def close(self, attempts: int = 3) -> None:
        with self._tap_lock:
            for key in list(self._lines):
                self._feed_locked(self._lines.pop(key))
        super().close(attempts)

    def _feed_locked(self, line: str) -> None:
        self._observations.extend(self.collector.feed(line))

    def pending(self) -> bool:
        """Whether observations wait to be drained."""
        with self._tap_lock:
            return bool(self._observations)

    def drain(self) -> list[tuple[int, float]]:
        """The objective's observations since the last drain, oldest first."""
        with self._tap_lock:
            found, self._observations = self._observations, []
        return found

    def summary(self) -> dict[str, dict[str, float]]:
        """``{metric: {"min", "max", "latest"}}`` of every metric seen so far."""
        with self._tap_lock:
            return self.collector.summary()


def metric_collector(spec: dict[str, Any]) -> MetricCollector:
    """The collector of a tuning's metrics (Katib's ``name=value`` format by default)."""
    names = [str(m["name"]) for m in spec.get("metric_list") or []]
    return MetricCollector(spec.get("metric_regex") or "", names, spec["objective_metric"]["name"])


def trial_job(
    job: dict[str, Any], number: int, trial: dict[str, Any], params: dict[str, str]
) -> dict[str, Any]:
    """The training job of one trial: the tuning's spec with the suggested hyperparameters
    (after the fixed ones, replacing a fixed one of the same name), the trial's output
    folders and log prefix, and one node."""
    spec = copy.deepcopy(job["spec"])
    fixed = [
        {"parameter_name": p["parameter_name"], "parameter_value": str(p["parameter_value"])}
        for p in spec.get("hyperparameter_list") or []
        if p["parameter_name"] not in params
    ]
    spec["hyperparameter_list"] = fixed + [
        {"parameter_name": name, "parameter_value": str(value)} for name, value in params.items()
    ]
    spec["model_upload_uri"] = trial["modelUploadUri"]
    spec["check_point_upload_uri"] = trial.get("checkPointUploadUri")
    spec["instance_count"] = int(job.get("nodesPerTrial") or 1)
    spec.pop("log_upload_uri", None)  # the tuning's log, not each trial's
    return {
        "trainingId": trial["trialId"],
        "trainingName": f"{job.get('name') or job['hyperparameterTuningId']}-trial{number}",
        "hyperparameterTuningId": job["hyperparameterTuningId"],
        "trialId": trial["trialId"],
        "trialNumber": number,
        "appKey": job["appKey"],
        "experimentId": job["experimentId"],
        "region": job["region"],
        "spec": spec,
        "logPrefix": trial["logPrefix"],
    }


class TrialNodeJob(NodeJob):
    """A trial's node: the training's, in the tuning's work folder, with the trial's ids."""

    def __init__(self, job: dict[str, Any], node_rank: int, sink: LogSink) -> None:
        super().__init__(job, node_rank, sink)
        self.layout = Layout(
            self.home
            / "work"
            / "tunings"
            / job["hyperparameterTuningId"]
            / f"trial{job['trialNumber']}"
            / f"node{node_rank}"
        )

    def environment(self, rendezvous: Rendezvous | None) -> dict[str, str]:
        env = super().environment(rendezvous)
        env.update(
            {
                "EM_HYPERPARAMETER_TUNING_ID": self.job["hyperparameterTuningId"],
                "EM_TRIAL_ID": self.job["trialId"],
                "EM_TRIAL_NUMBER": str(self.job["trialNumber"]),
            }
        )
        return env


class TrialRunner:
    """One trial on one node, run by a :class:`TrialHost`.

    Every method answers while another runs (the actor is threaded): ``poll``, ``progress``
    and ``kill`` work during staging or an upload. Failures come back as reasons (strings),
    not exceptions, so nothing depends on how Ray wraps them.
    """

    def __init__(
        self,
        job: dict[str, Any],
        number: int,
        trial: dict[str, Any],
        params: dict[str, str],
        store: ObjectStore | None = None,
    ) -> None:
        self.number = number
        self.job = trial_job(job, number, trial, params)
        self.sink = MetricTap(
            store if store is not None else platform_store(),
            trial["logPrefix"],
            metric_collector(job["spec"]),
        )
        self.node = TrialNodeJob(self.job, 0, self.sink)
        self.cancelled = threading.Event()
        self._lock = threading.Lock()  # a kill and the start never cross
        self._drained = False
        self.sampler = Sampler(
            f"trial{number}-node0", lambda: self.node.process, nvidia_smi_source()
        )

    def stage(self) -> str | None:
        """Fetch the inputs; why the trial cannot run, or None."""
        try:
            self.node.stage()
        except JobFailedError as exc:
            return exc.reason
        except Exception as exc:  # noqa: BLE001 - the trial fails with the reason
            return f"staging failed: {type(exc).__name__}: {exc}"
        return None

    def start(self) -> str | None:
        """Start the entry point; why it could not start, or None."""
        with self._lock:
            if self.cancelled.is_set():
                return "killed before it started"
            try:
                self.node.start(None)
            except OSError as exc:
                return f"could not start the entry point: {exc}"
        return None

    def launch(self) -> str | None:
        """Stage, then start: why the trial cannot run, or None once its code runs."""
        return self.stage() or self.start()

    def watch(self, check_storage: bool, wait: float) -> Watch:
        """Wait up to ``wait`` seconds for the code to end or for new values of the
        objective; then the exit code (None while it runs), the new ``(step, value)``
        observations, every metric's summary and a limit broken (or None)."""
        deadline = time.monotonic() + wait
        while True:
            code = self.poll()
            if code is not None or self.sink.pending() or time.monotonic() >= deadline:
                break
            process = self.node.process
            if process is None:
                break
            process.wait(min(WATCH_STEP_SECONDS, max(0.0, deadline - time.monotonic())))
        problem = self.limit_problem(check_storage) if code is None else None
        observations, summary = self.progress()
        return code, observations, summary, problem

    def poll(self) -> int | None:
        """The exit code once the code ended (its output all read), else None."""
        process = self.node.process
        if process is None:
            return None
        code = process.poll()
        if code is not None and not self._drained:
            # A child left running may hold the pipes open: wait a little, once.
            process.wait_output(timeout=2.0)
            self._drained = True
        return code

    def progress(self) -> tuple[list[tuple[int, float]], dict[str, dict[str, float]]]:
        """The objective's new ``(step, value)`` observations and every metric's summary."""
        return self.sink.drain(), self.sink.summary()

    def limit_problem(self, check_storage: bool = False) -> str | None:
        return self.node.limit_problem(check_storage) if self.node.process else None

    def exit_reason(self, code: int) -> str:
        return self.node.exit_reason(code)

    def upload(self) -> str | None:
        """Publish the model and checkpoints to the trial's folders; why not, or None."""
        try:
            self.node.upload(self.cancelled.is_set)
        except JobFailedError as exc:
            self.node.remove_partial_upload()
            return exc.reason
        except Exception as exc:  # noqa: BLE001 - the trial fails with the reason
            self.node.remove_partial_upload()
            return f"{type(exc).__name__}: {exc}"
        return None

    def sample(self) -> dict[str, Any] | None:
        return self.sampler.sample()

    def kill(self) -> None:
        with self._lock:
            self.cancelled.set()
            self.node.kill()

    def finish(self) -> None:
        """Kill what is left, remove the work folder and store the last log lines."""
        self.cancelled.set()
        self.node.cleanup()
        self.sink.close()


class TrialHost:
    """The trials one worker process runs, one after another: a slot of the tuning.

    A slot's actor lives as long as the tuning, so a trial pays for neither a new worker
    process nor the imports of this module; each trial gets its own :class:`TrialRunner`.
    Calls name their trial. A threaded actor may run two calls out of order, so a call for
    a trial that is not open yet waits for it, and a kill that comes first is remembered.
    """

    OPEN_WAIT_SECONDS = 30.0

    def __init__(self) -> None:
        self.runners: dict[int, TrialRunner] = {}
        self.killed: set[int] = set()
        self._changed = threading.Condition()

    def open(
        self, job: dict[str, Any], number: int, trial: dict[str, Any], params: dict[str, str]
    ) -> None:
        runner = TrialRunner(job, number, trial, params)
        with self._changed:
            if number in self.killed:
                runner.cancelled.set()
            self.runners[number] = runner
            self._changed.notify_all()

    def call(self, number: int, method: str, *args: Any) -> Any:
        """Call ``method`` of trial ``number``'s :class:`TrialRunner` (``finish`` closes it)."""
        with self._changed:
            if method == "kill" and number not in self.runners:
                self.killed.add(number)
                return None
            if not self._changed.wait_for(lambda: number in self.runners, self.OPEN_WAIT_SECONDS):
                raise LookupError(f"trial {number} was never opened on this worker")
            runner = self.runners[number]
        answer = getattr(runner, method)(*args)
        if method == "finish":
            with self._changed:
                self.runners.pop(number, None)
                self.killed.discard(number)
        return answer


@ray.remote(max_concurrency=8)  # type: ignore[call-overload]
class TrialSlot(TrialHost):
    """A :class:`TrialHost` in a threaded Ray actor holding one flavor's resources."""


# -- how the driver reaches workers ------------------------------------------------------


class WorkerLostError(Exception):
    """The worker of a trial is gone (its process or node died, or it was killed)."""


class Call(Protocol):
    def done(self) -> bool: ...

    def result(self, timeout: float) -> Any:
        """The answer; ``TimeoutError`` when not there in time, ``WorkerLostError`` when
        the worker is gone."""
        ...


class Worker(Protocol):
    def call(self, method: str, *args: Any) -> Call:
        """Call one :class:`TrialRunner` method of this trial without waiting."""
        ...

    def release(self) -> None:
        """The trial is over and cleaned up: its worker may run another trial."""
        ...

    def terminate(self) -> None:
        """End the worker at once (its processes die with it)."""
        ...


class Launcher(Protocol):
    def prepare(self, job: dict[str, Any], count: int) -> None:
        """Get ``count`` workers going before the first trial (they start in the
        background; trials take them as they come)."""
        ...

    def spawn(
        self, job: dict[str, Any], number: int, trial: dict[str, Any], params: dict[str, str]
    ) -> Worker:
        """Open a trial on a free worker (a new one when none is free)."""
        ...

    def wait(self, calls: list[Call], timeout: float) -> None:
        """Return as soon as one of ``calls`` is done, or after ``timeout`` seconds."""
        ...

    def shutdown(self) -> None:
        """End every worker."""
        ...


class RayCall:
    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def done(self) -> bool:
        ready, _ = ray.wait([self.ref], timeout=0)
        return bool(ready)

    def result(self, timeout: float) -> Any:
        try:
            return ray.get(self.ref, timeout=timeout)
        except (GetTimeoutError, ActorUnavailableError) as exc:  # unreachable for now
            raise TimeoutError(str(exc)) from None
        except RayActorError as exc:
            raise WorkerLostError(_first_line(exc)) from None
        except RayError as exc:  # the method raised, or its result was lost
            raise WorkerLostError(f"{type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:1000]


class RayWorker:
    """One trial on a :class:`TrialSlot` actor of a :class:`RayLauncher`."""

    def __init__(self, launcher: RayLauncher, actor: Any, number: int) -> None:
        self.launcher, self.actor, self.number = launcher, actor, number

    def call(self, method: str, *args: Any) -> RayCall:
        return RayCall(self.actor.call.remote(self.number, method, *args))

    def release(self) -> None:
        self.launcher.give_back(self.actor)

    def terminate(self) -> None:
        self.launcher.discard(self.actor)


class RayLauncher:
    """Trials on a pool of :class:`TrialSlot` actors, each holding one flavor's worth of the
    cluster (a trial waits, CREATED, until the cluster has room for its actor). An actor
    runs trial after trial; one that died or was killed is replaced by a new one."""

    def __init__(self) -> None:
        if not ray.is_initialized():
            ray.init(logging_level=logging.WARNING, log_to_driver=False)
        self.idle: list[Any] = []
        self.busy: list[Any] = []

    def _new_actor(self, job: dict[str, Any]) -> Any:
        flavor = job["spec"]["flavor"]
        return TrialSlot.options(  # type: ignore[attr-defined]
            num_cpus=float(flavor["vcpus"]),
            num_gpus=float(flavor.get("gpuCount") or 0),
            memory=float(int(flavor["ram"]) * 2**20),
        ).remote()

    def prepare(self, job: dict[str, Any], count: int) -> None:
        while len(self.idle) + len(self.busy) < count:
            self.idle.append(self._new_actor(job))

    def spawn(
        self, job: dict[str, Any], number: int, trial: dict[str, Any], params: dict[str, str]
    ) -> RayWorker:
        actor = self.idle.pop(0) if self.idle else self._new_actor(job)
        self.busy.append(actor)
        actor.open.remote(job, number, trial, params)
        return RayWorker(self, actor, number)

    def wait(self, calls: list[Call], timeout: float) -> None:
        refs = [call.ref for call in calls if isinstance(call, RayCall)]
        if refs:
            ray.wait(refs, num_returns=1, timeout=timeout)
        else:
            time.sleep(timeout)

    def give_back(self, actor: Any) -> None:
        if actor in self.busy:
            self.busy.remove(actor)
            self.idle.append(actor)

    def discard(self, actor: Any) -> None:
        for pool in (self.busy, self.idle):
            if actor in pool:
                pool.remove(actor)
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            return

    def shutdown(self) -> None:
        for actor in [*self.busy, *self.idle]:
            self.discard(actor)
