"""The serving gateway as a real process in front of real pods: stand-in pods (small aiohttp
servers that say who answered) for routing, balancing and readiness, and the real Python
runtime serving an iris model for the end-to-end answers of OIP v1 and v2."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from serving.gateway.routes import RouteError, RouteTable
from serving.tls import ensure_tls
from tests.serving.models import iris_model
from tests.serving.runtime import REPO_ROOT, RuntimeProcess, free_port

pytestmark = pytest.mark.slow

VERSICOLOR = [6.4, 3.2, 4.5, 1.5]


class Process:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, *args],
                cwd=REPO_ROOT,
                env=dict(os.environ),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_http(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.popen.poll() is None, self.log.read_text()
            try:
                requests.get(url, timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError(f"{url} never answered:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[Process] = []
        self.pods: dict[str, str] = {}
        self.port, self.admin_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"

    def pod(self, name: str) -> str:
        port = free_port()
        process = Process(
            ["-m", "tests.serving.echo_pod", str(port), name, str(self.root)],
            self.root / f"{name}.log",
        )
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        process.wait_http(url + "/v2/health/ready")
        self.pods[name] = url
        return url

    def down(self, name: str, is_down: bool = True) -> None:
        flag = self.root / f"{self.pods[name].rsplit(':', 1)[1]}.down"
        if is_down:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    def gateway(self) -> None:
        process = Process(
            [
                "-m",
                "serving.gateway",
                "--port",
                str(self.port),
                "--admin-port",
                str(self.admin_port),
                "--health-interval",
                "0.2",
            ],
            self.root / "gateway.log",
        )
        self.processes.append(process)
        process.wait_http(self.admin + "/routes")

    def routes(self, stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
        reply = requests.put(self.admin + "/routes", json={"stages": stages}, timeout=10)
        assert reply.status_code == 200, reply.text
        found: dict[str, Any] = reply.json()
        return found

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    running = Setup(tmp_path_factory.mktemp("gateway"))
    try:
        for name in ("a1", "a2", "b1"):
            running.pod(name)
        running.gateway()
        yield running
    finally:
        running.stop()


def served_by(setup: Setup, path: str, body: dict[str, Any] | None = None) -> str:
    reply = requests.post(setup.url + path, json=body or {"inputs": []}, timeout=10)
    assert reply.status_code == 200, reply.text
    pod: str = reply.json()["pod"]
    return pod


def test_both_route_forms_reach_the_models_pod_with_the_pods_own_path(setup: Setup) -> None:
    setup.routes({"stg": {"models": {"alpha": [setup.pods["a1"]], "beta": [setup.pods["b1"]]}}})

    prefixed = requests.post(
        setup.url + "/stg/beta/v2/models/beta/infer?x=1",
        json={"inputs": [1]},
        headers={"x-trace": "t-1"},
        timeout=10,
    ).json()
    bare = requests.post(
        setup.url + "/stg/v1/models/alpha:predict", json={"instances": [2]}, timeout=10
    )

    assert prefixed == {
        "pod": "b1",
        "path": "/v2/models/beta/infer",
        "query": "x=1",
        "body": {"inputs": [1]},
        "header": "t-1",
    }
    assert bare.json()["pod"] == "a1" and bare.json()["path"] == "/v1/models/alpha:predict"
    openai = requests.post(
        setup.url + "/stg/v1/chat/completions",
        json={"model": "beta", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    ).json()
    assert openai["pod"] == "b1" and openai["path"] == "/openai/v1/chat/completions"


def test_requests_are_balanced_over_ready_pods_only(setup: Setup) -> None:
    setup.routes({"stg": {"models": {"alpha": [setup.pods["a1"], setup.pods["a2"]]}}})
    seen = {served_by(setup, "/stg/v2/models/alpha/infer") for _ in range(6)}
    assert seen == {"a1", "a2"}

    setup.down("a2")
    time.sleep(0.8)  # a few health rounds (0.2 s)
    try:
        assert {served_by(setup, "/stg/v2/models/alpha/infer") for _ in range(6)} == {"a1"}
        setup.down("a1")
        time.sleep(0.8)
        none_ready = requests.post(setup.url + "/stg/v2/models/alpha/infer", json={}, timeout=10)
        assert none_ready.status_code == 503
        assert "no ready pod" in none_ready.json()["error"]
    finally:
        setup.down("a1", False)
        setup.down("a2", False)
    time.sleep(0.8)
    assert {served_by(setup, "/stg/v2/models/alpha/infer") for _ in range(6)} == {"a1", "a2"}


def test_unknown_stages_and_models_are_404s_and_statuses_pass_through(setup: Setup) -> None:
    setup.routes({"stg": {"models": {"alpha": [setup.pods["a1"]], "beta": [setup.pods["b1"]]}}})
    time.sleep(0.4)

    no_stage = requests.post(setup.url + "/nope/v2/models/alpha/infer", json={}, timeout=10)
    no_model = requests.post(setup.url + "/stg/v2/models/gamma/infer", json={}, timeout=10)
    ambiguous = requests.get(setup.url + "/stg/v2/health/ready", timeout=10)
    passed = requests.post(
        setup.url + "/stg/v2/models/alpha/infer", json={}, headers={"x-status": "422"}, timeout=10
    )

    assert no_stage.status_code == 404 and "no endpoint stage nope" in no_stage.json()["error"]
    assert no_model.status_code == 404
    assert "model gamma is not served by stage stg" in no_model.json()["error"]
    assert ambiguous.status_code == 404 and "alpha, beta" in ambiguous.json()["error"]
    assert passed.status_code == 422 and passed.json()["pod"] == "a1"


def test_a_pod_dropping_the_connection_is_a_502_and_the_gateway_keeps_serving(
    setup: Setup,
) -> None:
    setup.routes({"one": {"models": {"alpha": [setup.pods["a1"]]}}})
    time.sleep(0.4)

    crashed = requests.post(setup.url + "/one/crash", json={}, timeout=10)

    assert crashed.status_code == 502, crashed.text
    assert "did not answer" in crashed.json()["error"]
    time.sleep(0.6)  # back at its next good health check
    assert served_by(setup, "/one/v2/models/alpha/infer") == "a1"


def test_a_route_change_is_whole_and_statistics_count_per_stage(setup: Setup) -> None:
    setup.routes({"old": {"models": {"alpha": [setup.pods["a1"]]}}})
    time.sleep(0.4)
    before = requests.get(setup.admin + "/stats", timeout=10).json().get("old", {"calls": 0})
    for _ in range(3):
        served_by(setup, "/old/v2/models/alpha/infer")
    requests.post(
        setup.url + "/old/v2/models/alpha/infer", json={}, headers={"x-status": "400"}, timeout=10
    )

    table = setup.routes({"new": {"models": {"alpha": [setup.pods["a2"]]}}})

    assert list(table["stages"]) == ["new"]
    gone = requests.post(setup.url + "/old/v2/models/alpha/infer", json={}, timeout=10)
    assert gone.status_code == 404
    assert served_by(setup, "/new/v2/models/alpha/infer") == "a2"  # checked on the PUT
    stats = requests.get(setup.admin + "/stats", timeout=10).json()
    assert stats["old"]["calls"] - before["calls"] == 4
    assert stats["old"]["status4xx"] >= 1 and stats["old"]["latencyP50Ms"] > 0
    bad = requests.put(setup.admin + "/routes", data=b"[1, 2]", timeout=10)
    assert bad.status_code == 400 and "not a routing table" in bad.json()["error"]


def test_the_real_runtime_answers_the_same_through_the_gateway(
    setup: Setup, tmp_path: Path
) -> None:
    model_dir = iris_model(tmp_path / "iris")
    runtime = RuntimeProcess(
        [],
        tmp_path / "runtime.log",
        env={"MODEL_NAME": "iris", "MODEL_DIR": str(model_dir), "FRAMEWORK": "sklearn"},
    )
    try:
        runtime.wait_ready()
        setup.routes({"prod": {"models": {"iris": [runtime.url]}}})
        v1 = {"instances": [VERSICOLOR]}
        v2 = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": VERSICOLOR}]}

        direct = [
            requests.post(f"{runtime.url}/v1/models/iris:predict", json=v1, timeout=10),
            requests.post(f"{runtime.url}/v2/models/iris/infer", json=v2, timeout=10),
        ]
        through = [
            requests.post(f"{setup.url}/prod/v1/models/iris:predict", json=v1, timeout=10),
            requests.post(f"{setup.url}/prod/iris/v2/models/iris/infer", json=v2, timeout=10),
        ]

        assert [r.status_code for r in direct + through] == [200] * 4
        assert through[0].json() == direct[0].json() == {"predictions": [1]}
        assert through[1].json()["outputs"] == direct[1].json()["outputs"]
        wrong = requests.post(
            f"{setup.url}/prod/v2/models/iris/infer",
            json={
                "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]
            },
            timeout=10,
        )
        assert wrong.status_code == 400  # the runtime's own answer, passed through
    finally:
        runtime.stop()


def test_paths_resolve_as_the_serving_contract_says() -> None:
    table = RouteTable()
    table.replace({"stages": {"s": {"models": {"m": ["http://p:1"], "n": ["http://q:1"]}}}})

    assert table.resolve("/s/m/v2/models/m/infer").path == "/v2/models/m/infer"
    assert table.resolve("/s/v2/models/n/ready").pool.model == "n"
    assert table.resolve("/s/m/v2/health/live").path == "/v2/health/live"
    assert table.resolve("/s/v1/models/m/predict").path == "/v1/models/m:predict"
    assert table.resolve("/s/m/v1/models/m:predict").path == "/v1/models/m:predict"
    assert table.resolve("/s/openai/v1/completions", b'{"model": "n"}').pool.model == "n"
    assert table.resolve("/s/m/openai/v1/completions").path == "/openai/v1/completions"
    with pytest.raises(RouteError, match="below model m's prefix"):
        table.resolve("/s/m/v2/models/n/infer")
    with pytest.raises(RouteError, match="name the model"):
        table.resolve("/s/v1/completions", b"not json")
    with pytest.raises(RouteError, match="name a stage"):
        table.resolve("/")


def test_the_gateway_serves_https_with_the_platforms_own_ca(setup: Setup, tmp_path: Path) -> None:
    home = tmp_path / "home"
    files = ensure_tls(home)
    again = ensure_tls(home)
    assert again == files and (home / "tls" / "ca.pem") == files.ca
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "tls" / "ca-key.pem").stat().st_mode) == 0o600
    port, admin_port = free_port(), free_port()
    secure = Process(
        [
            "-m",
            "serving.gateway",
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
            "--cert",
            str(files.cert),
            "--key",
            str(files.key),
            "--health-interval",
            "0.2",
        ],
        tmp_path / "https-gateway.log",
    )
    try:
        secure.wait_http(f"http://127.0.0.1:{admin_port}/routes")
        routes = {"stages": {"tls": {"models": {"alpha": [setup.pods["a1"]]}}}}
        requests.put(f"http://127.0.0.1:{admin_port}/routes", json=routes, timeout=10)
        url = f"https://localhost:{port}/tls/v2/models/alpha/infer"

        verified = requests.post(url, json={}, verify=str(files.ca), timeout=10)
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(url, json={}, verify=True, timeout=10)  # the system's CAs do not know it

        assert verified.status_code == 200 and verified.json()["pod"] == "a1"
    finally:
        secure.stop()


def test_a_pod_known_ready_is_ready_under_a_key_that_newly_routes_to_it() -> None:
    table = RouteTable()
    table.replace({"stages": {"stage-b": {"models": {"m": ["http://new:1"]}}}})
    table.stages["stage-b"].pools["m"].ready.add("http://new:1")  # its health check passed

    table.replace(  # the default-stage switch: the endpoint's key now routes to that pod
        {
            "stages": {
                "stage-b": {"models": {"m": ["http://new:1"]}},
                "ep": {"models": {"m": ["http://new:1"]}},
            }
        }
    )

    assert table.resolve("/ep/v2/models/m/infer").pool.pick() == "http://new:1"
    table.replace({"stages": {"other": {"models": {"m": ["http://other:1"]}}}})
    assert table.ready == set()  # a pod no longer routed to is forgotten


def test_a_vllm_pool_gets_the_openai_routes_at_its_own_root() -> None:
    table = RouteTable()
    vllm = {"backends": ["http://g:1"], "healthPath": "/health", "openaiRoot": "/v1"}
    table.replace({"stages": {"s": {"models": {"gen": vllm, "m": ["http://p:1"]}}}})

    chat = table.resolve("/s/openai/v1/chat/completions", b'{"model": "gen"}')
    assert (chat.pool.model, chat.path) == ("gen", "/v1/chat/completions")
    assert table.resolve("/s/gen/v1/completions").path == "/v1/completions"  # the SDK's path
    assert table.resolve("/s/gen/openai/v1/completions").path == "/v1/completions"
    assert table.resolve("/s/m/openai/v1/completions").path == "/openai/v1/completions"
    assert chat.pool.health_path == "/health"
    assert table.as_spec()["stages"]["s"]["models"]["gen"]["openaiRoot"] == "/v1"


def test_a_model_s_resource_path_infers_by_the_body_s_protocol() -> None:
    table = RouteTable()
    iris = {"backends": ["http://p:1"], "resourcePath": "/inference"}
    table.replace({"stages": {"s": {"models": {"iris": iris, "other": ["http://q:1"]}}}})

    v1 = table.resolve("/s/inference", b'{"instances": [[1, 2, 3, 4]]}')
    assert (v1.pool.model, v1.path) == ("iris", "/v1/models/iris:predict")
    assert table.resolve("/s/inference/", b'{"inputs": []}').path == "/v2/models/iris/infer"
    assert table.resolve("/s/inference").path == "/v2/models/iris"  # a GET: its metadata
    with pytest.raises(RouteError, match='"instances" \\(OIP v1\\) or "inputs"') as refused:
        table.resolve("/s/inference", b"[1, 2]")
    assert refused.value.status == 400
    assert table.resolve("/s/v2/models/other/infer").pool.model == "other"  # others as before
