"""The Ray Jobs REST API (the head's dashboard port), spoken with the standard library.

See https://docs.ray.io/en/latest/cluster/running-applications/job-submission/rest.html.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from chalicelib.dispatch.base import (
    BackendUnavailableError,
    JobInfo,
    JobState,
    JobSubmission,
    NodeCapacity,
)
from chalicelib.dispatch.ray_auth import ray_auth_headers

NODES_TTL_SECONDS = 5.0


class RayJobsBackend:
    def __init__(self, address: str, *, timeout: float = 10.0) -> None:
        self.address = address.rstrip("/")
        self.timeout = timeout
        self._nodes: tuple[float, list[NodeCapacity]] | None = None

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        headers.update(ray_auth_headers())  # a cluster with token auth (never logged)
        request = urllib.request.Request(
            self.address + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            raise RayHttpError(exc.code, text) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise BackendUnavailableError(f"Ray Jobs API at {self.address}: {exc}") from exc
        return json.loads(payload) if payload else None

    def submit(self, job: JobSubmission) -> None:
        body: dict[str, Any] = {
            "entrypoint": job.entrypoint,
            "submission_id": job.submission_id,
            "runtime_env": {"env_vars": job.env_vars},
            "metadata": job.metadata,
        }
        if job.num_cpus:
            body["entrypoint_num_cpus"] = job.num_cpus
        if job.num_gpus:
            body["entrypoint_num_gpus"] = job.num_gpus
        if job.memory_bytes:
            body["entrypoint_memory"] = job.memory_bytes
        try:
            self._call("POST", "/api/jobs/", body)
        except RayHttpError as exc:
            # A retried dispatch: Ray refuses a second job with the same submission id.
            if "already exists" not in exc.text:
                message = f"Ray refused job {job.submission_id}: {exc}"
                raise BackendUnavailableError(message) from exc

    def info(self, submission_id: str) -> JobInfo | None:
        try:
            data = self._call("GET", f"/api/jobs/{submission_id}")
        except RayHttpError as exc:
            if exc.status == 404:
                return None
            raise BackendUnavailableError(str(exc)) from exc
        return JobInfo(
            status=JobState(data["status"]),
            message=data.get("message") or "",
            exit_code=data.get("driver_exit_code"),
        )

    def stop(self, submission_id: str) -> bool:
        try:
            self._call("POST", f"/api/jobs/{submission_id}/stop")
        except RayHttpError as exc:
            if exc.status == 404:
                return False
            raise BackendUnavailableError(str(exc)) from exc
        return True

    def nodes(self) -> list[NodeCapacity]:
        cached = self._nodes
        if cached is not None and time.monotonic() - cached[0] < NODES_TTL_SECONDS:
            return cached[1]
        try:
            data = self._call("GET", "/api/v0/nodes?limit=10000&detail=false")
        except RayHttpError as exc:
            raise BackendUnavailableError(str(exc)) from exc
        nodes = [
            NodeCapacity(
                node_id=node["node_id"],
                cpus=float(node["resources_total"].get("CPU", 0)),
                memory_bytes=float(node["resources_total"].get("memory", 0)),
                gpus=float(node["resources_total"].get("GPU", 0)),
                labels=dict(node.get("labels") or {}),
            )
            for node in data["data"]["result"]["result"]
            if node.get("state") == "ALIVE"
        ]
        self._nodes = (time.monotonic(), nodes)
        return nodes

    def actors(self, namespace: str) -> set[str]:
        query = urllib.parse.urlencode(
            {
                "limit": 10000,
                "detail": "false",
                "filter_keys": "ray_namespace",
                "filter_predicates": "=",
                "filter_values": namespace,
            }
        )
        try:
            data = self._call("GET", f"/api/v0/actors?{query}")
        except RayHttpError as exc:
            raise BackendUnavailableError(str(exc)) from exc
        return {
            str(actor["name"])
            for actor in data["data"]["result"]["result"]
            if actor.get("name") and actor.get("state") in LIVE_ACTOR_STATES
        }


LIVE_ACTOR_STATES = frozenset({"ALIVE", "PENDING_CREATION", "RESTARTING", "DEPENDENCIES_UNREADY"})


class RayHttpError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:500]}")
        self.status = status
        self.text = text
