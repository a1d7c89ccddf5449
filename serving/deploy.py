"""Deploying a stage's models as pods on Ray, and taking them down.

A deployment names, per model, its artifact, framework, parameters, pod count and each
pod's resources. Every pod is a detached, named Ray actor (:class:`PodHost`, namespace
``openmaker-serving``, name ``{stage key}.{model}.{index}``) holding the resources Ray
placed it with: it copies the artifact to its node, starts the runtime for the framework
under a :class:`~serving.pods.PodSupervisor` (restarted on a crash) and answers with its
address. ``deploy`` waits until every pod is ready (or one failed) and returns the routes
the gateway takes (``{model: [pod URL, ...]}``); ``teardown`` ends a stage's pods.

``python -m serving.deploy stage ID`` is the Ray job the control plane submits: it asks
the internal API for the stage's deployment, deploys it and reports ACTIVE with the routes
(or CREATE_FAILED with the reason). ``python -m serving.deploy deploy --spec FILE`` prints
the routes as JSON; ``python -m serving.deploy teardown --stage KEY`` ends that stage's pods.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from chalicelib.domain.model import screaming_snake, served_by_vllm, serving_paths
from chalicelib.hfhub import fetch_model
from chalicelib.objectstore import platform_store
from runners.control import ControlPlane
from runners.logsink import LogSink
from runners.nodejob import free_port, openmaker_home
from serving.pods import PodSupervisor

NAMESPACE = "openmaker-serving"
READY_TIMEOUT_SECONDS = 300.0
PYTHON_FRAMEWORKS = {
    "SKLEARN": "sklearn",
    "HUGGING_FACE": "huggingface",
    "TENSORFLOW": "tensorflow",
}
# vLLM (``vllm serve``, its OpenAI server) serves a HUGGING_FACE text_generation model on a
# pod with GPUs; ``OPENMAKER_VLLM_BIN`` names its executable, else ``vllm`` on PATH.
VLLM_BIN_VARIABLE = "OPENMAKER_VLLM_BIN"
# Model parameters that become ``vllm serve`` options (vLLM reads none of these variables).
VLLM_VALUE_OPTIONS = (
    "MAX_MODEL_LEN",
    "DTYPE",
    "GPU_MEMORY_UTILIZATION",
    "MAX_NUM_SEQS",
    "MAX_NUM_BATCHED_TOKENS",
    "QUANTIZATION",
    "KV_CACHE_DTYPE",
    "SEED",
)
VLLM_SWITCHES = ("ENFORCE_EAGER",)  # given when the parameter is true/1/yes/on


class DeployError(Exception):
    """A pod that could not be made ready: the reason the stage fails with."""


@dataclass
class ModelSpec:
    name: str
    framework: str  # SKLEARN, HUGGING_FACE, TENSORFLOW, PYTORCH
    artifact_uri: str
    pods: int = 1
    cpus: float = 1.0
    memory_bytes: int = 2 * 2**30
    gpus: float = 0.0
    parameters: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelSpec:
        return cls(
            name=str(raw["name"]),
            framework=str(raw["framework"]).upper(),
            artifact_uri=str(raw["artifactUri"]),
            pods=int(raw.get("pods", 1)),
            cpus=float(raw.get("cpus", 1.0)),
            memory_bytes=int(raw.get("memoryBytes", 2 * 2**30)),
            gpus=float(raw.get("gpus", 0.0)),
            parameters=[(str(k), str(v)) for k, v in raw.get("parameters", [])],
        )


def runtime_command(
    spec: ModelSpec, model_dir: Path, port: int, *, locate: bool = True
) -> tuple[list[str], dict[str, str]]:
    """The runtime a framework is served with, and the model's parameters as
    SCREAMING_SNAKE_CASE variables (DESIGN §5; the Python runtime reads its options from
    them and refuses arguments it does not know). ``locate=False`` leaves finding the vllm
    executable to the pod's node (the deploy driver may run where no GPU is)."""
    env = {screaming_snake(name): value for name, value in spec.parameters}
    if serves_with_vllm(spec):
        return vllm_command(spec, model_dir, port, locate), {**env, "HF_HUB_OFFLINE": "1"}
    if spec.framework in PYTHON_FRAMEWORKS:
        env.update(
            {
                "MODEL_NAME": spec.name,
                "MODEL_DIR": str(model_dir),
                "FRAMEWORK": PYTHON_FRAMEWORKS[spec.framework],
            }
        )
        argv = [sys.executable, "-m", "serving.runtimes.python", "--http_port", str(port)]
        return argv, env
    if spec.framework == "PYTORCH":  # TorchServe (Java 17) behind its OIP front
        env.update({"MODEL_NAME": spec.name, "MODEL_DIR": str(model_dir)})
        argv = [sys.executable, "-m", "serving.runtimes.torchserve", "--http-port", str(port)]
        argv += ["--host", "0.0.0.0"]  # the gateway may run on another node (its OIP front;
        # TorchServe's own inference and management APIs stay on loopback)
        return argv, env
    raise DeployError(f"model {spec.name}: no runtime here serves {spec.framework} yet")


def serves_with_vllm(spec: ModelSpec) -> bool:
    """A HUGGING_FACE text_generation model on a pod with GPUs (the control plane applies
    the same rule to tell the gateway the pod's paths)."""
    return served_by_vllm(spec.framework, spec.parameters, spec.gpus)


def health_path_for(spec: ModelSpec) -> str:
    """The route that answers 200 once the model's runtime is ready."""
    return serving_paths(serves_with_vllm(spec))["healthPath"]


def vllm_command(spec: ModelSpec, model_dir: Path, port: int, locate: bool = True) -> list[str]:
    """``vllm serve`` on every interface (the gateway runs on another node), the model under
    its own name, safetensors weights only, options from the model's parameters."""
    argv = [vllm_executable() if locate else "vllm", "serve", str(model_dir)]
    argv += ["--host", "0.0.0.0", "--port", str(port), "--served-model-name", spec.name]
    argv += ["--load-format", "safetensors"]
    if int(spec.gpus) > 1:
        argv.append(f"--tensor-parallel-size={int(spec.gpus)}")
    given = {screaming_snake(name): value for name, value in spec.parameters}
    for name in VLLM_VALUE_OPTIONS:  # --name=value: a value is never read as an option
        if given.get(name):
            argv.append(f"--{name.lower().replace('_', '-')}={given[name]}")
    for name in VLLM_SWITCHES:
        if given.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            argv.append(f"--{name.lower().replace('_', '-')}")
    return argv


def vllm_executable() -> str:
    """``OPENMAKER_VLLM_BIN``, else ``vllm`` on PATH or beside this Python."""
    configured = os.environ.get(VLLM_BIN_VARIABLE)
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise DeployError(
                f"vLLM is not installed on this node: {VLLM_BIN_VARIABLE}={configured[:200]} "
                "is not an executable file"
            )
        return found
    search = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    found = shutil.which("vllm", path=search)
    if found is None:
        raise DeployError(
            "vLLM is not installed on this node: a GPU text_generation model needs it; "
            f"set {VLLM_BIN_VARIABLE}"
        )
    return found


class PodHost:
    """One pod: the artifact on this node, the runtime supervised on a free port."""

    def __init__(self, stage: str, spec: dict[str, Any], index: int) -> None:
        self.spec = ModelSpec.from_dict(spec)
        self.name = f"{stage}.{self.spec.name}.{index}"
        self.folder = openmaker_home() / "work" / "pods" / self.name
        self.sink = stage_log_sink(stage, spec)
        self.source = f"{self.spec.name}.{index}"
        self.supervisor: PodSupervisor | None = None
        self.problem: str | None = None

    def start(self) -> str | None:
        """Copy the artifact and start the runtime; why it cannot start, or None."""
        try:
            shutil.rmtree(self.folder, ignore_errors=True)
            model_dir = self.folder / "model"
            model_dir.mkdir(parents=True)
            fetch_model(self.spec.artifact_uri, model_dir, self.spec.parameters)
            port = free_port()
            argv, env = runtime_command(self.spec, model_dir, port)
            self.supervisor = PodSupervisor(
                argv,
                port=port,
                env={**os.environ, **env},
                cwd=_repo_root(),
                sink=self.sink,
                source=self.source,
                health_path=health_path_for(self.spec),
            )
            self.supervisor.start()
        except Exception as exc:  # noqa: BLE001 - the stage fails with the reason
            self.problem = f"pod {self.name}: {type(exc).__name__}: {exc}"[:2000]
        return self.problem

    def address(self) -> str:
        assert self.supervisor is not None
        return f"http://{ray.util.get_node_ip_address()}:{self.supervisor.port}"

    def status(self) -> dict[str, Any]:
        if self.supervisor is None:
            return {"ready": False, "problem": self.problem}
        return {**self.supervisor.status(), "problem": self.problem}

    def usage(self) -> dict[str, float]:
        """CPU cores and memory the runtime uses (the pod autoscaler's metrics)."""
        if self.supervisor is None:
            return {"cpuCores": 0.0, "memoryBytes": 0.0}
        return self.supervisor.usage()

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        self.sink.close()
        shutil.rmtree(self.folder, ignore_errors=True)


# threaded: status answers during a start
PodActor = ray.remote(max_concurrency=4)(PodHost)  # type: ignore[call-overload]


def pod_name(stage: str, model: str, index: int) -> str:
    return f"{stage}.{model}.{index}"


def pod_actor(stage: str, raw: dict[str, Any], index: int) -> Any:
    """The pod actor of ``raw``'s model at ``index`` (made, or the one already there),
    holding the resources of one pod."""
    spec = ModelSpec.from_dict(raw)
    return PodActor.options(  # type: ignore[attr-defined]
        name=pod_name(stage, spec.name, index),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=spec.cpus,
        num_gpus=spec.gpus,
        memory=spec.memory_bytes,
    ).remote(stage, raw, index)


def end_pod(stage: str, model: str, index: int) -> None:
    """Stop one pod's runtime and end its actor (nothing when it is gone already)."""
    try:
        actor = ray.get_actor(pod_name(stage, model, index), namespace=NAMESPACE)
    except ValueError:
        return
    _end(actor)


def _end(actor: Any) -> None:
    try:
        ray.get(actor.stop.remote(), timeout=30)
    except Exception:  # noqa: BLE001 - the kill below ends it anyway
        time.sleep(0)
    ray.kill(actor, no_restart=True)


def stage_log_sink(stage: str, raw: dict[str, Any]) -> LogSink:
    """The stage's log (``logPrefix`` of the deployment; a bare spec logs under the stage)."""
    return LogSink(platform_store(), str(raw.get("logPrefix") or f"logs/inference/-/{stage}/"))


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def deploy(
    stage: str, models: list[dict[str, Any]], timeout: float = READY_TIMEOUT_SECONDS
) -> dict[str, list[str]]:
    """Start every pod of the stage and wait until all are ready; the gateway's routes."""
    pods: list[tuple[str, Any]] = []
    for raw in models:
        spec = ModelSpec.from_dict(raw)
        runtime_command(spec, Path("."), 0, locate=False)  # an unserved framework: no pod
        for index in range(spec.pods):
            pods.append((spec.name, pod_actor(stage, raw, index)))
    problems = ray.get([actor.start.remote() for _, actor in pods], timeout=timeout)
    failed = [p for p in problems if p]
    if failed:
        teardown(stage)
        raise DeployError(failed[0])
    deadline = time.monotonic() + timeout
    pending = list(pods)
    while pending:
        statuses = ray.get([actor.status.remote() for _, actor in pending], timeout=30)
        pending = [
            pod for pod, status in zip(pending, statuses, strict=True) if not status["ready"]
        ]
        if pending and time.monotonic() > deadline:
            teardown(stage)
            raise DeployError(f"{len(pending)} pod(s) not ready after {timeout:.0f} s")
        if pending:
            time.sleep(0.5)
    routes: dict[str, list[str]] = {}
    for model, actor in pods:
        routes.setdefault(model, []).append(ray.get(actor.address.remote(), timeout=30))
    return routes


def controller_name(stage: str) -> str:
    return f"{stage}.controller"


def start_controller(
    stage: str, models: list[dict[str, Any]], nodes: dict[str, Any] | None = None
) -> None:
    """Leave the stage's controller behind (its pod watch and pod autoscaler)."""
    from serving.controller import ControllerActor

    actor = ControllerActor.options(  # type: ignore[attr-defined]
        name=controller_name(stage),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
    ).remote(stage, models, nodes=nodes)
    ray.get(actor.state.remote(), timeout=60)  # made and watching


def stage_pods(stage: str) -> list[str]:
    return [
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == NAMESPACE and entry["name"].startswith(f"{stage}.")
    ]


def teardown(stage: str) -> int:
    """End every pod of the stage (its runtime stopped first); how many there were."""
    names = stage_pods(stage)
    controller = controller_name(stage)
    for name in sorted(names, key=lambda n: n != controller):  # the controller first
        try:
            actor = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            continue
        _end(actor)
    return len([name for name in names if name != controller])


def deploy_stage(stage_id: str) -> int:
    """The control plane's deploy job of one stage: deploy what it says, report the end."""
    control = ControlPlane("endpoint-stage", stage_id)
    plan: dict[str, Any] = control._call("GET", "deployment")["deployment"]
    again = plan["status"] == "DEPLOY_IN_PROGRESS"  # the tick found its pods gone
    if plan["status"] not in ("CREATE_REQUESTED", "CREATE_IN_PROGRESS") and not again:
        print(f"stage {stage_id} is {plan['status']}; nothing to deploy", flush=True)
        return 0
    if again:
        teardown(str(plan["stage"]))  # what is left of the lost deployment
    else:
        control._call("POST", "status", {"status": "CREATE_IN_PROGRESS"})
    try:
        routes = deploy(str(plan["stage"]), list(plan["models"]))
    except Exception as exc:  # noqa: BLE001 - any failure ends the stage with its reason
        reason = str(exc) if isinstance(exc, DeployError) else f"{type(exc).__name__}: {exc}"
        failed = "DEPLOY_FAILED" if again else "CREATE_FAILED"
        control._call("POST", "status", {"status": failed, "reason": reason[:4000]})
        print(json.dumps({"error": reason}), flush=True)
        return 1
    control._call("POST", "status", {"status": "ACTIVE", "routes": routes})
    start_controller(str(plan["stage"]), list(plan["models"]), plan.get("nodes"))
    print(json.dumps({"routes": routes}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.deploy")
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("stage")
    one.add_argument("stage_id")
    up = commands.add_parser("deploy")
    up.add_argument("--spec", type=Path, required=True, help='{"stage": KEY, "models": [...]}')
    down = commands.add_parser("teardown")
    down.add_argument("--stage", required=True)
    down.add_argument("--grace", type=float, default=0.0, help="seconds to wait first")
    args = parser.parse_args(argv)
    ray.init(logging_level=logging.WARNING, log_to_driver=False, namespace=NAMESPACE)
    if args.command == "stage":
        return deploy_stage(args.stage_id)
    if args.command == "teardown":
        time.sleep(args.grace)  # requests the gateway still sends these pods finish first
        print(json.dumps({"stopped": teardown(args.stage)}), flush=True)
        return 0
    spec = json.loads(args.spec.read_text())
    try:
        routes = deploy(str(spec["stage"]), list(spec["models"]))
    except DeployError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    print(json.dumps({"routes": routes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
