"""A stage's node count, and its node autoscaler, as requests to Ray's autoscaler.

Nodes are the Ray cluster's: a stage asks Ray's autoscaler, with
``ray.autoscaler.sdk.request_resources``, for as many bundles of its flavor (cores, memory,
GPUs) as it has nodes, so a cluster with an autoscaler (the cluster launcher, KubeRay) adds
machines that can hold them; a fixed cluster ignores the request (one machine here).

With the node autoscaler on (``caEnable``), the count follows what the stage's pods ask for,
within ``caMinNodeCount .. caMaxNodeCount``, in the seed's terms:

- up at once when the pods' cores no longer fit on the nodes;
- down (``caScaleDownEnable``) to what the pods need once their use stayed under
  ``caScaleDownUtilThresh`` % of the nodes' cores for ``caScaleDownUnneededTime`` minutes,
  and not within ``caScaleDownDelayAfterAdd`` minutes of the last addition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Flavor:
    cpus: float
    memory_bytes: float
    gpus: float

    def bundle(self) -> dict[str, float]:
        found = {"CPU": self.cpus, "memory": self.memory_bytes}
        if self.gpus:
            found["GPU"] = self.gpus
        return found


@dataclass
class NodeScaler:
    flavor: Flavor
    nodes: int  # what is asked of Ray now
    enabled: bool = False
    min_nodes: int = 1
    max_nodes: int = 1
    scale_down: bool = False
    util_threshold: float = 50.0  # percent of the nodes' cores
    unneeded_s: float = 600.0
    delay_after_add_s: float = 600.0
    _added_at: float | None = None
    _low_since: float | None = None
    decisions: list[str] = field(default_factory=list)

    @classmethod
    def from_plan(cls, plan: dict[str, Any]) -> NodeScaler:
        flavor = plan["flavor"]
        auto = plan.get("autoscale") or {}
        count = int(plan.get("count", 1))
        return cls(
            flavor=Flavor(
                float(flavor["cpus"]), float(flavor["memoryBytes"]), float(flavor.get("gpus", 0))
            ),
            nodes=count,
            enabled=bool(auto),
            min_nodes=int(auto.get("minNodes", count)),
            max_nodes=int(auto.get("maxNodes", count)),
            scale_down=bool(auto.get("scaleDown", False)),
            util_threshold=float(auto.get("utilThreshold") or 50),
            unneeded_s=60.0 * float(auto.get("unneededMinutes") or 10),
            delay_after_add_s=60.0 * float(auto.get("delayAfterAddMinutes") or 10),
        )

    def needed(self, pod_cores: float) -> int:
        """Nodes of the flavor that hold ``pod_cores`` (at least one)."""
        return max(1, math.ceil(pod_cores / self.flavor.cpus - 1e-9))

    def decide(self, pod_cores: float, used_cores: float, now: float) -> int | None:
        """The new node count when it should change, else None. ``pod_cores``: what the
        stage's pods hold; ``used_cores``: what they use."""
        if not self.enabled:
            return None
        need = min(self.max_nodes, max(self.min_nodes, self.needed(pod_cores)))
        if need > self.nodes:
            self._low_since = None
            self._added_at = now
            return self._change(need, f"the pods hold {pod_cores:g} cores")
        percent = 100.0 * used_cores / (self.nodes * self.flavor.cpus)
        if not self.scale_down or need >= self.nodes or percent >= self.util_threshold:
            self._low_since = None
            return None
        if self._low_since is None:
            self._low_since = now
        if now - self._low_since < self.unneeded_s:
            return None
        if self._added_at is not None and now - self._added_at < self.delay_after_add_s:
            return None
        self._low_since = None
        return self._change(
            need, f"use {percent:.0f}% of the nodes' cores, under {self.util_threshold:g}%"
        )

    def _change(self, count: int, why: str) -> int:
        self.decisions.append(
            f"node autoscaler: {self.nodes} -> {count} nodes ({why}; bounds "
            f"{self.min_nodes}..{self.max_nodes})"
        )
        self.nodes = count
        return count

    def request(self) -> None:
        """Ask Ray's autoscaler for ``nodes`` bundles of the flavor (replacing the last ask)."""
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[self.flavor.bundle()] * self.nodes)
