"""The driver of one hyperparameter tuning: ``python -m runners.tuning <tuning-id>``, a Ray job.

It asks the control plane for the job, opens the tuning's Optuna study (:class:`Search`) and
keeps up to ``parallel_trial_count`` trials running, each a training with the job contract on
a slot of :class:`~runners.tuning.trial.TrialSlot` actors holding the flavor's resources (one
per node of a trial; the slots are started with the driver and kept for the whole tuning). The
objective's values are read from each trial's log as it runs and reported to the study, whose
median pruner may stop a trial early. Every trial's moves are reported to the control plane
(``POST .../trials``, an upsert by trial number).

Suggestions are drawn one at a time, in this driver's main thread only, so their order is the
study's reproducible order. The tuning ends COMPLETE (GoalReached, MaxTrialsReached,
SuggestionEndReached), FAIL_HYPERPARAMETER_TUNING (too many failed trials, the timeout),
STOPPED (the user) or CREATE_FAILED; the outputs of every trial but the best are removed, and
the outcome is written to the platform store before it is reported, so the control plane's
tick settles the tuning even if the report never arrives.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from chalicelib.objectstore import open_uri, platform_store
from chalicelib.objectstore.base import ObjectStore
from runners.control import RETRY_FOR_SECONDS, ControlPlane, ControlPlaneError
from runners.logsink import LogSink
from runners.monitor import MetricsReporter
from runners.tuning.search import Search, Suggestion, open_storage
from runners.tuning.trial import Call, Launcher, RayLauncher, Worker, WorkerLostError

POLL_SECONDS = 0.1  # the longest the loop sleeps: a stop request is seen within this
WATCH_SECONDS = 0.5  # a running trial's watch answers at the latest after this
STORAGE_CHECK_SECONDS = 5.0
ANSWER_SECONDS = 10.0  # how long the driver waits for an answer it needs now
HEARTBEAT_SECONDS = 60.0  # a running trial's worker silent this long (past its watch) is lost
KILL_GRACE_SECONDS = 30.0  # a killed trial's process gone by then, or its worker is ended
FINISH_SECONDS = 30.0  # a finished trial's worker gets this long to clean up
TRIAL_POST_SECONDS = 5.0  # a trial report retried this long now, then from the outbox
FINAL_DELIVERY_SECONDS = 600.0  # at the end, the outbox waits this long for the control plane

# Trial statuses (chalicelib.domain.states.TrialStatus), as plain strings.
CREATED = "CREATED"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
KILLED = "KILLED"
FAILED = "FAILED"
METRICS_UNAVAILABLE = "METRICS_UNAVAILABLE"
EARLY_STOPPED = "EARLY_STOPPED"
TRIAL_ENDS = (SUCCEEDED, KILLED, FAILED, METRICS_UNAVAILABLE, EARLY_STOPPED)

# Tuning statuses and details.
COMPLETE = "COMPLETE"
STOPPED = "STOPPED"
FAIL = "FAIL_HYPERPARAMETER_TUNING"
CREATE_FAILED = "CREATE_FAILED"
GOAL_REACHED = "GoalReached"
MAX_TRIALS_REACHED = "MaxTrialsReached"
SUGGESTION_END_REACHED = "SuggestionEndReached"
RUNNABLE = ("CREATE_REQUESTED", "CREATE_IN_PROGRESS", "RUNNING")


# --------------------------------------------------------------------------- pure rules


@dataclass(frozen=True)
class Tally:
    """How many of the tuning's trials ended, by status."""

    succeeded: int = 0
    failed: int = 0
    early_stopped: int = 0
    metrics_unavailable: int = 0
    killed: int = 0

    @property
    def finished(self) -> int:
        """Trials that used up the budget (maxTrialCount): every end but KILLED."""
        return self.succeeded + self.failed + self.early_stopped + self.metrics_unavailable

    def add(self, status: str) -> Tally:
        name = {
            SUCCEEDED: "succeeded",
            FAILED: "failed",
            EARLY_STOPPED: "early_stopped",
            METRICS_UNAVAILABLE: "metrics_unavailable",
            KILLED: "killed",
        }.get(status)
        if name is None:
            return self
        counted: Tally = replace(self, **{name: getattr(self, name) + 1})
        return counted

    @classmethod
    def of(cls, statuses: list[str]) -> Tally:
        tally = cls()
        for status in statuses:
            tally = tally.add(status)
        return tally


@dataclass(frozen=True)
class Limits:
    max_trials: int
    max_failed: int
    parallel: int = 1


@dataclass(frozen=True)
class Ending:
    status: str
    detail: str | None = None
    reason: str | None = None


def trial_outcome(
    exit_code: int | None,
    objective_seen: bool,
    pruned: bool = False,
    killed: bool = False,
    failed: bool = False,
) -> str:
    """The status of a trial that ended. ``exit_code`` None: its worker died; ``pruned``:
    the pruner stopped it; ``killed``: the tuning ended around it; ``failed``: the driver
    killed it for a limit (memory, data storage). A clean exit without any value of the
    objective is METRICS_UNAVAILABLE."""
    if pruned:
        return EARLY_STOPPED
    if killed:
        return KILLED
    if failed or exit_code is None or exit_code != 0:
        return FAILED
    return SUCCEEDED if objective_seen else METRICS_UNAVAILABLE


def goal_reached(value: float | None, goal: float | None, maximize: bool) -> bool:
    """Whether a SUCCEEDED trial's objective value meets ``objective_goal``."""
    if value is None or goal is None or not math.isfinite(value):
        return False
    return value >= goal if maximize else value <= goal


def may_launch(tally: Tally, running: int, limits: Limits, grid_done: bool) -> bool:
    """Whether one more trial may start: a free parallel slot, budget left, points left."""
    return (
        not grid_done
        and running < limits.parallel
        and tally.finished + running < limits.max_trials
    )


def tuning_end(
    tally: Tally,
    goal_hit: bool,
    grid_done: bool,
    running: int,
    limits: Limits,
    last_failure: str | None = None,
) -> Ending | None:
    """How the tuning ends now, or None while it goes on (checked after every trial)."""
    if goal_hit:
        return Ending(COMPLETE, GOAL_REACHED)
    if tally.failed >= limits.max_failed:
        reason = (
            f"{tally.failed} trial(s) failed, reaching maxFailedTrialCount {limits.max_failed}"
        )
        if last_failure:
            reason += f"; the last: {last_failure}"
        return Ending(FAIL, None, reason[:4000])
    if tally.finished >= limits.max_trials:
        return Ending(COMPLETE, MAX_TRIALS_REACHED)
    if grid_done and running == 0:
        return Ending(COMPLETE, SUGGESTION_END_REACHED)
    return None


def best_trial(values: dict[int, float], maximize: bool) -> int | None:
    """The number of the best SUCCEEDED trial (the lowest number on a tie)."""
    if not values:
        return None
    sign = -1.0 if maximize else 1.0
    return min(values, key=lambda number: (sign * values[number], number))


def sibling_uri(uri: str, number: int, other: int) -> str | None:
    """Trial ``other``'s folder from trial ``number``'s (``.../trials/{number}``)."""
    base = uri.rstrip("/")
    tail = f"/{number}"
    if not base.endswith(tail):
        return None
    return f"{base[: -len(tail)]}/{other}"


# ------------------------------------------------------------------------------- driver


class Control(Protocol):
    """What the driver needs of :class:`runners.control.ControlPlane`."""

    def job(self) -> dict[str, Any]: ...

    def report(self, status: str, reason: str | None = None, detail: str | None = None) -> str: ...

    def trial(
        self, payload: dict[str, Any], retry_for: float = RETRY_FOR_SECONDS
    ) -> dict[str, Any]: ...

    def metrics(self, samples: list[dict[str, Any]]) -> None: ...


@dataclass
class Trial:
    """A trial this driver is running."""

    number: int
    params: dict[str, str]
    worker: Worker
    phase: str  # launching, running, stopping (killed, waiting for the exit), uploading
    call: Call | None = None  # the pending launch/watch/upload
    outcome: str | None = None  # decided before the exit: EARLY_STOPPED, FAILED (a limit)
    reason: str | None = None
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    steps: dict[int, float] = field(default_factory=dict)  # the objective's values by step
    objective: float | None = None
    answered: float = field(default_factory=time.monotonic)  # the worker's last answer
    stopping_since: float = 0.0
    next_storage_check: float = 0.0


class TuningDriver:
    def __init__(
        self,
        tuning_id: str,
        *,
        control: Control | None = None,
        launcher: Launcher | None = None,
        store: ObjectStore | None = None,
        handle_signals: bool = False,
    ) -> None:
        self.tuning_id = tuning_id
        self.handle_signals = handle_signals  # SIGTERM/SIGINT stop (the main thread only)
        self.control: Control = control or ControlPlane("hyperparameter-tuning", tuning_id)
        self.launcher = launcher
        self.store = store if store is not None else platform_store()
        self.stop_requested = threading.Event()
        self.job: dict[str, Any] = {}
        self.spec: dict[str, Any] = {}
        self.sink: LogSink | None = None
        self.search: Search | None = None
        self.storage: Any = None  # the Optuna RDB storage this driver opened
        self.study: Any = None  # the study, read for the pruning notes
        self.reporter: MetricsReporter | None = None
        self.limits = Limits(1, 1)
        self.maximize = False
        self.goal: float | None = None
        self.running_reported = False
        self.active: dict[int, Trial] = {}
        self.tally = Tally()
        self.succeeded: dict[int, float] = {}  # own SUCCEEDED trials: objective value
        self.goal_trial: int | None = None
        self.last_failure: str | None = None
        self.grid_done = False
        self.pending: Suggestion | None = None  # suggested, not yet created by the control plane
        self.adopted: list[Suggestion] = []  # suggested by an earlier driver, never created
        self.outputs: dict[int, tuple[str, str | None]] = {}  # number: model, checkpoint URIs
        self.numbers: set[int] = set()  # every own trial the control plane knows
        self.outbox: dict[int, dict[str, Any]] = {}  # trial reports still to deliver
        self.closing: list[tuple[Worker, Call, float]] = []
        self.next_storage_check = 0.0

    def request_stop(self, *_args: Any) -> None:
        """SIGTERM/SIGINT (Ray's job stop): kill the trials, end STOPPED."""
        self.stop_requested.set()

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # -- the whole run -------------------------------------------------------------------

    def run(self) -> int:
        if self.handle_signals:
            self._install_signals()
        self.job = self.control.job()
        self.spec = self.job["spec"]
        status = self.job["status"]
        if status not in RUNNABLE:
            print(f"hyperparameter tuning {self.tuning_id} is {status}; nothing to run")
            return 0
        self.running_reported = status == "RUNNING"
        self.sink = LogSink(self.store, self.job["logPrefix"])
        self._write_log_meta()
        try:
            ending = self._run()
        except Exception as exc:  # noqa: BLE001 - any driver fault ends the tuning with a reason
            ending = Ending(FAIL, None, f"the tuning driver failed: {type(exc).__name__}: {exc}")
            try:
                self._kill_all()
            except Exception as again:  # noqa: BLE001 - the ending above says what matters
                print(f"could not kill the trials: {again}", file=sys.stderr)
        if self.stop_requested.is_set() and ending.status != COMPLETE:
            ending = Ending(STOPPED, None, "stopped by the user")
        self._finish(ending)
        return 0

    def _run(self) -> Ending:
        self._setup()
        if self.launcher is None:
            self.launcher = RayLauncher()
            if self.handle_signals:  # ray.init installs its own SIGTERM handler: take it back
                self._install_signals()
        self.launcher.prepare(self.job, self.limits.parallel)  # they boot while the study opens
        try:
            self.search = self._open_search()
        except Exception as exc:  # noqa: BLE001 - a spec or storage problem: nothing ran
            return Ending(CREATE_FAILED, None, f"the search could not start: {exc}")
        self._warm_start()
        current = self.control.report("RUNNING")
        if current != "RUNNING":
            if current in ("STOP_IN_PROGRESS", STOPPED):
                return Ending(STOPPED, None, "stopped by the user")
            return Ending(current, None, f"the tuning became {current} before it started")
        self.running_reported = True
        self._resume()
        self.reporter = MetricsReporter(self._samples, self.control.metrics)
        self.reporter.start()
        return self._loop()

    def _setup(self) -> None:
        spec = self.spec
        parallel = int(spec.get("parallel_trial_count") or 1)
        max_trials = int(spec["max_trial_count"])
        self.limits = Limits(
            max_trials=max_trials,
            max_failed=int(spec.get("max_failed_trial_count") or min(3, max_trials)),
            parallel=parallel,
        )
        self.maximize = str(spec["objective_type_code"]).upper() == "MAXIMIZE"
        goal = spec.get("objective_goal")
        self.goal = float(goal) if goal is not None else None

    def _open_search(self) -> Search:
        spec, where = self.spec, self.job["optunaStorage"]
        pruner = None
        if str(spec.get("early_stopping_algorithm") or "").upper() == "MEDIAN":
            pruner = (
                int(spec.get("early_stopping_min_trial_count") or 3),
                int(spec.get("early_stopping_start_step") or 4),
            )
        self.storage = open_storage(where["url"], where.get("engineKwargs") or {})
        return Search(
            self.storage,
            None,
            self.job["studyName"],
            self.job["hyperparameterSpecList"],
            spec["tuning_strategy_name"],
            int(spec.get("tuning_strategy_random_state") or 0),
            "maximize" if self.maximize else "minimize",
            pruner,
        )

    def _warm_start(self) -> None:
        assert self.search is not None
        source = self.job.get("warmStartStudyName")
        if not source:
            return
        try:
            copied = self.search.warm_start(source)
        except Exception as exc:  # noqa: BLE001 - the tuning runs without the history
            self._say(f"warm start from {source} failed, starting cold: {exc}")
            return
        self._say(f"warm start: {copied} trial(s) copied from {source}")

    def _resume(self) -> None:
        """Take over from an earlier driver of this tuning: trials it left CREATED or RUNNING
        are FAILED (counted once); suggestions it drew but never created run now."""
        assert self.search is not None
        known = {int(t["number"]): str(t["status"]) for t in self.job.get("trials") or []}
        records = {r.number: r for r in self.search.trials() if not r.warm_start}
        self.numbers = set(known)
        for number, status in sorted(known.items()):
            record = records.get(number)
            if status in (CREATED, RUNNING):
                self.search.fail(number)
                reason = "its driver was restarted"
                self._post(number, record.params if record else {}, FAILED, reason)
                known[number] = FAILED
                self.last_failure = f"trial {number}: {reason}"
                self._say(f"trial {number} FAILED: {reason}")
            elif record is not None and record.state == "RUNNING":
                self.search.fail(number)  # settled in the control plane: closed in the study
            if (
                known[number] == SUCCEEDED
                and record is not None
                and record.state == "COMPLETE"
                and record.value is not None
            ):
                self._succeeded(number, record.value)
        self.tally = Tally.of(list(known.values()))
        self.adopted = [
            Suggestion(r.number, r.params)
            for number, r in sorted(records.items())
            if r.state == "RUNNING" and number not in known
        ]
        if known:
            self._say(
                f"resuming with {len(known)} earlier trial(s): {self._counts()}"
                + (f"; {len(self.adopted)} drawn but never run" if self.adopted else "")
            )

    # -- the main loop -------------------------------------------------------------------

    def _loop(self) -> Ending:
        minutes = float(self.spec.get("timeout_minutes") or 43200)
        started = time.monotonic()
        while True:
            self._deliver_outbox(TRIAL_POST_SECONDS)
            if self.stop_requested.is_set():
                self._kill_all()
                return Ending(STOPPED, None, "stopped by the user")
            if time.monotonic() - started > minutes * 60:
                self._kill_all()
                return Ending(FAIL, None, f"exceeded timeout of {minutes:g} minutes")
            self._advance()
            self._reap()  # a slot whose worker cleaned up takes the next trial right away
            ending = self._ending()
            if ending is None:
                self._launch()
                ending = self._ending()
            if ending is not None:
                self._kill_all()
                return ending
            self._wait()

    def _wait(self) -> None:
        """Sleep until a worker answers (or a stop request is due to be seen)."""
        assert self.launcher is not None
        calls = [t.call for t in self.active.values() if t.call is not None]
        calls += [call for _worker, call, _deadline in self.closing]
        if calls and not self.stop_requested.is_set():
            self.launcher.wait(calls, POLL_SECONDS)
        else:
            self.stop_requested.wait(POLL_SECONDS)

    def _ending(self) -> Ending | None:
        grid_done = self.grid_done and self.pending is None and not self.adopted
        return tuning_end(
            self.tally,
            self.goal_trial is not None,
            grid_done,
            len(self.active),
            self.limits,
            self.last_failure,
        )

    def _launch(self) -> None:
        assert self.search is not None and self.launcher is not None
        while may_launch(self.tally, self._slots_taken(), self.limits, self.grid_done):
            if self.stop_requested.is_set():
                return
            suggestion = self.pending or (self.adopted.pop(0) if self.adopted else None)
            if suggestion is None:
                suggestion = self.search.suggest()
                if suggestion is None:
                    self.grid_done = True
                    self._say("every point of the grid was suggested")
                    return
            self.pending = suggestion
            number, params = suggestion
            try:
                info = self.control.trial(
                    self._payload(number, params, CREATED), retry_for=TRIAL_POST_SECONDS
                )
            except ControlPlaneError as exc:
                if exc.status >= 500:
                    return  # tried again next round
                raise
            except (urllib.error.URLError, TimeoutError, ConnectionError):
                return  # the control plane is away: tried again next round
            self.pending = None
            self.numbers.add(number)
            self._remember_outputs(number, info)
            worker = self.launcher.spawn(self.job, number, info, params)
            self.active[number] = Trial(number, params, worker, "launching", worker.call("launch"))
            shown = ", ".join(f"{name}={value}" for name, value in params.items())
            self._say(f"trial {number} created: {shown}")

    def _slots_taken(self) -> int:
        """Trials running, and ended ones whose worker is still cleaning up."""
        return len(self.active) + len(self.closing)

    def _advance(self) -> None:
        """Act on every answer that came: launched, watched, uploaded; watch the rest."""
        for trial in list(self.active.values()):
            if trial.call is None:
                self._watch(trial)
            elif trial.call.done():
                self._answered(trial)
            elif trial.phase in ("running", "stopping"):
                silent = time.monotonic() - trial.answered
                if silent > HEARTBEAT_SECONDS + WATCH_SECONDS:
                    self._lost(trial, f"it did not answer for {HEARTBEAT_SECONDS:.0f} s")

    def _watch(self, trial: Trial) -> None:
        now = time.monotonic()
        check_storage = now >= trial.next_storage_check
        if check_storage:
            trial.next_storage_check = now + STORAGE_CHECK_SECONDS
        trial.call = trial.worker.call("watch", check_storage, WATCH_SECONDS)

    def _answered(self, trial: Trial) -> None:
        assert trial.call is not None
        try:
            answer = trial.call.result(ANSWER_SECONDS)
        except WorkerLostError as exc:
            self._lost(trial, str(exc))
            return
        except TimeoutError:
            return
        trial.call, trial.answered = None, time.monotonic()
        if trial.phase == "launching":
            if answer:
                self._settle(trial, FAILED, str(answer))
                return
            trial.phase = "running"
            self._post(trial.number, trial.params, RUNNING)
            self._say(f"trial {trial.number} running")
            self._watch(trial)
        elif trial.phase == "uploading":
            if answer:
                self._settle(trial, FAILED, f"could not upload its outputs: {answer}")
                return
            self._settle(trial, SUCCEEDED)
        else:
            code, observations, summary, problem = answer
            if trial.phase == "stopping":
                self._observe(trial, observations)
                trial.summary = summary or trial.summary
                self._stopping(trial, code)
            else:
                self._running(trial, code, (observations, summary), problem)
            if trial.number in self.active and trial.call is None:
                self._watch(trial)

    def _running(
        self,
        trial: Trial,
        code: int | None,
        progress: tuple[list[tuple[int, float]], dict[str, dict[str, float]]],
        problem: str | None,
    ) -> None:
        observations, trial.summary = progress
        if self._observe(trial, observations) and code is None:
            trial.outcome = EARLY_STOPPED
            trial.reason = f"early-stopped at step {max(trial.steps)}{self._median_note(trial)}"
            self._kill(trial)
            self._say(f"trial {trial.number} {trial.reason}")
            return
        if code is not None:
            self._exited(trial, int(code))
            return
        if problem:
            trial.outcome, trial.reason = FAILED, problem
            self._kill(trial)
            self._say(f"trial {trial.number} killed: {problem}")

    def _stopping(self, trial: Trial, code: int | None) -> None:
        if code is not None:
            self._exited(trial, int(code))
        elif time.monotonic() - trial.stopping_since > KILL_GRACE_SECONDS:
            trial.worker.terminate()
            self._exited(trial, None)

    def _exited(self, trial: Trial, code: int | None) -> None:
        objective = trial.summary.get(self._objective_name(), {}).get("latest")
        status = trial_outcome(
            code,
            objective is not None,
            pruned=trial.outcome == EARLY_STOPPED,
            failed=trial.outcome == FAILED,
        )
        reason = trial.reason
        if status == FAILED and reason is None:
            reason = self._exit_reason(trial, code)
        if status == SUCCEEDED:
            trial.objective = objective
            trial.phase, trial.call = "uploading", trial.worker.call("upload")
            return
        if status == METRICS_UNAVAILABLE:
            reason = f"no value of the objective metric {self._objective_name()} in its log"
        self._settle(trial, status, reason)

    def _exit_reason(self, trial: Trial, code: int | None) -> str:
        if code is None:
            return "its process did not end after it was killed"
        try:
            return str(trial.worker.call("exit_reason", code).result(ANSWER_SECONDS))
        except (WorkerLostError, TimeoutError):
            return f"the entry point failed with exit code {code}"

    def _observe(self, trial: Trial, observations: list[tuple[int, float]]) -> bool:
        """Report new objective values to the study; whether the pruner stops the trial."""
        assert self.search is not None
        latest: dict[int, float] = {}
        for step, value in observations:
            latest[int(step)] = float(value)
        for step, value in latest.items():
            trial.steps[step] = value
            if trial.outcome is None and self.search.report(trial.number, step, value):
                return True
        return False

    def _lost(self, trial: Trial, why: str) -> None:
        """The trial's worker is gone: the trial ends (FAILED unless already decided)."""
        trial.worker.terminate()
        if trial.outcome is not None:
            self._settle(trial, trial.outcome, trial.reason, close=False)
        else:
            self._settle(trial, FAILED, f"its worker died: {why}", close=False)

    def _kill(self, trial: Trial) -> None:
        """Kill the trial's code; its watch answers with the exit."""
        trial.worker.call("kill")
        trial.phase, trial.stopping_since = "stopping", time.monotonic()

    def _kill_all(self) -> None:
        """End every active trial now: KILLED, unless its end was decided already."""
        for trial in list(self.active.values()):
            trial.worker.call("kill")
        for trial in list(self.active.values()):
            if trial.outcome is not None:
                self._settle(trial, trial.outcome, trial.reason)
            else:
                self._settle(trial, KILLED, "the tuning ended before it finished")

    def _settle(
        self, trial: Trial, status: str, reason: str | None = None, *, close: bool = True
    ) -> None:
        """A trial ended: tell the study first, then count it and report it."""
        assert self.search is not None
        number = trial.number
        objective = trial.objective if status == SUCCEEDED else None
        if status == SUCCEEDED:
            self.search.complete(number, objective)
        elif status == METRICS_UNAVAILABLE:
            self.search.complete(number, None)
        elif status == EARLY_STOPPED:
            self.search.prune(number)
        else:
            self.search.fail(number)
        self.active.pop(number, None)
        self.tally = self.tally.add(status)
        if status == SUCCEEDED and objective is not None:
            self._succeeded(number, objective)
        if status == FAILED:
            self.last_failure = f"trial {number}: {reason}"
        self._post(number, trial.params, status, reason, trial.summary or None, objective)
        said = f"trial {number} {status}"
        if objective is not None:
            said += f" with {self._objective_name()}={objective:g}"
        self._say(said + (f": {reason}" if reason and status != EARLY_STOPPED else ""))
        if close:
            self.closing.append(
                (trial.worker, trial.worker.call("finish"), time.monotonic() + FINISH_SECONDS)
            )

    def _succeeded(self, number: int, value: float) -> None:
        self.succeeded[number] = value
        if self.goal_trial is None and goal_reached(value, self.goal, self.maximize):
            self.goal_trial = number
            sign = ">=" if self.maximize else "<="
            self._say(
                f"trial {number} reached the objective goal "
                f"({self._objective_name()}={value:g} {sign} {self.goal:g})"
            )

    def _reap(self, wait: bool = False) -> None:
        """Free the workers of finished trials once they cleaned up; end a worker that took
        too long or failed to."""
        left = []
        for worker, call, deadline in self.closing:
            if not wait and not call.done() and time.monotonic() < deadline:
                left.append((worker, call, deadline))
                continue
            try:
                call.result(max(0.0, deadline - time.monotonic()))
            except (WorkerLostError, TimeoutError):
                worker.terminate()
            else:
                worker.release()
        self.closing = left

    # -- reports -------------------------------------------------------------------------

    def _payload(
        self,
        number: int,
        params: dict[str, str],
        status: str,
        reason: str | None = None,
        metrics: dict[str, dict[str, float]] | None = None,
        objective: float | None = None,
    ) -> dict[str, Any]:
        return {
            "number": number,
            "params": dict(params),
            "status": status,
            "reason": reason[:4000] if reason else None,
            "metrics": metrics,
            "objectiveValue": objective,
        }

    def _post(
        self,
        number: int,
        params: dict[str, str],
        status: str,
        reason: str | None = None,
        metrics: dict[str, dict[str, float]] | None = None,
        objective: float | None = None,
    ) -> None:
        """Report a trial's move; one that cannot get through now waits in the outbox (the
        latest report of a trial replaces an older one: the control plane walks the steps)."""
        waiting = bool(self.outbox)  # the control plane is likely away: the loop retries
        self.outbox[number] = self._payload(number, params, status, reason, metrics, objective)
        if not waiting:
            self._deliver(number, TRIAL_POST_SECONDS)

    def _deliver(self, number: int, retry_for: float) -> bool:
        payload = self.outbox[number]
        try:
            info = self.control.trial(payload, retry_for=retry_for)
        except ControlPlaneError as exc:
            if exc.status >= 500:
                return False
            self._say(f"the control plane refused the report of trial {number}: {exc}")
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            return False
        else:
            self._remember_outputs(number, info)
        self.outbox.pop(number, None)
        return True

    def _deliver_outbox(self, retry_for: float) -> None:
        for number in sorted(self.outbox):
            if not self._deliver(number, retry_for):
                return

    def _remember_outputs(self, number: int, info: dict[str, Any]) -> None:
        model = info.get("modelUploadUri")
        if model:
            self.outputs[number] = (str(model), info.get("checkPointUploadUri"))

    def _samples(self) -> list[dict[str, Any]]:
        """Monitoring samples of the running trials' nodes (``trial{n}-node{rank}``)."""
        running = [t for t in list(self.active.values()) if t.phase == "running"]
        calls = [t.worker.call("sample") for t in running]
        samples: list[dict[str, Any]] = []
        for call in calls:
            try:
                sample = call.result(ANSWER_SECONDS)
            except (WorkerLostError, TimeoutError):
                continue
            samples.extend(sample or [])
        return samples

    # -- the end -------------------------------------------------------------------------

    def _finish(self, ending: Ending) -> None:
        """Settle the tuning: result file, trial reports, the final report, then clean-up.

        A stopped driver has seconds before Ray kills it: the report comes before the
        clean-up, and every step after the decision survives the failure of another."""
        if ending.status == CREATE_FAILED and self.running_reported:
            ending = Ending(FAIL, None, ending.reason)
        self._guard("write the result", lambda: self._write_result(ending))
        self._guard("close the unused suggestions", self._close_drawn)
        self._guard("report the trials", lambda: self._deliver_outbox(FINAL_DELIVERY_SECONDS))
        best = best_trial(self.succeeded, self.maximize)
        if ending.status == COMPLETE:
            self._stop_reporter()
            self._complete(ending, best)
        else:
            self._say(
                f"tuning ends {ending.status}" + (f": {ending.reason}" if ending.reason else "")
            )
            self._flush_log()
            self._settle_tuning(ending)
            self._stop_reporter()
            self._guard("remove the outputs", lambda: self._remove_outputs(best))
        self._reap(wait=True)
        if self.launcher is not None:
            self._guard("end the workers", self.launcher.shutdown)
        if self.sink is not None:
            self.sink.close()
        if self.storage is not None:
            self._guard("close the study", self.storage.engine.dispose)

    def _complete(self, ending: Ending, best: int | None) -> None:
        try:
            current = self.control.report("COMPLETE_IN_PROGRESS")
        except Exception as exc:  # noqa: BLE001 - the result file holds the outcome
            print(f"could not report COMPLETE_IN_PROGRESS: {exc}", file=sys.stderr)
            current = "COMPLETE_IN_PROGRESS"
        if current == "COMPLETE_IN_PROGRESS":
            self._guard("remove the outputs", lambda: self._remove_outputs(best))
            chosen = f"; the best trial is {best}" if best is not None else ""
            self._say(f"tuning ends COMPLETE ({ending.detail}){chosen}")
            self._flush_log()
            current = self._settle_tuning(ending)
        if current == "STOP_IN_PROGRESS":
            self._say("stopped by the user while completing")
            self._flush_log()
            self._settle_tuning(Ending(STOPPED, None, "stopped by the user while completing"))

    def _close_drawn(self) -> None:
        """Suggestions drawn but never created in the control plane end FAIL in the study."""
        if self.search is None:
            return
        for suggestion in [self.pending, *self.adopted]:
            if suggestion is not None:
                self.search.fail(suggestion.number)
        self.pending, self.adopted = None, []

    def _stop_reporter(self) -> None:
        if self.reporter is not None:
            self.reporter.stop()
            self.reporter = None

    def _settle_tuning(self, ending: Ending) -> str:
        """Record the outcome durably, then report it; returns what the control plane holds."""
        self._guard("write the result", lambda: self._write_result(ending))
        try:
            return self.control.report(ending.status, ending.reason, ending.detail)
        except Exception as exc:  # noqa: BLE001 - the tick settles it from the result file
            print(f"could not report {ending.status}: {exc}", file=sys.stderr)
            return ending.status

    def _write_result(self, ending: Ending) -> None:
        """The outcome, for the tick; with the trial reports that could not be delivered
        (``undeliveredTrials``: the payloads of ``POST .../trials``), if any."""
        outcome: dict[str, Any] = {
            "status": ending.status,
            "reason": ending.reason,
            "detail": ending.detail,
            "at": datetime.now(UTC).isoformat(),
        }
        if self.outbox:
            outcome["undeliveredTrials"] = [self.outbox[n] for n in sorted(self.outbox)]
        self.store.write(self.job["resultKey"], json.dumps(outcome).encode())

    def _guard(self, what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the next steps of the end must still run
            print(f"could not {what}: {type(exc).__name__}: {exc}", file=sys.stderr)

    def _remove_outputs(self, keep: int | None) -> None:
        """Remove the model and checkpoint folders of every trial but ``keep`` (the best)."""
        numbers = set(self.numbers) | set(self.outputs)
        if self.search is not None:
            numbers |= {r.number for r in self.search.trials() if not r.warm_start}
        removed = 0
        for number in sorted(numbers - {keep}):
            for uri in self._output_uris(number):
                removed += self._remove(uri)
        if removed:
            self._say(f"removed {removed} output object(s) of trials other than the best")

    def _output_uris(self, number: int) -> list[str]:
        if number in self.outputs:
            model, checkpoint = self.outputs[number]
            return [model] + ([checkpoint] if checkpoint else [])
        for known, (model, checkpoint) in self.outputs.items():
            derived = [sibling_uri(model, known, number)]
            if checkpoint:
                derived.append(sibling_uri(checkpoint, known, number))
            return [uri for uri in derived if uri]
        return []

    def _remove(self, uri: str) -> int:
        try:
            store, prefix = open_uri(uri)
            if not prefix.strip("/"):
                return 0  # never a whole bucket or root
            return store.remove_prefix(prefix.rstrip("/") + "/")
        except Exception as exc:  # noqa: BLE001 - best effort, said in the log
            self._say(f"could not remove {uri}: {exc}")
            return 0

    # -- helpers -------------------------------------------------------------------------

    def _objective_name(self) -> str:
        return str(self.spec["objective_metric"]["name"])

    def _counts(self) -> str:
        t = self.tally
        return (
            f"{t.succeeded} succeeded, {t.failed} failed, {t.early_stopped} early-stopped, "
            f"{t.metrics_unavailable} without metrics, {t.killed} killed"
        )

    def _median_note(self, trial: Trial) -> str:
        """`` (0.41 > median 0.30)``: the trial's best value against the median of the
        completed trials at its last step, as the median pruner compared them."""
        if not trial.steps:
            return ""
        step = max(trial.steps)
        best = max(trial.steps.values()) if self.maximize else min(trial.steps.values())
        try:
            import optuna
            from optuna.trial import TrialState

            if self.study is None:
                self.study = optuna.load_study(
                    study_name=self.job["studyName"], storage=self.storage
                )
            values = [
                t.intermediate_values[step]
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if step in t.intermediate_values
            ]
        except Exception:  # noqa: BLE001 - only a note in the log
            return ""
        if not values:
            return ""
        values.sort()
        middle = len(values) // 2
        median = values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
        sign = "<" if self.maximize else ">"
        return f" ({best:.4g} {sign} median {median:.4g})"

    def _say(self, message: str) -> None:
        if self.sink is not None:
            self.sink.write("driver", "stdout", f"[openmaker] {message}\n")
        print(f"[openmaker] {message}", flush=True)

    def _flush_log(self) -> None:
        if self.sink is not None:
            self.sink.flush()

    def _write_log_meta(self) -> None:
        meta = {
            "hyperparameterTuningId": self.tuning_id,
            "hyperparameterTuningName": self.job.get("name"),
            "useLog": bool(self.spec.get("use_log")),
        }
        self.store.write(self.job["logMetaKey"], json.dumps(meta).encode())
