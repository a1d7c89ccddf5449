"""Gateway overhead: OIP v2 infer through the serving gateway against straight to the pod.

The iris model behind each of the two runtimes, one runtime at a time so they never share
the CPU:

* **python**: ``python -m serving.runtimes.python`` (the KServe ModelServer) serving a
  scikit-learn logistic regression trained here (``model.joblib``);
* **torchserve**: ``python -m serving.runtimes.torchserve`` (the OIP front before a real
  TorchServe, Java and one Python worker) serving a small PyTorch net trained here
  (``iris.pt``) with the ``model.py`` and custom ``handler.py`` the TorchServe tests use
  (``tests/serving/torchserve_iris``), as a user hands them over: weights + model.py +
  handler.py, no archive.

One ``python -m serving.gateway`` routes stage ``bench`` to the pod being measured. For each
concurrency (1 and 8 client threads, each with its own kept-alive ``requests.Session``) the
bench sends ``--requests`` OIP v2 infer requests straight to the pod, then the same through
the gateway (``/bench/v2/models/iris/infer``), alternating ``--rounds`` times, after a
warm-up of each. Both runtimes go through the same code; only the pod differs.

It prints one table, a row per runtime and concurrency: p50 and p99 latency of each path,
what the gateway adds (p50 and p99 differences), the throughput of each and the gateway's
share of the direct one; then the goals with PASS/MISS (it reports, it never asserts): the
gateway adds <= 1 ms at p50 and <= 3 ms at p99, and keeps >= 80 % of the direct throughput.

Usage: ``.venv/bin/python bench/serving.py [--runtime {python,torchserve,both}]
[--requests 2000] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from dispatch import PYTHON, ROOT, free_port, load_average, machine_description, percentile
from mdtable import markdown

VERSICOLOR = [6.4, 3.2, 4.5, 1.5]
BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": VERSICOLOR}]}
).encode()
GOAL_P50_MS, GOAL_P99_MS, GOAL_THROUGHPUT = 1.0, 3.0, 0.8
CONCURRENCIES = (1, 8)
WARM_UP = 200
# The iris model's model.py and handler.py, the files the TorchServe tests hand the runtime.
TORCHSERVE_IRIS = ROOT / "tests" / "serving" / "torchserve_iris"


def sklearn_iris(model_dir: Path) -> Path:
    """``model.joblib``: a logistic regression on the iris data."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(features, labels), model_dir / "model.joblib")
    return model_dir


def torch_iris(model_dir: Path) -> Path:
    """``iris.pt`` (IrisNet trained 300 full-batch Adam steps) + ``model.py`` + ``handler.py``,
    as ``tests/serving/torchserve_fixtures.iris_weights_dir`` builds it."""
    import torch
    from sklearn.datasets import load_iris

    spec = importlib.util.spec_from_file_location("iris_model", TORCHSERVE_IRIS / "model.py")
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {TORCHSERVE_IRIS / 'model.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    features, labels = load_iris(return_X_y=True)
    inputs = torch.tensor(features, dtype=torch.float32)
    targets = torch.tensor(labels)
    model = module.IrisNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), model_dir / "iris.pt")
    for name in ("model.py", "handler.py"):
        shutil.copy(TORCHSERVE_IRIS / name, model_dir / name)
    return model_dir


@dataclass(frozen=True)
class Runtime:
    """How to build the iris model for one runtime and start its pod."""

    name: str  # the --runtime choice and the table's first column
    title: str
    module: str
    port_flag: str
    env: dict[str, str]
    build: Callable[[Path], Path]
    stop_timeout_s: float = 15.0


RUNTIMES = {
    "python": Runtime(
        "python",
        "Python runtime (KServe ModelServer, scikit-learn)",
        "serving.runtimes.python",
        "--http_port",
        {"FRAMEWORK": "sklearn"},
        sklearn_iris,
    ),
    "torchserve": Runtime(
        "torchserve",
        "TorchServe runtime (OIP front + TorchServe, PyTorch, 1 worker)",
        "serving.runtimes.torchserve",
        "--http-port",
        {},
        torch_iris,
        stop_timeout_s=45.0,  # it stops TorchServe (up to 20 s) before it exits
    ),
}


def start(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [PYTHON, *args],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_ok(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} never answered 200:\n{log.read_text()[-3000:]}")


@dataclass
class Run:
    latencies: list[float]
    wall_s: float

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall_s


def drive(url: str, total: int, concurrency: int) -> Run:
    """``total`` POSTs of the infer body to ``url`` from ``concurrency`` threads."""
    per_thread = total // concurrency
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures: list[str] = []
    barrier = threading.Barrier(concurrency + 1)

    def worker(index: int) -> None:
        session = requests.Session()
        headers = {"content-type": "application/json"}
        barrier.wait()
        for _ in range(per_thread):
            t0 = time.perf_counter()
            reply = session.post(url, data=BODY, headers=headers, timeout=30)
            latencies[index].append(time.perf_counter() - t0)
            if reply.status_code != 200:
                failures.append(f"{reply.status_code} {reply.text[:200]}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"{len(failures)} failed requests to {url}: {failures[0]}")
    return Run([x for per in latencies for x in per], wall)


def merge(runs: list[Run]) -> Run:
    return Run([x for r in runs for x in r.latencies], sum(r.wall_s for r in runs))


Goal = tuple[str, bool]


def compare(
    runtime: str, direct: str, through: str, concurrency: int, requests_: int, rounds: int
) -> tuple[tuple[str, ...], list[Goal]]:
    """One table row and its goals: ``direct`` against ``through`` at one concurrency."""
    drive(direct, WARM_UP, concurrency)
    drive(through, WARM_UP, concurrency)
    runs: dict[str, list[Run]] = {"direct": [], "gateway": []}
    for _ in range(rounds):
        runs["direct"].append(drive(direct, requests_, concurrency))
        runs["gateway"].append(drive(through, requests_, concurrency))
    d, g = merge(runs["direct"]), merge(runs["gateway"])
    p50 = [percentile(r.latencies, 0.5) * 1000 for r in (d, g)]
    p99 = [percentile(r.latencies, 0.99) * 1000 for r in (d, g)]
    share = g.throughput / d.throughput
    row = (
        runtime,
        str(concurrency),
        f"{p50[0]:.2f}",
        f"{p50[1]:.2f}",
        f"{p50[1] - p50[0]:+.2f}",
        f"{p99[0]:.2f}",
        f"{p99[1]:.2f}",
        f"{p99[1] - p99[0]:+.2f}",
        f"{d.throughput:.0f}",
        f"{g.throughput:.0f}",
        f"{share * 100:.0f} %",
    )
    where = f"{runtime} c={concurrency}"
    goals = [
        (f"{where}: gateway adds <= 1 ms p50", p50[1] - p50[0] <= GOAL_P50_MS),
        (f"{where}: gateway adds <= 3 ms p99", p99[1] - p99[0] <= GOAL_P99_MS),
        (f"{where}: throughput >= 80 % of direct", share >= GOAL_THROUGHPUT),
    ]
    return row, goals


def bench_runtime(
    runtime: Runtime, work: Path, admin_port: int, gateway_port: int, requests_: int, rounds: int
) -> tuple[list[tuple[str, ...]], list[Goal]]:
    """Build the model, start the pod, route stage ``bench`` to it, compare, stop the pod."""
    t0 = time.monotonic()
    model_dir = runtime.build(work / runtime.name / "model")
    pod_port, log = free_port(), work / runtime.name / "pod.log"
    env = {"MODEL_NAME": "iris", "MODEL_DIR": str(model_dir), **runtime.env}
    pod = start(["-m", runtime.module, runtime.port_flag, str(pod_port)], log, env)
    rows, goals = [], []
    try:
        pod_url = f"http://127.0.0.1:{pod_port}"
        wait_ok(pod_url + "/v2/health/ready", pod, log)
        ready_s = time.monotonic() - t0
        print(f"  {runtime.name}: model built and pod ready in {ready_s:.1f} s", flush=True)
        routes = {"stages": {"bench": {"models": {"iris": [pod_url]}}}}
        reply = requests.put(f"http://127.0.0.1:{admin_port}/routes", json=routes, timeout=10)
        reply.raise_for_status()
        direct = f"{pod_url}/v2/models/iris/infer"
        through = f"http://127.0.0.1:{gateway_port}/bench/v2/models/iris/infer"
        for concurrency in CONCURRENCIES:
            t1 = time.monotonic()
            row, row_goals = compare(runtime.name, direct, through, concurrency, requests_, rounds)
            rows.append(row)
            goals += row_goals
            elapsed = time.monotonic() - t1
            done = f"  {runtime.name}: concurrency {concurrency} done in {elapsed:.1f} s"
            print(done, flush=True)
    finally:
        stop(pod, runtime.stop_timeout_s)
    return rows, goals


HEAD = (
    "runtime",
    "concurrency",
    "direct p50 ms",
    "gateway p50 ms",
    "added p50",
    "direct p99 ms",
    "gateway p99 ms",
    "added p99",
    "direct req/s",
    "gateway req/s",
    "gateway / direct",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runtime", choices=("python", "torchserve", "both"), default="both")
    parser.add_argument("--requests", type=int, default=2000, help="per path, round, concurrency")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    chosen = list(RUNTIMES.values()) if args.runtime == "both" else [RUNTIMES[args.runtime]]
    print(f"OpenMaker serving bench on {machine_description()}", flush=True)
    print(f"  load average before: {load_average()}", flush=True)
    started = time.monotonic()
    rows: list[tuple[str, ...]] = []
    goals: list[Goal] = []
    with tempfile.TemporaryDirectory(prefix="om-serving-") as work_dir:
        work = Path(work_dir)
        gateway_port, admin_port = free_port(), free_port()
        gateway_log = work / "gateway.log"
        gateway_args = ["--port", str(gateway_port), "--admin-port", str(admin_port)]
        gateway = start(["-m", "serving.gateway", *gateway_args], gateway_log)
        try:
            wait_ok(f"http://127.0.0.1:{admin_port}/routes", gateway, gateway_log)
            for runtime in chosen:
                (work / runtime.name).mkdir()
                runtime_rows, runtime_goals = bench_runtime(
                    runtime, work, admin_port, gateway_port, args.requests, args.rounds
                )
                rows += runtime_rows
                goals += runtime_goals
        finally:
            stop(gateway)
    total = args.requests * args.rounds
    print(f"\n### OIP v2 infer, iris, {total} requests per cell")
    for runtime in chosen:
        print(f"- {runtime.name}: {runtime.title}")
    print()
    print(markdown(HEAD, rows))
    print("\nGoals")
    for label, ok in goals:
        print(f"  {'PASS' if ok else 'MISS'}  {label}")
    elapsed = time.monotonic() - started
    print(f"\n(whole run {elapsed:.0f} s; load average after: {load_average()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
