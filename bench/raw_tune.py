"""The tuning script a user of bare Ray and Optuna writes: the raw side of bench/tuning.py.

``python bench/raw_tune.py --address GCS --storage URL --study NAME --script OBJECTIVE
--trials 40 --parallel 2``: joins the Ray cluster at ``GCS``, creates the study on the RDB
storage ``URL`` (``RandomSampler(seed)``, minimize ``loss``, ``x`` uniform in
[``--low``, ``--high``]), and runs the objective script (``--x`` value, prints ``loss=``) as
Ray tasks (``num_cpus=1``), up to ``--parallel`` at a time, telling the study as each one
ends, until ``--trials`` trials. It imports only what such a script needs (Optuna, Ray).

Its last stdout line is JSON: its marks (``imported``, ``initialized``, ``study``, ``end``,
Unix seconds) and each trial's ``number``, ``value``, ``asked``, ``started``, ``ended``
(the task's own), ``told``. A trial that fails ends the script with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import time
from typing import Any

import optuna
import ray
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import RandomSampler
from optuna.storages import RDBStorage
from optuna.trial import TrialState

IMPORTED = time.time()


def objective(python: str, script: str, x: float) -> dict[str, Any]:
    """One trial, in a Ray task: the objective script as a process, its loss and times."""
    started = time.time()
    done = subprocess.run(
        [python, script, "--x", repr(x)],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    ended = time.time()
    found = re.findall(r"loss=([-+]?[0-9.]+(?:[eE][-+]?\d+)?)", done.stdout)
    return {
        "loss": float(found[-1]) if found and done.returncode == 0 else None,
        "code": done.returncode,
        "started": started,
        "ended": ended,
        "stderr": done.stderr[-1000:],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--script", required=True)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--low", type=float, default=0.0)
    parser.add_argument("--high", type=float, default=10.0)
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ray.init(address=args.address, logging_level=logging.WARNING, log_to_driver=False)
    initialized = time.time()
    task: Any = ray.remote(num_cpus=1)(objective)
    begun = time.time()
    storage = RDBStorage(args.storage, engine_kwargs={"connect_args": {"timeout": 30.0}})
    study = optuna.create_study(
        storage=storage,
        sampler=RandomSampler(seed=args.seed),
        study_name=args.study,
        direction="minimize",
    )
    space: dict[str, BaseDistribution] = {"x": FloatDistribution(args.low, args.high)}
    in_flight: dict[Any, tuple[optuna.Trial, float]] = {}
    asked = 0
    rows: list[dict[str, Any]] = []
    while len(rows) < args.trials:
        while asked < args.trials and len(in_flight) < args.parallel:
            trial = study.ask(space)
            ref = task.remote(args.python, args.script, trial.params["x"])
            in_flight[ref] = (trial, time.time())
            asked += 1
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in ready:
            trial, asked_at = in_flight.pop(ref)
            result = ray.get(ref)
            if result["loss"] is None:
                study.tell(trial, state=TrialState.FAIL)
                print(f"trial {trial.number} exited {result['code']}: {result['stderr']}")
                return 1
            study.tell(trial, result["loss"])
            rows.append(
                {
                    "number": trial.number,
                    "value": result["loss"],
                    "asked": asked_at,
                    "started": result["started"],
                    "ended": result["ended"],
                    "told": time.time(),
                }
            )
    end = time.time()
    storage.engine.dispose()
    marks = {"imported": IMPORTED, "initialized": initialized, "study": begun, "end": end}
    print(json.dumps({"marks": marks, "trials": rows}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
