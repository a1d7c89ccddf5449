"""Trials of a hyperparameter tuning with real processes, without Ray.

The first tests run a :class:`TrialRunner` (one trial of a ``TrialSlot`` actor) on a real
script: metric observations arrive with their steps while it runs, a kill ends it, and its
outputs go to the trial's own folder. The others run the whole :class:`TuningDriver` against
an in-memory control plane that walks the trial and tuning state machines as the real one
does, with each trial in threads of this process instead of an actor, on a real Optuna study
(SQLite): every way a tuning ends, early stopping, a worker that dies, a stop, a driver
restart and a control plane that is away for a while.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from chalicelib.domain import states
from chalicelib.errors import InvalidTransition
from runners.control import RETRY_FOR_SECONDS
from runners.tuning import driver as driver_module
from runners.tuning.driver import TuningDriver
from runners.tuning.search import Search, open_storage
from runners.tuning.trial import TrialHost, TrialRunner, TrialSlot, WorkerLostError

TUNING_ID = "hpt-1"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from chalicelib.config import reset_settings

    monkeypatch.setenv("OPENMAKER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENMAKER_STORAGE_ROOT", str(tmp_path / "storage"))
    monkeypatch.setenv("OPENMAKER_FILE_ROOTS", str(tmp_path))
    monkeypatch.setattr(driver_module, "POLL_SECONDS", 0.05)
    reset_settings()
    yield tmp_path
    reset_settings()


def source(tmp_path: Path, code: str) -> Path:
    folder = tmp_path / "src"
    folder.mkdir(exist_ok=True)
    (folder / "main.py").write_text(code)
    return folder


def spec(name: str, type_code: str, **fields: str) -> dict[str, str]:
    wire = {"hyperparameterName": name, "hyperparameterTypeCode": type_code}
    keys = {
        "low": "hyperparameterMinValue",
        "high": "hyperparameterMaxValue",
        "step": "hyperparameterStep",
        "values": "hyperparameterSpecifiedValues",
    }
    wire.update({keys[key]: value for key, value in fields.items()})
    return wire


def tuning_job(tmp_path: Path, code: str, specs: list[dict[str, str]], **fields: Any) -> dict:
    """A tuning's job as ``GET .../job`` answers it."""
    spec_fields = {
        "flavor": {"name": "m2.c1m2", "vcpus": 1, "ram": 4096},
        "source_dir_uri": f"file://{source(tmp_path, code)}",
        "entry_point": "main.py",
        "hyperparameter_list": [{"parameter_name": "epochs", "parameter_value": "3"}],
        "dataset_list": [],
        "model_upload_uri": f"file://{tmp_path}/out/model",
        "check_point_upload_uri": f"file://{tmp_path}/out/checkpoint",
        "timeout_minutes": 10,
        "instance_count": 2,
        "parallel_trial_count": 2,
        "max_trial_count": 4,
        "max_failed_trial_count": 3,
        "metric_regex": None,
        "metric_list": [{"name": "loss"}, {"name": "accuracy"}],
        "objective_metric": {"name": "loss"},
        "objective_type_code": "MINIMIZE",
        "objective_goal": None,
        "tuning_strategy_name": "RANDOM",
        "tuning_strategy_random_state": 7,
        "early_stopping_algorithm": None,
        "early_stopping_min_trial_count": 3,
        "early_stopping_start_step": 4,
    }
    spec_fields.update(fields)
    spec_fields["instance_count"] = spec_fields["parallel_trial_count"]
    return {
        "hyperparameterTuningId": TUNING_ID,
        "name": "tune",
        "appKey": "app",
        "experimentId": "e-1",
        "region": "kr1",
        "status": "CREATE_IN_PROGRESS",
        "spec": spec_fields,
        "hyperparameterSpecList": specs,
        "nodesPerTrial": 1,
        "optunaStorage": {"url": f"sqlite:///{tmp_path / 'optuna.db'}", "engineKwargs": {}},
        "studyName": TUNING_ID,
        "warmStartStudyName": None,
        "logPrefix": f"logs/hyperparameter-tuning/app/{TUNING_ID}/",
        "logMetaKey": f"logs-meta/hyperparameter-tuning/app/{TUNING_ID}.json",
        "resultKey": f"jobs/hyperparameter-tuning/{TUNING_ID}/result.json",
        "trials": [],
    }


def trial_answer(tmp_path: Path, number: int, status: str = "CREATED") -> dict[str, Any]:
    return {
        "trialId": f"trial-{number}",
        "status": status,
        "logPrefix": f"logs/hyperparameter-tuning/app/{TUNING_ID}/trials/{number}/",
        "modelUploadUri": f"file://{tmp_path}/out/model/trials/{number}",
        "checkPointUploadUri": f"file://{tmp_path}/out/checkpoint/trials/{number}",
    }


class FakeControlPlane:
    """The internal API of the contract, in memory: trials upserted by number along the
    trial machine (terminal statuses never change), the tuning along its machine."""

    def __init__(self, job: dict[str, Any], root: Path) -> None:
        self.data = job
        self.root = root
        self.status = job["status"]
        self.lock = threading.Lock()
        self.trials: dict[int, dict[str, Any]] = {
            int(t["number"]): {**t, "history": [t["status"]], "params": {}}
            for t in job.get("trials") or []
        }
        self.posts: list[dict[str, Any]] = []
        self.late: list[dict[str, Any]] = []  # moves asked of a terminal trial
        self.reports: list[tuple[str, str | None, str | None]] = []
        self.samples: list[dict[str, Any]] = []
        self.down_until = 0.0  # trial posts fail until then, as if the control plane were away
        self.refused = 0

    def job(self) -> dict[str, Any]:
        with self.lock:
            trials = [
                {"trialId": t["trialId"], "number": n, "status": t["status"]}
                for n, t in sorted(self.trials.items())
            ]
            return {**copy.deepcopy(self.data), "status": self.status, "trials": trials}

    def report(self, status: str, reason: str | None = None, detail: str | None = None) -> str:
        with self.lock:
            self.reports.append((status, reason, detail))
            try:
                for step in states.path(states.HYPERPARAMETER_TUNING, self.status, status):
                    self.status = str(step)
            except InvalidTransition:
                pass  # 409: the client reads the current status
            return self.status

    def trial(self, payload: dict[str, Any], retry_for: float = RETRY_FOR_SECONDS) -> dict:
        away = self.down_until - time.monotonic()
        if away > 0:  # the client retries for retry_for seconds, as the real one does
            if retry_for < away:
                time.sleep(retry_for)
                with self.lock:
                    self.refused += 1
                raise urllib.error.URLError("connection refused")
            time.sleep(away)
        with self.lock:
            self.posts.append(copy.deepcopy(payload))
            number = int(payload["number"])
            trial = self.trials.get(number)
            if trial is None:
                assert payload["status"] == "CREATED", payload
                trial = self.trials[number] = {
                    "trialId": f"trial-{number}",
                    "status": "CREATED",
                    "history": ["CREATED"],
                    "params": payload["params"],
                }
            if states.is_terminal(states.TRIAL, trial["status"]):
                if payload["status"] != trial["status"]:
                    self.late.append(payload)
            else:
                for step in states.path(states.TRIAL, trial["status"], payload["status"]):
                    trial["status"] = str(step)
                    trial["history"].append(str(step))
                trial.update(
                    reason=payload["reason"],
                    metrics=payload["metrics"],
                    objective=payload["objectiveValue"],
                )
            return trial_answer(self.root, number, trial["status"])

    def metrics(self, samples: list[dict[str, Any]]) -> None:
        self.samples += samples

    # -- for the tests

    def statuses(self) -> dict[int, str]:
        with self.lock:
            return {n: t["status"] for n, t in sorted(self.trials.items())}

    def terminal_posts(self, number: int) -> list[str]:
        return [
            p["status"]
            for p in self.posts
            if p["number"] == number and states.is_terminal(states.TRIAL, p["status"])
        ]

    def final(self) -> tuple[str, str | None, str | None]:
        return self.reports[-1]


class LocalCall:
    def __init__(self, future: concurrent.futures.Future[Any], worker: LocalWorker) -> None:
        self.future, self.worker = future, worker

    def done(self) -> bool:
        return self.worker.dead or self.future.done()

    def result(self, timeout: float) -> Any:
        if self.worker.dead:
            raise WorkerLostError("the actor died")
        try:
            return self.future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError("no answer yet") from None
        except Exception as exc:  # noqa: BLE001 - as Ray wraps an error raised in a method
            raise WorkerLostError(f"{type(exc).__name__}: {exc}") from None


class LocalWorker:
    """A trial's worker in threads of this process: what the Ray actor does, minus Ray."""

    def __init__(self, runner: TrialRunner) -> None:
        self.runner = runner
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
        self.dead = False
        self.released = False
        self.calls: list[str] = []

    def call(self, method: str, *args: Any) -> LocalCall:
        self.calls.append(method)
        if self.dead:
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            future.set_exception(RuntimeError("dead"))
            return LocalCall(future, self)
        return LocalCall(self.pool.submit(getattr(self.runner, method), *args), self)

    def terminate(self) -> None:
        """Like ``ray.kill`` (or a SIGKILL of the actor): the process goes, unflushed."""
        if not self.dead:
            self.dead = True
            self.runner.kill()
            self.pool.shutdown(wait=False)

    def release(self) -> None:
        self.released = True
        self.pool.shutdown(wait=False)


class LocalLauncher:
    def __init__(self) -> None:
        self.workers: dict[int, LocalWorker] = {}
        self.prepared = 0
        self.shut_down = False

    def prepare(self, job: dict[str, Any], count: int) -> None:
        self.prepared = count

    def spawn(
        self, job: dict[str, Any], number: int, trial: dict[str, Any], params: dict[str, str]
    ) -> LocalWorker:
        worker = self.workers[number] = LocalWorker(TrialRunner(job, number, trial, params))
        return worker

    def wait(self, calls: list[LocalCall], timeout: float) -> None:
        futures = [call.future for call in calls]
        concurrent.futures.wait(futures, timeout, concurrent.futures.FIRST_COMPLETED)

    def shutdown(self) -> None:
        self.shut_down = True


def run_tuning(
    job: dict[str, Any], root: Path, during: Callable[[FakeControlPlane, TuningDriver], None]
) -> tuple[FakeControlPlane, TuningDriver, LocalLauncher]:
    plane = FakeControlPlane(job, root)
    launcher = LocalLauncher()
    driver = TuningDriver(TUNING_ID, control=plane, launcher=launcher)
    helper = threading.Thread(target=during, args=(plane, driver), daemon=True)
    helper.start()
    assert driver.run() == 0
    helper.join(30)
    return plane, driver, launcher


def nothing(_plane: FakeControlPlane, _driver: TuningDriver) -> None:
    return None


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def stored(root: Path, key: str) -> Any:
    return json.loads((root / "storage" / key).read_text())


def model_folder(root: Path, number: int) -> Path:
    return root / "out" / "model" / "trials" / str(number)


def log_bodies(root: Path, prefix: str) -> list[str]:
    bodies = []
    for chunk in sorted((root / "storage" / prefix).rglob("*.jsonl")):
        bodies += [json.loads(line)["body"] for line in chunk.read_text().splitlines()]
    return bodies


def study_states(root: Path) -> list[str]:
    storage = open_storage(f"sqlite:///{root / 'optuna.db'}")
    try:
        study = optuna.load_study(study_name=TUNING_ID, storage=storage)
        return [t.state.name for t in study.get_trials(deepcopy=False)]
    finally:
        storage.engine.dispose()


# ------------------------------------------------------------------ one trial, no Ray

STEPS_SCRIPT = r"""
import json, os, sys, time
from pathlib import Path
for step in range(1, 4):
    print(f"epoch={step} loss={1 / step:.3f} accuracy={step / 10}", flush=True)
go = Path(os.environ["EM_MODEL_DIR"]).parent / "go"
deadline = time.time() + 30
while not go.exists() and time.time() < deadline:
    time.sleep(0.02)
print("epoch=4 loss=0.1", file=sys.stderr, flush=True)
Path(os.environ["EM_MODEL_DIR"], "model.json").write_text(json.dumps({
    "argv": sys.argv[1:],
    "hps": json.loads(os.environ["EM_HPS"]),
    "lr": os.environ["EM_HP_LR"],
    "trial": [os.environ["EM_TRIAL_NUMBER"], os.environ["EM_TRIAL_ID"]],
    "tuning": os.environ["EM_HYPERPARAMETER_TUNING_ID"],
}))
Path(os.environ["EM_CHECKPOINT_DIR"], "ckpt.bin").write_bytes(b"x")
"""


def runner_for(root: Path, code: str, number: int = 3) -> TrialRunner:
    job = tuning_job(root, code, [spec("lr", "double", low="0.001", high="0.1")])
    return TrialRunner(job, number, trial_answer(root, number), {"lr": "0.01"})


def test_the_slot_actor_is_the_plain_host_in_an_actor() -> None:
    assert issubclass(TrialSlot.__ray_actor_class__, TrialHost)  # type: ignore[attr-defined]


QUICK_SCRIPT = r"""
import os, sys
open(os.path.join(os.environ["EM_MODEL_DIR"], "lr.txt"), "w").write(os.environ["EM_HP_LR"])
print(f"loss={float(os.environ['EM_HP_LR']) * 2}", flush=True)
sys.exit(int(os.environ.get("EM_HP_EXIT", "0")))
"""


def test_a_slot_runs_trial_after_trial_and_a_watch_answers_as_soon_as_the_code_ends(
    env: Path,
) -> None:
    job = tuning_job(env, QUICK_SCRIPT, [spec("lr", "double", low="0.001", high="0.1")])
    host = TrialHost()
    for number, lr in ((0, "0.5"), (1, "0.25")):
        host.open(job, number, trial_answer(env, number), {"lr": lr})
        assert host.call(number, "launch") is None
        started = time.monotonic()
        code, observations, summary, problem = host.call(number, "watch", False, 20.0)
        while code is None:  # a value came before the exit
            code, more, summary, problem = host.call(number, "watch", False, 20.0)
            observations += more
        assert time.monotonic() - started < 15  # the exit ended the wait, not the 20 s
        assert (code, problem) == (0, None)
        assert observations == [(1, float(lr) * 2)]
        assert summary["loss"]["latest"] == float(lr) * 2
        assert host.call(number, "upload") is None
        host.call(number, "finish")
        assert number not in host.runners
    assert (model_folder(env, 0) / "lr.txt").read_text() == "0.5"
    assert (model_folder(env, 1) / "lr.txt").read_text() == "0.25"


def test_a_kill_that_reaches_a_slot_before_its_trial_opens_is_not_lost(env: Path) -> None:
    job = tuning_job(env, QUICK_SCRIPT, [spec("lr", "double", low="0.001", high="0.1")])
    host = TrialHost()
    host.call(4, "kill")  # a threaded actor ran the kill first
    host.open(job, 4, trial_answer(env, 4), {"lr": "0.1"})
    assert host.call(4, "launch") == "killed before it started"
    host.call(4, "finish")
    assert host.killed == set() and host.runners == {}


def test_a_call_for_a_trial_never_opened_on_a_slot_fails_after_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(TrialHost, "OPEN_WAIT_SECONDS", 0.05)
    with pytest.raises(LookupError, match="trial 9 was never opened"):
        TrialHost().call(9, "poll")


def test_a_trial_reports_steps_while_it_runs_and_publishes_to_its_own_folder(env: Path) -> None:
    runner = runner_for(env, STEPS_SCRIPT)
    try:
        assert runner.stage() is None
        assert runner.start() is None
        seen: list[tuple[int, float]] = []

        def three_seen() -> bool:
            seen.extend(runner.progress()[0])
            return len(seen) >= 3

        wait_for(three_seen)
        assert seen == [(1, 1.0), (2, 0.5), (3, 0.333)]
        assert runner.poll() is None  # still running: the values came while it ran
        assert runner.limit_problem(True) is None
        assert [sample["node"] for sample in runner.sample()] == ["trial3-node0"]
        (runner.node.layout.root / "go").touch()
        wait_for(lambda: runner.poll() is not None)
        assert runner.poll() == 0
        observations, summary = runner.progress()
        assert observations == [(4, 0.1)]  # from stderr
        assert summary["loss"] == {"min": 0.1, "max": 1.0, "latest": 0.1}
        assert summary["accuracy"]["latest"] == 0.3
        assert runner.upload() is None
    finally:
        runner.finish()
    model = json.loads((model_folder(env, 3) / "model.json").read_text())
    assert model["argv"] == ["--epochs", "3", "--lr", "0.01"]
    assert model["hps"] == {"epochs": "3", "lr": "0.01"} and model["lr"] == "0.01"
    assert model["trial"] == ["3", "trial-3"] and model["tuning"] == TUNING_ID
    assert (env / "out" / "checkpoint" / "trials" / "3" / "ckpt.bin").exists()
    assert not (env / "out" / "model" / "model.json").exists()  # not the tuning's folder
    assert not runner.node.layout.root.exists()  # work folder removed
    bodies = log_bodies(env, f"logs/hyperparameter-tuning/app/{TUNING_ID}/trials/3/")
    assert "epoch=1 loss=1.000 accuracy=0.1" in bodies and "epoch=4 loss=0.1" in bodies


def test_a_killed_trial_ends_at_once(env: Path) -> None:
    runner = runner_for(env, "import time\nprint('loss=1', flush=True)\ntime.sleep(60)\n")
    try:
        assert runner.stage() is None and runner.start() is None
        wait_for(lambda: bool(runner.progress()[1]))
        started = time.monotonic()
        runner.kill()
        wait_for(lambda: runner.poll() is not None, 10)
        assert time.monotonic() - started < 5
        # (kill_tree reaps the process itself, so Popen reads no signal: the driver decides
        # how a trial it killed ended, never from this code)
        assert runner.node.process is not None
        assert not runner.node.process.tree()
        assert runner.start() == "killed before it started"  # a late start does nothing
    finally:
        runner.finish()


def test_a_trial_that_cannot_stage_says_why(env: Path) -> None:
    runner = runner_for(env, "print('hi')\n")
    runner.node.spec["entry_point"] = "missing.py"
    try:
        reason = runner.stage()
        assert reason is not None and "entry point missing.py not found" in reason
    finally:
        runner.finish()


# ------------------------------------------------------------------ the driver, no Ray

LOSS_SCRIPT = r"""
import json, os, time
from pathlib import Path
hps = json.loads(os.environ["EM_HPS"])
x = float(hps.get("lr", hps.get("x", 0)))
for step in range(1, 4):
    print(f"epoch={step} loss={x + 1 / step} accuracy={step / 10}", flush=True)
    time.sleep(0.02)
print(f"loss={x}", flush=True)
Path(os.environ["EM_MODEL_DIR"], "model.json").write_text(json.dumps(hps))
"""


def test_a_tuning_runs_to_its_maximum_and_keeps_only_the_best_model(env: Path) -> None:
    job = tuning_job(env, LOSS_SCRIPT, [spec("lr", "double", low="0.01", high="0.1")])
    plane, _, _ = run_tuning(job, env, nothing)
    assert plane.final() == ("COMPLETE", None, "MaxTrialsReached")
    assert [r[0] for r in plane.reports] == ["RUNNING", "COMPLETE_IN_PROGRESS", "COMPLETE"]
    assert plane.status == "COMPLETE"
    assert stored(env, job["resultKey"])["detail"] == "MaxTrialsReached"
    assert plane.statuses() == {n: "SUCCEEDED" for n in range(4)}
    assert plane.late == []
    for number, trial in plane.trials.items():
        assert trial["history"] == ["CREATED", "RUNNING", "SUCCEEDED"]
        assert plane.terminal_posts(number) == ["SUCCEEDED"]
        lr = float(trial["params"]["lr"])
        assert trial["objective"] == pytest.approx(lr)  # the latest value, not the best
        assert trial["metrics"]["loss"]["max"] == pytest.approx(lr + 1)
        assert trial["metrics"]["accuracy"]["latest"] == pytest.approx(0.3)
    best = min(plane.trials, key=lambda n: plane.trials[n]["objective"])
    for number in range(4):
        assert (model_folder(env, number) / "model.json").exists() == (number == best)
    assert study_states(env) == ["COMPLETE"] * 4
    assert stored(env, job["logMetaKey"])["hyperparameterTuningId"] == TUNING_ID
    said = log_bodies(env, job["logPrefix"] + "driver/")
    assert any(f"the best trial is {best}" in line for line in said)
    assert any(line.startswith("[openmaker] trial 0 created: lr=") for line in said)
    assert log_bodies(env, f"{job['logPrefix']}trials/2/")  # each trial has its own log


def test_a_reached_goal_completes_the_tuning(env: Path) -> None:
    job = tuning_job(
        env,
        LOSS_SCRIPT,
        [spec("x", "discrete", values="1,2,3,4")],
        tuning_strategy_name="GRID",
        parallel_trial_count=1,
        max_trial_count=10,
        objective_goal=2.5,
    )
    plane, _, _ = run_tuning(job, env, nothing)
    assert plane.final() == ("COMPLETE", None, "GoalReached")
    statuses = plane.statuses()
    last = max(statuses)
    assert float(plane.trials[last]["params"]["x"]) <= 2.5  # the last one reached it
    assert all(float(plane.trials[n]["params"]["x"]) > 2.5 for n in range(last))
    assert set(statuses.values()) == {"SUCCEEDED"}
    assert (model_folder(env, last) / "model.json").exists()


def test_an_exhausted_grid_completes_the_tuning(env: Path) -> None:
    job = tuning_job(
        env,
        LOSS_SCRIPT,
        [spec("x", "discrete", values="3,1,2")],
        tuning_strategy_name="GRID",
        max_trial_count=10,
    )
    plane, _, _ = run_tuning(job, env, nothing)
    assert plane.final() == ("COMPLETE", None, "SuggestionEndReached")
    assert sorted(t["params"]["x"] for t in plane.trials.values()) == ["1", "2", "3"]
    best = next(n for n, t in plane.trials.items() if t["params"]["x"] == "1")
    kept = [n for n in range(3) if model_folder(env, n).exists()]
    assert kept == [best]


def test_too_many_failed_trials_fail_the_tuning(env: Path) -> None:
    job = tuning_job(
        env,
        "import sys\nprint('loss=0.5')\nprint('boom', file=sys.stderr)\nsys.exit(3)\n",
        [spec("lr", "double", low="0.01", high="0.1")],
        parallel_trial_count=1,
        max_trial_count=5,
        max_failed_trial_count=2,
    )
    plane, _, _ = run_tuning(job, env, nothing)
    status, reason, detail = plane.final()
    assert status == "FAIL_HYPERPARAMETER_TUNING" and detail is None
    assert reason is not None
    assert reason.startswith("2 trial(s) failed, reaching maxFailedTrialCount 2; the last: ")
    assert "exit code 3" in reason and "boom" in reason
    assert plane.statuses() == {0: "FAILED", 1: "FAILED"}
    assert stored(env, job["resultKey"])["status"] == "FAIL_HYPERPARAMETER_TUNING"
    assert study_states(env) == ["FAIL", "FAIL"]


def test_trials_without_metrics_are_not_failures(env: Path) -> None:
    job = tuning_job(
        env,
        "print('no metrics here')\n",
        [spec("lr", "double", low="0.01", high="0.1")],
        max_trial_count=3,
        max_failed_trial_count=1,
    )
    plane, _, _ = run_tuning(job, env, nothing)
    assert plane.final() == ("COMPLETE", None, "MaxTrialsReached")
    assert set(plane.statuses().values()) == {"METRICS_UNAVAILABLE"}
    assert all(t["objective"] is None for t in plane.trials.values())
    assert not any(model_folder(env, n).exists() for n in range(3))  # none is the best


EARLY_SCRIPT = r"""
import os, time
number = int(os.environ["EM_TRIAL_NUMBER"])
loss, steps = (0.1, 5) if number == 0 else (1.0, 300)
for step in range(1, steps + 1):
    print(f"step={step} loss={loss}", flush=True)
    time.sleep(0.02 if number == 0 else 0.1)
"""


def test_a_trial_worse_than_the_median_is_stopped_early(env: Path) -> None:
    job = tuning_job(
        env,
        EARLY_SCRIPT,
        [spec("lr", "double", low="0.01", high="0.1")],
        parallel_trial_count=1,
        max_trial_count=2,
        early_stopping_algorithm="MEDIAN",
        early_stopping_min_trial_count=1,
        early_stopping_start_step=2,
    )
    started = time.monotonic()
    plane, _, _ = run_tuning(job, env, nothing)
    assert time.monotonic() - started < 25  # trial 1 alone would take 30 s
    assert plane.final() == ("COMPLETE", None, "MaxTrialsReached")
    assert plane.statuses() == {0: "SUCCEEDED", 1: "EARLY_STOPPED"}
    assert plane.trials[1]["metrics"]["loss"]["latest"] == 1.0
    assert plane.trials[1]["objective"] is None
    assert plane.trials[1]["reason"].startswith("early-stopped at step ")
    said = log_bodies(env, job["logPrefix"] + "driver/")
    assert any(
        line.startswith("[openmaker] trial 1 early-stopped at step ")
        and line.endswith("(1 > median 0.1)")
        for line in said
    ), said
    assert study_states(env) == ["COMPLETE", "PRUNED"]


SLOW_SCRIPT = r"""
import json, os, time
from pathlib import Path
for step in range(1, 41):
    print(f"step={step} loss={1 / step}", flush=True)
    time.sleep(0.05)
Path(os.environ["EM_MODEL_DIR"], "model.json").write_text("{}")
"""


def test_a_trial_whose_worker_dies_fails_once_and_the_tuning_goes_on(env: Path) -> None:
    job = tuning_job(
        env,
        SLOW_SCRIPT,
        [spec("lr", "double", low="0.01", high="0.1")],
        parallel_trial_count=1,
        max_trial_count=3,
    )
    launcher = LocalLauncher()
    plane = FakeControlPlane(job, env)
    driver = TuningDriver(TUNING_ID, control=plane, launcher=launcher)

    def kill_the_first_worker() -> None:
        wait_for(lambda: plane.statuses().get(0) == "RUNNING")
        launcher.workers[0].terminate()

    helper = threading.Thread(target=kill_the_first_worker, daemon=True)
    helper.start()
    assert driver.run() == 0
    assert plane.final() == ("COMPLETE", None, "MaxTrialsReached")
    assert plane.statuses() == {0: "FAILED", 1: "SUCCEEDED", 2: "SUCCEEDED"}
    assert plane.trials[0]["reason"].startswith("its worker died")
    assert plane.terminal_posts(0) == ["FAILED"]  # counted once
    assert driver.tally.failed == 1 and driver.tally.finished == 3
    assert plane.late == []
    assert launcher.workers[0].runner.node.process is not None
    assert launcher.workers[0].runner.node.process.poll() is not None  # its process is gone


def test_a_stop_kills_the_running_trials(env: Path) -> None:
    job = tuning_job(
        env,
        "import time\nprint('loss=1', flush=True)\ntime.sleep(60)\n",
        [spec("lr", "double", low="0.01", high="0.1")],
        parallel_trial_count=2,
        max_trial_count=10,
    )

    def stop(plane: FakeControlPlane, driver: TuningDriver) -> None:
        wait_for(lambda: list(plane.statuses().values()) == ["RUNNING", "RUNNING"])
        with plane.lock:
            plane.status = "STOP_IN_PROGRESS"  # the user's stop, then Ray's SIGTERM
        driver.request_stop()

    started = time.monotonic()
    plane, _, launcher = run_tuning(job, env, stop)
    assert time.monotonic() - started < 30
    assert plane.final() == ("STOPPED", "stopped by the user", None)
    assert plane.status == "STOPPED"
    assert plane.statuses() == {0: "KILLED", 1: "KILLED"}
    assert stored(env, job["resultKey"])["status"] == "STOPPED"
    for worker in launcher.workers.values():
        process = worker.runner.node.process
        assert process is not None and process.poll() is not None
    assert study_states(env) == ["FAIL", "FAIL"]


def test_a_restarted_driver_fails_what_it_left_and_runs_what_it_drew(env: Path) -> None:
    job = tuning_job(
        env,
        LOSS_SCRIPT,
        [spec("lr", "double", low="0.01", high="0.1")],
        parallel_trial_count=1,
        max_trial_count=4,
    )
    # The first driver drew trials 0, 1 and 2; 0 succeeded, 1 was running, 2 never created.
    earlier = Search(
        job["optunaStorage"]["url"],
        {},
        TUNING_ID,
        job["hyperparameterSpecList"],
        "RANDOM",
        7,
        "minimize",
    )
    drawn = [earlier.suggest() for _ in range(3)]
    earlier.complete(0, 0.05)
    earlier.close()
    job["status"] = "RUNNING"
    job["trials"] = [
        {"trialId": "trial-0", "number": 0, "status": "SUCCEEDED"},
        {"trialId": "trial-1", "number": 1, "status": "RUNNING"},
    ]
    plane, driver, _ = run_tuning(job, env, nothing)
    assert plane.final() == ("COMPLETE", None, "MaxTrialsReached")
    assert plane.statuses() == {0: "SUCCEEDED", 1: "FAILED", 2: "SUCCEEDED", 3: "SUCCEEDED"}
    assert plane.trials[1]["reason"] == "its driver was restarted"
    assert plane.terminal_posts(1) == ["FAILED"]
    assert plane.terminal_posts(0) == []  # settled before: left alone
    assert drawn[2] is not None and plane.trials[2]["params"] == drawn[2].params  # not redrawn
    assert driver.tally.failed == 1 and driver.tally.finished == 4
    assert study_states(env) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]


def test_the_control_plane_away_for_a_while_loses_and_repeats_nothing(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver_module, "TRIAL_POST_SECONDS", 0.05)
    job = tuning_job(
        env,
        LOSS_SCRIPT,
        [spec("lr", "double", low="0.01", high="0.1")],
        parallel_trial_count=2,
        max_trial_count=4,
    )

    def outages(plane: FakeControlPlane, _driver: TuningDriver) -> None:
        for number in (0, 2):
            wait_for(lambda n=number: n in plane.statuses())  # type: ignore[misc]
            plane.down_until = time.monotonic() + 0.7

    plane, _, launcher = run_tuning(job, env, outages)
    assert plane.refused >= 2
    assert plane.final() == ("COMPLETE", None, "MaxTrialsReached")
    assert plane.statuses() == {n: "SUCCEEDED" for n in range(4)}
    assert sorted(launcher.workers) == [0, 1, 2, 3]  # each trial started once
    assert study_states(env) == ["COMPLETE"] * 4  # no suggestion drawn twice or lost
    assert plane.late == []
    assert "undeliveredTrials" not in stored(env, job["resultKey"])


def test_trial_reports_that_never_got_through_are_in_the_result(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver_module, "TRIAL_POST_SECONDS", 0.05)
    monkeypatch.setattr(driver_module, "FINAL_DELIVERY_SECONDS", 0.2)
    job = tuning_job(
        env,
        SLOW_SCRIPT,
        [spec("lr", "double", low="0.01", high="0.1")],
        parallel_trial_count=1,
        max_trial_count=1,
    )

    def away_for_good(plane: FakeControlPlane, _driver: TuningDriver) -> None:
        wait_for(lambda: plane.statuses().get(0) == "RUNNING")
        plane.down_until = float("inf")

    plane, _, _ = run_tuning(job, env, away_for_good)
    assert plane.final() == ("COMPLETE", None, "MaxTrialsReached")
    assert plane.statuses() == {0: "RUNNING"}
    result = stored(env, job["resultKey"])
    assert [t["status"] for t in result["undeliveredTrials"]] == ["SUCCEEDED"]
    assert result["undeliveredTrials"][0]["objectiveValue"] == 0.025


def test_a_trial_over_the_flavor_memory_fails(env: Path) -> None:
    job = tuning_job(
        env,
        "import time\nprint('loss=1', flush=True)\ntime.sleep(60)\n",
        [spec("lr", "double", low="0.01", high="0.1")],
        flavor={"name": "tiny", "vcpus": 1, "ram": 1},  # 1 MiB: no Python fits
        parallel_trial_count=1,
        max_trial_count=3,
        max_failed_trial_count=1,
    )
    plane, _, _ = run_tuning(job, env, nothing)
    status, reason, _ = plane.final()
    assert status == "FAIL_HYPERPARAMETER_TUNING"
    assert plane.statuses() == {0: "FAILED"}
    assert plane.trials[0]["reason"].startswith("out of memory: node0 used ")
    assert reason is not None and "the last: trial 0: out of memory" in reason


def test_the_timeout_covers_the_whole_tuning(env: Path) -> None:
    job = tuning_job(
        env,
        "import time\nprint('loss=1', flush=True)\ntime.sleep(60)\n",
        [spec("lr", "double", low="0.01", high="0.1")],
        timeout_minutes=0.02,  # 1.2 s
    )
    plane, _, _ = run_tuning(job, env, nothing)
    assert plane.final() == (
        "FAIL_HYPERPARAMETER_TUNING",
        "exceeded timeout of 0.02 minutes",
        None,
    )
    assert set(plane.statuses().values()) <= {"KILLED"}


def test_a_warm_start_copies_the_earlier_study(env: Path) -> None:
    job = tuning_job(
        env,
        LOSS_SCRIPT,
        [spec("lr", "double", low="0.01", high="0.1")],
        parallel_trial_count=1,
        max_trial_count=2,
    )
    earlier = Search(
        job["optunaStorage"]["url"],
        {},
        "hpt-0",
        job["hyperparameterSpecList"],
        "RANDOM",
        1,
        "minimize",
    )
    for _ in range(2):
        drawn = earlier.suggest()
        assert drawn is not None
        earlier.complete(drawn.number, 0.001)  # better than any trial of this tuning
    earlier.close()
    job["warmStartStudyName"] = "hpt-0"
    plane, _, _ = run_tuning(job, env, nothing)
    assert plane.final() == ("COMPLETE", None, "MaxTrialsReached")
    # the copied trials come first in the study: this tuning's trials are numbered after them
    assert plane.statuses() == {2: "SUCCEEDED", 3: "SUCCEEDED"}
    assert study_states(env) == ["COMPLETE"] * 4
    best = best_of(plane)
    assert [n for n in (2, 3) if model_folder(env, n).exists()] == [best]  # not a copied one
    said = log_bodies(env, job["logPrefix"] + "driver/")
    assert "[openmaker] warm start: 2 trial(s) copied from hpt-0" in said


def best_of(plane: FakeControlPlane) -> int:
    return min(plane.trials, key=lambda n: (plane.trials[n]["objective"], n))


def test_a_bad_search_space_fails_the_creation(env: Path) -> None:
    job = tuning_job(
        env,
        LOSS_SCRIPT,
        [spec("lr", "double", low="0.01", high="0.1")],  # no step: no grid
        tuning_strategy_name="GRID",
    )
    plane, _, _ = run_tuning(job, env, nothing)
    status, reason, _ = plane.final()
    assert status == "CREATE_FAILED"
    assert reason is not None and "needs hyperparameterStep" in reason
