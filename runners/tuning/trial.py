"""One trial of a hyperparameter tuning: a training with the job contract, on one node or more.

A trial is the tuning's training specification with the suggested hyperparameters added to
``hyperparameter_list`` (so the code gets them as ``--name value`` and ``EM_HP_*``), its
outputs sent to the trial's own folders and its log to the trial's own prefix. It runs
through the same :class:`~runners.nodejob.NodeJob` as a training, on a :class:`TrialSlot`
actor holding the flavor's resources: one actor per parallel slot, kept for the whole tuning
and running trial after trial. A trial on several nodes runs on a gang of such actors, one
per node on one placement group, led by node 0's (:class:`GangRunner`).

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
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from chalicelib.objectstore import platform_store
from chalicelib.objectstore.base import ObjectStore
from runners.logsink import LogSink
from runners.monitor import Sampler, nvidia_smi_source
from runners.nodejob import JobFailedError, Layout, NodeJob, Rendezvous, free_port
from runners.tuning.metrics import MetricCollector

MAX_TAP_LINE = 64 * 1024  # a longer unterminated line is parsed as it is, then dropped
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # a progress bar's \r ends a line as well
GANG_ANSWER_SECONDS = 30.0  # how long node 0 waits for another node's answer
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
        node_rank: int = 0,
    ) -> None:
        self.number = number
        self.job = trial_job(job, number, trial, params)
        self.sink = MetricTap(
            store if store is not None else platform_store(),
            trial["logPrefix"],
            metric_collector(job["spec"]),
        )
        self.node = TrialNodeJob(self.job, node_rank, self.sink)
        self.cancelled = threading.Event()
        self._lock = threading.Lock()  # a kill and the start never cross
        self._drained = False
        self.sampler = Sampler(
            f"trial{number}-node{node_rank}", lambda: self.node.process, nvidia_smi_source()
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

    def stage_node(self) -> tuple[str | None, str, int]:
        """Stage a node of a trial on several nodes: why it cannot run (or None), and an
        address and port the other nodes can reach it at (node 0's: the rendezvous)."""
        return self.stage(), ray.util.get_node_ip_address(), free_port()

    def start(self, rendezvous: Rendezvous | None = None) -> str | None:
        """Start the entry point; why it could not start, or None."""
        with self._lock:
            if self.cancelled.is_set():
                return "killed before it started"
            try:
                self.node.start(rendezvous)
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

    def sample(self) -> list[dict[str, Any]]:
        """The monitoring samples of the trial's nodes (``trial{n}-node{rank}``)."""
        found = self.sampler.sample()
        return [found] if found else []

    def kill(self) -> None:
        with self._lock:
            self.cancelled.set()
            self.node.kill()

    def finish(self) -> None:
        """Kill what is left, remove the work folder and store the last log lines."""
        self.cancelled.set()
        self.node.cleanup()
        self.sink.close()


class GangRunner:
    """A trial on several nodes: node 0 here (a :class:`TrialRunner`), nodes 1.. on the
    follower actors of the gang (placed with it on one placement group), reached through
    Ray from this actor's threads.

    It answers the driver as one :class:`TrialRunner` does. Node 0 is the rendezvous master
    and the one whose log gives the metrics (as Katib reads a distributed job's master) and
    whose model and checkpoints are published. The trial ends when every node's code ended;
    the first node to fail (or whose worker dies) fails it, and the others are killed.
    """

    def __init__(
        self,
        runner: TrialRunner,
        followers: list[Any],
        job: dict[str, Any],
        number: int,
        trial: dict[str, Any],
        params: dict[str, str],
    ) -> None:
        self.runner, self.followers, self.number = runner, followers, number
        self.cancelled = runner.cancelled
        self.codes: dict[int, int] = {}  # node rank -> exit code
        self.lost: dict[int, str] = {}  # node rank -> why its worker is gone
        self.pending: dict[int, Any] = {}  # node rank -> its outstanding watch
        self.ended = False  # every node's code was killed or ended
        for rank, follower in enumerate(followers, start=1):
            follower.open.remote(job, number, trial, params, rank)

    def _on_followers(self, method: str, *args: Any) -> list[tuple[int, Any]]:
        """``method`` on every follower at once: (rank, answer or the error it raised)."""
        refs = [f.call.remote(self.number, method, *args) for f in self.followers]
        answers: list[tuple[int, Any]] = []
        for rank, ref in enumerate(refs, start=1):
            try:
                answers.append((rank, ray.get(ref, timeout=GANG_ANSWER_SECONDS)))
            except (RayError, GetTimeoutError) as exc:
                answers.append((rank, exc))
        return answers

    def launch(self) -> str | None:
        """Stage every node, then start every node with the rendezvous at node 0."""
        refs = [f.call.remote(self.number, "stage_node") for f in self.followers]
        staged = [self.runner.stage_node()]
        for rank, ref in enumerate(refs, start=1):
            try:
                staged.append(ray.get(ref))
            except RayError as exc:
                self.kill()
                return f"node {rank}'s worker died: {_first_line(exc)}"
        for rank, (problem, _host, _port) in enumerate(staged):
            if problem:
                self.kill()
                return problem if rank == 0 else f"node {rank}: {problem}"
        nodes = len(staged)
        workers = tuple(f"{host}:{port}" for _problem, host, port in staged)
        _problem, master_addr, master_port = staged[0]
        meet = [Rendezvous(r, nodes, master_addr, master_port, workers) for r in range(nodes)]
        refs = [
            f.call.remote(self.number, "start", meet[rank])
            for rank, f in enumerate(self.followers, start=1)
        ]
        problems = [self.runner.start(meet[0])]
        for ref in refs:
            try:
                problems.append(ray.get(ref))
            except RayError as exc:
                problems.append(f"its worker died: {_first_line(exc)}")
        for rank, problem in enumerate(problems):
            if problem:
                self.kill()
                return problem if rank == 0 else f"node {rank}: {problem}"
        return None

    def watch(self, check_storage: bool, wait: float) -> Watch:
        """Node 0's watch, and what the other nodes' watches answered meanwhile: the first
        failing node's exit code (the others killed), 0 once every node ended well."""
        deadline = time.monotonic() + wait
        for rank, follower in enumerate(self.followers, start=1):
            if rank not in self.codes and rank not in self.pending:
                watching = follower.call.remote(self.number, "watch", check_storage, wait)
                self.pending[rank] = watching
        problem = None
        if 0 in self.codes:  # node 0 is done: wait for the others
            observations, summary = self.runner.progress()
        else:
            code, observations, summary, problem = self.runner.watch(check_storage, wait)
            if code is not None:
                self.codes[0] = int(code)
        if self.pending:
            ready, _ = ray.wait(
                list(self.pending.values()),
                num_returns=len(self.pending),
                timeout=max(0.0, deadline - time.monotonic()),
            )
            for rank, ref in list(self.pending.items()):
                if ref not in ready:
                    continue
                del self.pending[rank]
                try:
                    code, _obs, _summary, their_problem = ray.get(ref)
                except RayError as exc:
                    self.lost[rank] = f"node {rank}'s worker died: {_first_line(exc)}"
                    self.codes[rank] = -9
                    continue
                problem = problem or (f"node {rank}: {their_problem}" if their_problem else None)
                if code is not None:
                    self.codes[rank] = int(code)
        return self._code(), observations, summary, problem

    def _code(self) -> int | None:
        """The first failing node's exit code (the others are killed then), 0 once every
        node ended well, else None."""
        failed = self._failed()
        if failed is not None:
            if not self.ended:
                self.kill()
            return self.codes[failed]
        return 0 if len(self.codes) == len(self.followers) + 1 else None

    def _failed(self) -> int | None:
        """The node whose failure fails the trial (a lost worker first), or None."""
        if self.lost:
            return min(self.lost)
        failing = [rank for rank, code in self.codes.items() if code != 0]
        return min(failing) if failing else None

    def exit_reason(self, code: int) -> str:
        rank = self._failed()
        if rank is None or rank == 0:
            return self.runner.exit_reason(code)
        if rank in self.lost:
            return self.lost[rank]
        follower = self.followers[rank - 1]
        try:
            said = ray.get(
                follower.call.remote(self.number, "exit_reason", self.codes[rank]),
                timeout=GANG_ANSWER_SECONDS,
            )
        except (RayError, GetTimeoutError):
            said = f"the entry point failed with exit code {self.codes[rank]}"
        return f"node {rank}: {said}"

    def upload(self) -> str | None:
        return self.runner.upload()

    def sample(self) -> list[dict[str, Any]]:
        found = self.runner.sample()
        for _rank, answer in self._on_followers("sample"):
            if isinstance(answer, list):
                found.extend(answer)
        return found

    def kill(self) -> None:
        self.ended = True
        self.runner.kill()
        for follower in self.followers:
            follower.call.remote(self.number, "kill")

    def finish(self) -> None:
        """Finish every node; raises when a node's worker is gone, so the driver replaces
        the whole gang instead of running the next trial on it."""
        self.cancelled.set()
        answers = self._on_followers("finish")
        self.runner.finish()
        gone = sorted(self.lost) or [rank for rank, a in answers if isinstance(a, Exception)]
        if gone:
            raise RuntimeError(f"node {gone[0]}'s worker is gone: the slot is replaced")


class TrialHost:
    """The trials one worker process runs, one after another: a slot of the tuning.

    A slot's actor lives as long as the tuning, so a trial pays for neither a new worker
    process nor the imports of this module; each trial gets its own :class:`TrialRunner`.
    Calls name their trial. A threaded actor may run two calls out of order, so a call for
    a trial that is not open yet waits for it, and a kill that comes first is remembered.
    A multi-node slot is a gang of actors: node 0's host has the others as ``followers``
    and runs each trial as a :class:`GangRunner`; a follower's host opens the trial's node.
    """

    OPEN_WAIT_SECONDS = 30.0

    def __init__(self, followers: list[Any] | None = None) -> None:
        self.followers = list(followers or [])  # the gang's other nodes (a multi-node slot)
        self.runners: dict[int, TrialRunner | GangRunner] = {}
        self.killed: set[int] = set()
        self._changed = threading.Condition()

    def open(
        self,
        job: dict[str, Any],
        number: int,
        trial: dict[str, Any],
        params: dict[str, str],
        node_rank: int = 0,
    ) -> None:
        node = TrialRunner(job, number, trial, params, node_rank=node_rank)
        runner: TrialRunner | GangRunner = node
        if self.followers:
            runner = GangRunner(node, self.followers, job, number, trial, params)
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
    """Trials on a pool of slots, each holding one trial's worth of the cluster (a trial
    waits, CREATED, until the cluster has room for its slot). A slot runs trial after trial;
    one that died or was killed is replaced by a new one.

    A slot of one node is one :class:`TrialSlot` actor with the flavor's resources. A slot
    of ``nodesPerTrial`` nodes is a placement group of that many flavor bundles (spread over
    the cluster's nodes where it can be) with one actor per bundle; node 0's actor leads."""

    def __init__(self) -> None:
        if not ray.is_initialized():
            ray.init(logging_level=logging.WARNING, log_to_driver=False)
        self.idle: list[Any] = []
        self.busy: list[Any] = []
        self.gangs: dict[Any, tuple[list[Any], PlacementGroup]] = {}  # leader: others, group

    def _new_actor(self, job: dict[str, Any]) -> Any:
        flavor = job["spec"]["flavor"]
        resources = {
            "num_cpus": float(flavor["vcpus"]),
            "num_gpus": float(flavor.get("gpuCount") or 0),
            "memory": float(int(flavor["ram"]) * 2**20),
        }
        nodes = int(job.get("nodesPerTrial") or 1)
        if nodes == 1:
            return TrialSlot.options(**resources).remote()  # type: ignore[attr-defined]
        bundle = {"CPU": resources["num_cpus"], "memory": resources["memory"]}
        if resources["num_gpus"]:
            bundle["GPU"] = resources["num_gpus"]
        group = placement_group([dict(bundle) for _ in range(nodes)], strategy="SPREAD")

        def on_bundle(index: int, followers: list[Any] | None = None) -> Any:
            strategy = PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=index
            )
            return TrialSlot.options(  # type: ignore[attr-defined]
                **resources, scheduling_strategy=strategy
            ).remote(followers)

        others = [on_bundle(index) for index in range(1, nodes)]
        leader = on_bundle(0, others)
        self.gangs[leader] = (others, group)
        return leader

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
        others, group = self.gangs.pop(actor, ([], None))
        for one in [actor, *others]:
            try:
                ray.kill(one, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                continue
        if group is not None:
            try:
                remove_placement_group(group)
            except Exception:  # noqa: BLE001 - gone with the cluster
                return

    def shutdown(self) -> None:
        for actor in [*self.busy, *self.idle]:
            self.discard(actor)
