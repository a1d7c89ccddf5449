"""Gateway overhead: OIP v2 infer through the serving gateway against straight to the pod.

One real Python runtime pod (``python -m serving.runtimes.python``, the kserve ModelServer)
serves a scikit-learn iris model (a logistic regression trained here, ``model.joblib``);
one ``python -m serving.gateway`` routes stage ``bench`` to it. For each concurrency (1 and
8 client threads, each with its own kept-alive ``requests.Session``) the bench sends
``--requests`` OIP v2 infer requests straight to the pod, then the same through the gateway
(``/bench/v2/models/iris/infer``), alternating ``--rounds`` times, after a warm-up of each.

It prints per concurrency: p50 and p99 latency of each path, what the gateway adds (p50 and
p99 differences), the throughput of each and the gateway's share of the direct one, and the
goals with PASS/MISS (it reports, it never asserts): the gateway adds <= 1 ms at p50 and
<= 3 ms at p99, and keeps >= 80 % of the direct throughput. TorchServe is not measured yet.

Usage: ``.venv/bin/python bench/serving.py [--requests 2000] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from dispatch import PYTHON, ROOT, free_port, machine_description, percentile
from mdtable import markdown

VERSICOLOR = [6.4, 3.2, 4.5, 1.5]
BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": VERSICOLOR}]}
).encode()
GOAL_P50_MS, GOAL_P99_MS, GOAL_THROUGHPUT = 1.0, 3.0, 0.8


def iris_model(model_dir: Path) -> Path:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(features, labels), model_dir / "model.joblib")
    return model_dir


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


def wait_ok(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="per path, round, concurrency")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"OpenMaker serving bench on {machine_description()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="om-serving-") as work_dir:
        work = Path(work_dir)
        model_dir = iris_model(work / "iris")
        pod_port, gateway_port, admin_port = free_port(), free_port(), free_port()
        pod_log, gateway_log = work / "pod.log", work / "gateway.log"
        pod = start(
            ["-m", "serving.runtimes.python", "--http_port", str(pod_port)],
            pod_log,
            {"MODEL_NAME": "iris", "MODEL_DIR": str(model_dir), "FRAMEWORK": "sklearn"},
        )
        gateway = start(
            [
                "-m",
                "serving.gateway",
                "--port",
                str(gateway_port),
                "--admin-port",
                str(admin_port),
            ],
            gateway_log,
        )
        try:
            pod_url = f"http://127.0.0.1:{pod_port}"
            wait_ok(pod_url + "/v2/health/ready", pod, pod_log)
            wait_ok(f"http://127.0.0.1:{admin_port}/routes", gateway, gateway_log)
            routes = {"stages": {"bench": {"models": {"iris": [pod_url]}}}}
            requests.put(f"http://127.0.0.1:{admin_port}/routes", json=routes, timeout=10)
            direct = f"{pod_url}/v2/models/iris/infer"
            through = f"http://127.0.0.1:{gateway_port}/bench/v2/models/iris/infer"
            rows, goals = [], []
            for concurrency in (1, 8):
                drive(direct, 200, concurrency)  # warm-up
                drive(through, 200, concurrency)
                runs: dict[str, list[Run]] = {"direct": [], "gateway": []}
                for _ in range(args.rounds):
                    runs["direct"].append(drive(direct, args.requests, concurrency))
                    runs["gateway"].append(drive(through, args.requests, concurrency))
                d, g = merge(runs["direct"]), merge(runs["gateway"])
                p50 = [percentile(r.latencies, 0.5) * 1000 for r in (d, g)]
                p99 = [percentile(r.latencies, 0.99) * 1000 for r in (d, g)]
                share = g.throughput / d.throughput
                rows.append(
                    (
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
                )
                goals += [
                    (f"c={concurrency}: gateway adds <= 1 ms p50", p50[1] - p50[0] <= GOAL_P50_MS),
                    (f"c={concurrency}: gateway adds <= 3 ms p99", p99[1] - p99[0] <= GOAL_P99_MS),
                    (f"c={concurrency}: throughput >= 80 % of direct", share >= GOAL_THROUGHPUT),
                ]
                print(f"  concurrency {concurrency} done", flush=True)
        finally:
            for process in (gateway, pod):
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
    head = (
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
    total = args.requests * args.rounds
    print(f"\n### OIP v2 infer, iris on the Python runtime, {total} requests per cell\n")
    print(markdown(head, rows))
    print("\nGoals")
    for label, ok in goals:
        print(f"  {'PASS' if ok else 'MISS'}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
