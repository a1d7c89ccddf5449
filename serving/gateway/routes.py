"""The gateway's routing table and how a request path maps onto it (DESIGN §5).

A stage is reached under its key, the first path segment (``apigwStageUrl`` is
``{gateway host}/{key}``). Below it the routes of the serving contract are accepted with a
``/{model}`` prefix (``/{model}/v2/models/{model}/infer``) and without it, when the stage
holds that model (``/v2/models/{model}/infer``, what the SDK calls). OpenAI routes name no
model in the path: ``/openai/v1/completions`` and ``/v1/completions`` go to the model the
body names, or to the stage's only model.

The table is replaced whole (``RouteTable.replace``): a request takes the table as it was
when it arrived, so a default-stage switch never sees half of a change.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

OPENAI_LEAVES = ("completions", "chat/completions")


class RouteError(Exception):
    """A request that no route serves: the status and the message to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Pool:
    """The pods serving one model in one stage; only ready ones get requests."""

    model: str
    backends: tuple[str, ...]  # base URLs, ``http://10.0.0.5:8080``
    ready: set[str] = field(default_factory=set)  # the table's: a pod is ready everywhere
    health_path: str = "/v2/health/ready"
    openai_root: str = "/openai/v1"  # the pod's OpenAI routes (vLLM: /v1)
    resource_path: str | None = None  # the stage's own path to this model (``/inference``)
    _turn: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._turn = itertools.count()

    def pick(self) -> str:
        """The next ready backend, round robin."""
        ready = [b for b in self.backends if b in self.ready]
        if not ready:
            raise RouteError(503, f"model {self.model} has no ready pod in this stage")
        return ready[next(self._turn) % len(ready)]


@dataclass
class Stage:
    key: str
    pools: dict[str, Pool]
    stage_id: str = ""  # whose calls these are (a default stage has two keys, one id)
    endpoint_id: str | None = None
    log_prefix: str | None = None  # where each call is logged (a stage with useLog)

    def __post_init__(self) -> None:
        self.stage_id = self.stage_id or self.key


@dataclass(frozen=True)
class Target:
    """Where one request goes: the stage, the model's pool and the path on the pod."""

    stage: Stage
    pool: Pool
    path: str


def _pools(models: Mapping[str, Any], ready: set[str]) -> dict[str, Pool]:
    """A model's entry is its backend URLs, or ``{"backends": [...], "healthPath": ...}``."""
    pools = {}
    for model, entry in models.items():
        backends: Iterable[str] = entry["backends"] if isinstance(entry, dict) else entry
        urls = tuple(str(b).rstrip("/") for b in backends)
        pool = Pool(str(model), urls, ready)
        if isinstance(entry, dict) and entry.get("healthPath"):
            pool.health_path = str(entry["healthPath"])
        if isinstance(entry, dict) and entry.get("resourcePath"):
            pool.resource_path = "/" + str(entry["resourcePath"]).strip("/")
        if isinstance(entry, dict) and entry.get("openaiRoot"):
            pool.openai_root = "/" + str(entry["openaiRoot"]).strip("/")
        pools[str(model)] = pool
    return pools


class RouteTable:
    """Stages by key. ``replace`` swaps in a new table. Readiness belongs to a pod (a
    backend URL), whatever stage keys route to it: a pod already known ready stays ready
    when a change routes another key to it (a default-stage switch), so no request meets a
    pool that has not been checked yet."""

    def __init__(self) -> None:
        self.stages: dict[str, Stage] = {}
        self.ready: set[str] = set()

    def replace(self, spec: Mapping[str, Any]) -> None:
        """``{"stages": {key: {"models": {name: [backend URL, ...]}}}}`` (or a model as
        ``{"backends": [...], "healthPath": "/ping", "openaiRoot": "/v1"}``); a stage may
        also name its ``stageId``, ``endpointId`` and ``logPrefix``."""
        stages = {}
        for key, stage in (spec.get("stages") or {}).items():
            stages[str(key)] = Stage(
                str(key),
                _pools(stage.get("models") or {}, self.ready),
                stage_id=str(stage.get("stageId") or key),
                endpoint_id=stage.get("endpointId"),
                log_prefix=stage.get("logPrefix"),
            )
        self.stages = stages
        routed = {b for stage in stages.values() for p in stage.pools.values() for b in p.backends}
        self.ready &= routed  # a pod no longer routed to is forgotten

    def pools(self) -> list[Pool]:
        return [pool for stage in self.stages.values() for pool in stage.pools.values()]

    def as_spec(self) -> dict[str, Any]:
        return {
            "stages": {
                key: {
                    "models": {
                        name: {
                            "backends": list(pool.backends),
                            "healthPath": pool.health_path,
                            "openaiRoot": pool.openai_root,
                            "resourcePath": pool.resource_path,
                            "ready": sorted(b for b in pool.backends if b in pool.ready),
                        }
                        for name, pool in stage.pools.items()
                    },
                    "stageId": stage.stage_id,
                    "endpointId": stage.endpoint_id,
                    "logPrefix": stage.log_prefix,
                }
                for key, stage in self.stages.items()
            }
        }

    def resolve(self, path: str, body: bytes | None = None) -> Target:
        """The target of a request for ``path`` (the body names an OpenAI request's model)."""
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise RouteError(404, "name a stage: /{stage}/v2/models/{model}/infer")
        stage = self.stages.get(parts[0])
        if stage is None:
            raise RouteError(404, f"no endpoint stage {parts[0][:64]} here")
        rest = parts[1:]
        for pool in stage.pools.values():
            if pool.resource_path is not None and pool.resource_path == "/" + "/".join(rest):
                return Target(stage, pool, self._resource_leaf(pool, body))
        if (
            rest
            and rest[0] in stage.pools
            and (len(rest) == 1 or rest[1] in ("v1", "v2", "openai"))
        ):
            return self._target(stage, rest[0], rest[1:], body)
        return self._target(stage, None, rest, body)

    def _target(
        self, stage: Stage, prefix: str | None, rest: list[str], body: bytes | None
    ) -> Target:
        leaf = "/".join(rest)
        named = self._named_model(rest)
        if named and len(rest) == 4 and rest[0] == "v1" and rest[3] in ("predict", "explain"):
            leaf = f"v1/models/{named}:{rest[3]}"  # the SDK's /predict is KServe's :predict
        if leaf.startswith("v1/") and leaf[3:] in OPENAI_LEAVES:
            leaf = "openai/" + leaf  # the SDK's /v1/completions is the runtime's OpenAI route
        if leaf.startswith("openai/v1/"):
            named = prefix or self._body_model(body)
        model = named or prefix or self._only_model(stage)
        if prefix is not None and named is not None and named != prefix:
            raise RouteError(
                404, f"the path names model {named[:64]} below model {prefix[:64]}'s prefix"
            )
        pool = stage.pools.get(model)
        if pool is None:
            held = ", ".join(sorted(stage.pools)) or "none"
            raise RouteError(
                404, f"model {model[:64]} is not served by stage {stage.key} (it holds {held})"
            )
        if leaf.startswith("openai/v1/"):
            return Target(stage, pool, pool.openai_root + leaf.removeprefix("openai/v1"))
        return Target(stage, pool, "/" + leaf)

    @staticmethod
    def _resource_leaf(pool: Pool, body: bytes | None) -> str:
        """A model's own resource path: a body with ``instances`` is OIP v1 predict, one with
        ``inputs`` v2 infer; a GET asks for the model's v2 metadata."""
        if body is None:
            return f"/v2/models/{pool.model}"
        try:
            found = json.loads(body) if body else None
        except ValueError:
            found = None
        if isinstance(found, dict) and "instances" in found:
            return f"/v1/models/{pool.model}:predict"
        if isinstance(found, dict) and "inputs" in found:
            return f"/v2/models/{pool.model}/infer"
        raise RouteError(400, 'the body is JSON with "instances" (OIP v1) or "inputs" (OIP v2)')

    @staticmethod
    def _named_model(rest: list[str]) -> str | None:
        """``v1/models/{m}...``, ``v2/models/{m}...``: the model the path names."""
        if len(rest) >= 3 and rest[0] in ("v1", "v2") and rest[1] == "models":
            return rest[2].split(":", 1)[0]  # v1/models/{m}:predict
        return None

    @staticmethod
    def _body_model(body: bytes | None) -> str | None:
        if not body:
            return None
        try:
            found = json.loads(body)
        except ValueError:
            return None
        model = found.get("model") if isinstance(found, dict) else None
        return str(model) if model else None

    @staticmethod
    def _only_model(stage: Stage) -> str:
        if len(stage.pools) == 1:
            return next(iter(stage.pools))
        held = ", ".join(sorted(stage.pools)) or "none"
        raise RouteError(404, f"name the model: stage {stage.key} holds {held}")
