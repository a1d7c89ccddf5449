"""A stage's controller: watches its pods and runs each model's pod autoscaler.

After a stage's deploy job found every pod ready, it leaves one detached, named actor per
stage (``{stage}.controller`` in namespace ``openmaker-serving``; the stage's teardown ends
it with the pods). Every ``OPENMAKER_POD_WATCH_SECONDS`` (5) it asks each pod for its status
and usage and:

- replaces a pod whose actor died (its node or worker was killed) or whose runtime was never
  started, under the same name;
- for a model with the pod autoscaler on, compares the mean usage of its ready pods, in
  percent of what each pod was given (CPU cores or memory), with the target, and moves the
  pod count the way Kubernetes' horizontal pod autoscaler does:
  ``desired = ceil(pods * usage / target)`` within ``[podCount, maxPodCount]``; up at once,
  down only after ``desired`` stayed lower for ``OPENMAKER_SCALE_DOWN_SECONDS`` (60).
  Each decision is a log line (source ``autoscaler`` of the stage's logs) and a report;
- reports the ready pods to the control plane whenever that set changed, so the gateway
  routes to ready pods only;
- asks Ray's autoscaler for the stage's nodes (:mod:`serving.nodescale`), and, with the node
  autoscaler on, moves that count with the pods, each decision a log line.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from runners.control import ControlPlane
from serving.nodescale import NodeScaler

logger = logging.getLogger("openmaker.serving.controller")

WATCH_SECONDS = float(os.environ.get("OPENMAKER_POD_WATCH_SECONDS", "5"))
SCALE_DOWN_SECONDS = float(os.environ.get("OPENMAKER_SCALE_DOWN_SECONDS", "60"))
START_TIMEOUT_SECONDS = 300.0  # a pod Ray cannot place or start in this long is given up
STATUS_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class ScalePolicy:
    metric: str  # CPU or MEMORY
    target: int  # percent of what each pod was given
    min_pods: int
    max_pods: int

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> ScalePolicy | None:
        if not raw:
            return None
        return cls(
            metric=str(raw["metric"]).upper(),
            target=int(raw["target"]),
            min_pods=int(raw["minPods"]),
            max_pods=int(raw["maxPods"]),
        )


def utilization(policy: ScalePolicy, usages: list[dict[str, float]], given: float) -> float:
    """Mean usage of the pods in percent of what each was given (cores or bytes)."""
    if not usages or given <= 0:
        return 0.0
    key = "cpuCores" if policy.metric == "CPU" else "memoryBytes"
    return 100.0 * sum(u.get(key, 0.0) for u in usages) / (len(usages) * given)


def desired_pods(policy: ScalePolicy, current: int, percent: float) -> int:
    """The horizontal pod autoscaler's rule, within the policy's bounds (a 10 % tolerance
    around the target keeps the count still)."""
    if current <= 0:
        return policy.min_pods
    ratio = percent / policy.target
    want = current if abs(ratio - 1.0) <= 0.1 else math.ceil(current * ratio)
    return max(policy.min_pods, min(policy.max_pods, want))


@dataclass
class Pod:
    index: int
    actor: Any
    started: Any | None = None  # the start() call in flight
    since: float = field(default_factory=time.monotonic)
    url: str | None = None
    ready: bool = False


@dataclass
class ModelPods:
    raw: dict[str, Any]
    policy: ScalePolicy | None
    pods: dict[int, Pod] = field(default_factory=dict)
    low_since: float | None = None  # when ``desired`` first fell below the count

    @property
    def name(self) -> str:
        return str(self.raw["name"])


class StageController:
    """The watch loop of one stage (a threaded actor: ``stop`` and ``state`` answer while
    the loop runs)."""

    def __init__(
        self,
        stage_id: str,
        models: list[dict[str, Any]],
        sink: Any = None,
        nodes: dict[str, Any] | None = None,
    ) -> None:
        from serving import deploy

        self.stage_id = stage_id
        self.node_scaler = NodeScaler.from_plan(nodes) if nodes else None
        self.usage: dict[tuple[str, int], float] = {}  # (model, pod) -> cores used
        self.sink = sink if sink is not None else deploy.stage_log_sink(stage_id, models[0])
        self.models: list[ModelPods] = []
        for raw in models:
            entry = ModelPods(raw, ScalePolicy.from_dict(raw.get("autoscale")))
            for index in range(int(raw.get("pods", 1))):
                actor = deploy.pod_actor(stage_id, raw, index)
                entry.pods[index] = Pod(index, actor)
            self.models.append(entry)
        self.reported: dict[str, list[str]] | None = None
        self.decisions: list[dict[str, Any]] = []
        self._stop = threading.Event()
        if self.node_scaler is not None:
            self._request_nodes(f"{self.node_scaler.nodes} node(s) for the stage")
        self._thread = threading.Thread(target=self._loop, name="stage-watch", daemon=True)
        self._thread.start()

    # -- the actor's methods --------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "models": {
                entry.name: sorted(i for i, p in entry.pods.items() if p.ready)
                for entry in self.models
            },
            "reported": self.reported,
            "decisions": list(self.decisions),
        }

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=STATUS_TIMEOUT_SECONDS + 5)
        if hasattr(self.sink, "close"):
            self.sink.close()

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            try:
                self.watch_once()
            except Exception as exc:  # the next round tries again
                logger.exception("stage %s: watch round failed", self.stage_id)
                self._log(f"watch round failed: {type(exc).__name__}: {exc}")

    def watch_once(self) -> None:
        for entry in self.models:
            self._check_pods(entry)
            self._autoscale(entry)
        self._scale_nodes()
        self._report()

    def _scale_nodes(self) -> None:
        scaler = self.node_scaler
        if scaler is None:
            return
        pod_cores = sum(float(e.raw.get("cpus", 1.0)) * len(e.pods) for e in self.models)
        if scaler.decide(pod_cores, sum(self.usage.values()), time.monotonic()) is not None:
            self._request_nodes(scaler.decisions[-1])

    def _request_nodes(self, why: str) -> None:
        """Ask Ray's autoscaler for the stage's nodes (a fixed cluster ignores the ask)."""
        scaler = self.node_scaler
        assert scaler is not None
        try:
            scaler.request()
        except Exception as exc:  # noqa: BLE001 - the pods still run on what there is
            self._log(f"{why}: Ray's autoscaler was not asked ({type(exc).__name__}: {exc})")
            return
        self._log(f"{why}: asked Ray's autoscaler for {scaler.nodes} x {scaler.flavor.bundle()}")

    def _check_pods(self, entry: ModelPods) -> None:
        from serving import deploy

        for pod in list(entry.pods.values()):
            if pod.started is not None:
                self._check_start(entry, pod)
                continue
            try:
                status = ray.get(pod.actor.status.remote(), timeout=STATUS_TIMEOUT_SECONDS)
            except ray.exceptions.GetTimeoutError:
                continue  # busy: asked again next round
            except ray.exceptions.RayActorError as exc:
                self._log(
                    f"pod {entry.name}.{pod.index} is gone ({type(exc).__name__}); "
                    "starting it again"
                )
                deploy.end_pod(self.stage_id, entry.name, pod.index)
                self._start(entry, pod.index)
                continue
            pod.ready = bool(status.get("ready"))
            if status.get("port") is None and status.get("problem"):
                self._log(f"pod {entry.name}.{pod.index}: {status['problem']}; starting it again")
                deploy.end_pod(self.stage_id, entry.name, pod.index)
                self._start(entry, pod.index)
            elif status.get("port") is None:  # a fresh actor (made again after a restart)
                pod.started, pod.since = pod.actor.start.remote(), time.monotonic()
            elif pod.ready and pod.url is None:
                pod.url = ray.get(pod.actor.address.remote(), timeout=STATUS_TIMEOUT_SECONDS)

    def _start(self, entry: ModelPods, index: int) -> None:
        from serving import deploy

        actor = deploy.pod_actor(self.stage_id, entry.raw, index)
        entry.pods[index] = Pod(index, actor, started=actor.start.remote())

    def _check_start(self, entry: ModelPods, pod: Pod) -> None:
        from serving import deploy

        done, _ = ray.wait([pod.started], timeout=0)
        if not done:
            if time.monotonic() - pod.since > START_TIMEOUT_SECONDS:
                self._log(
                    f"pod {entry.name}.{pod.index} could not be placed or started in "
                    f"{START_TIMEOUT_SECONDS:.0f} s; given up"
                )
                deploy.end_pod(self.stage_id, entry.name, pod.index)
                del entry.pods[pod.index]
            return
        try:
            problem = ray.get(done[0])
        except ray.exceptions.RayError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        pod.started = None
        if problem:
            self._log(f"pod {entry.name}.{pod.index} failed to start: {problem}")
            deploy.end_pod(self.stage_id, entry.name, pod.index)
            del entry.pods[pod.index]

    def _usages(self, entry: ModelPods, ready: list[Pod]) -> list[dict[str, float]]:
        """What the ready pods use now (kept per pod for the node autoscaler)."""
        usages: list[dict[str, float]] = []
        for key in [k for k in self.usage if k[0] == entry.name]:
            del self.usage[key]
        for pod in ready:
            try:
                usage = ray.get(pod.actor.usage.remote(), timeout=STATUS_TIMEOUT_SECONDS)
            except ray.exceptions.RayError:
                continue
            usages.append(usage)
            self.usage[(entry.name, pod.index)] = float(usage.get("cpuCores", 0.0))
        return usages

    def _autoscale(self, entry: ModelPods) -> None:
        policy = entry.policy
        if policy is None:
            if self.node_scaler is not None and self.node_scaler.enabled:
                self._usages(entry, [p for p in entry.pods.values() if p.ready])
            return
        ready = [pod for pod in entry.pods.values() if pod.ready and pod.started is None]
        usages = self._usages(entry, ready)
        given = float(
            entry.raw.get("cpus", 1.0)
            if policy.metric == "CPU"
            else entry.raw.get("memoryBytes", 2 * 2**30)
        )
        percent = utilization(policy, usages, given)
        current = len(entry.pods)
        want = desired_pods(policy, current, percent)
        now = time.monotonic()
        if want > current:
            entry.low_since = None
            self._decide(entry, current, want, percent)
            for index in self._free_indexes(entry, want - current):
                self._start(entry, index)
        elif want < current:
            if entry.low_since is None:
                entry.low_since = now
            elif now - entry.low_since >= SCALE_DOWN_SECONDS:
                from serving import deploy

                entry.low_since = None
                self._decide(entry, current, want, percent)
                for index in sorted(entry.pods, reverse=True)[: current - want]:
                    entry.pods[index].ready = False
                    del entry.pods[index]
                    self._report()  # the gateway stops sending before the pod goes
                    deploy.end_pod(self.stage_id, entry.name, index)
        else:
            entry.low_since = None

    @staticmethod
    def _free_indexes(entry: ModelPods, count: int) -> list[int]:
        free: list[int] = []
        index = 0
        while len(free) < count:
            if index not in entry.pods:
                free.append(index)
            index += 1
        return free

    def _decide(self, entry: ModelPods, current: int, want: int, percent: float) -> None:
        policy = entry.policy
        assert policy is not None
        decision = {
            "time": time.time(),
            "model": entry.name,
            "metric": policy.metric,
            "usagePercent": round(percent, 1),
            "targetPercent": policy.target,
            "from": current,
            "to": want,
        }
        self.decisions.append(decision)
        del self.decisions[:-100]
        verb = "up" if want > current else "down"
        self._log(
            f"scale {verb} {entry.name}: {current} -> {want} pods ({policy.metric} "
            f"{percent:.1f}% of what each pod was given, target {policy.target}%, "
            f"bounds {policy.min_pods}..{policy.max_pods})"
        )

    def _routes(self) -> dict[str, list[str]]:
        return {
            entry.name: sorted(p.url for p in entry.pods.values() if p.ready and p.url is not None)
            for entry in self.models
        }

    def _report(self) -> None:
        routes = self._routes()
        if routes == self.reported:
            return
        try:
            ControlPlane("endpoint-stage", self.stage_id)._call(
                "POST", "status", {"status": "ACTIVE", "routes": routes}, retry_for=10
            )
        except Exception as exc:  # noqa: BLE001 - reported again next round
            logger.warning("stage %s: routes not reported: %s", self.stage_id, exc)
            return
        self.reported = routes

    def _log(self, line: str) -> None:
        logger.info("stage %s: %s", self.stage_id, line)
        self.sink.write("autoscaler", "stdout", line + "\n")


# threaded: ``state`` and ``stop`` answer while the loop runs
# restarted where its worker dies: it picks the stage's pods up again by name
ControllerActor = ray.remote(num_cpus=0, max_concurrency=4, max_restarts=-1)(StageController)  # type: ignore[call-overload]
