"""Distributed trainings: ``instanceCount`` nodes, one Ray actor per node on a placement group
whose bundles are the flavor's resources. Node 0 is the rendezvous master (torchrun's
``--master_addr``), and it publishes the model and checkpoints.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from chalicelib.objectstore import platform_store
from runners.logsink import LogSink
from runners.monitor import Sampler, nvidia_smi_source
from runners.nodejob import JobFailedError, NodeJob, Rendezvous, free_port

PLACEMENT_POLL_SECONDS = 0.5


@ray.remote(max_concurrency=4)  # type: ignore[call-overload]
class NodeWorker:
    """One node of a distributed training (a threaded actor: ``poll`` and ``kill`` answer
    while the node is staging or uploading)."""

    def __init__(self, job: dict[str, Any], node_rank: int) -> None:
        self.sink = LogSink(platform_store(), job["logPrefix"])
        self.node = NodeJob(job, node_rank, self.sink)
        self.cancelled = threading.Event()
        self.sampler = Sampler(f"node{node_rank}", lambda: self.node.process, nvidia_smi_source())

    def sample(self) -> dict[str, Any] | None:
        return self.sampler.sample()

    def stage(self) -> tuple[str, int]:
        """Fetch the inputs on this node; return an address the other nodes can reach."""
        self.node.stage()
        return ray.util.get_node_ip_address(), free_port()

    def start(self, rendezvous: Rendezvous) -> None:
        self.node.start(rendezvous)

    def poll(self) -> int | None:
        process = self.node.process
        if process is None:
            return None
        code = process.poll()
        if code is not None:
            process.wait_output()
        return code

    def limit_problem(self, check_storage: bool) -> str | None:
        return self.node.limit_problem(check_storage) if self.node.process else None

    def exit_reason(self, code: int) -> str:
        return self.node.exit_reason(code)

    def upload(self) -> None:
        self.node.upload(self.cancelled.is_set)

    def kill(self) -> None:
        self.cancelled.set()
        self.node.kill()

    def remove_uploads(self) -> None:
        self.node.remove_partial_upload()

    def finish(self) -> None:
        self.node.cleanup()
        self.sink.close()


class NodeGroup:
    def __init__(self, job: dict[str, Any], stop: threading.Event) -> None:
        self.job = job
        self.spec = job["spec"]
        self.stop = stop
        self.count = int(self.spec.get("instance_count") or 1)
        self.group: PlacementGroup | None = None
        self.workers: list[Any] = []
        self.codes: dict[int, int] = {}
        if not ray.is_initialized():
            ray.init(logging_level=logging.WARNING, log_to_driver=False)

    def _bundle(self) -> dict[str, float]:
        flavor = self.spec["flavor"]
        bundle = {"CPU": float(flavor["vcpus"]), "memory": float(int(flavor["ram"]) * 2**20)}
        if flavor.get("gpuCount"):
            bundle["GPU"] = float(flavor["gpuCount"])
        return bundle

    def place(self) -> None:
        """Reserve one bundle per node, spread over the cluster's nodes where it can be; wait
        (the training stays CREATE_IN_PROGRESS) until the cluster has room."""
        bundle = self._bundle()
        self.group = placement_group([dict(bundle) for _ in range(self.count)], strategy="SPREAD")
        ready = self.group.ready()
        while True:
            done, _ = ray.wait([ready], timeout=PLACEMENT_POLL_SECONDS)
            if done:
                break
            if self.stop.is_set():
                raise JobFailedError("STOPPED", "stopped by the user while waiting for nodes")
        self.workers = [
            NodeWorker.options(  # type: ignore[attr-defined]
                num_cpus=bundle["CPU"],
                num_gpus=bundle.get("GPU", 0),
                memory=bundle["memory"],
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self.group, placement_group_bundle_index=rank
                ),
            ).remote(self.job, rank)
            for rank in range(self.count)
        ]

    def _gather(self, refs: list[Any]) -> list[Any]:
        """``ray.get`` that gives up when a stop is requested."""
        pending = list(refs)
        while True:
            _done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            if not pending:
                return [ray.get(ref) for ref in refs]
            if self.stop.is_set():
                raise JobFailedError("STOPPED", "stopped by the user")

    def stage(self) -> None:
        addresses = self._gather([w.stage.remote() for w in self.workers])
        master_addr, master_port = addresses[0]
        workers = tuple(f"{host}:{port}" for host, port in addresses)
        self.rendezvous = [
            Rendezvous(rank, self.count, master_addr, master_port, workers)
            for rank in range(self.count)
        ]

    def start(self) -> None:
        self._gather(
            [w.start.remote(r) for w, r in zip(self.workers, self.rendezvous, strict=True)]
        )

    def poll(self) -> int | None:
        """0 when every node ended well; the first non-zero code as soon as one fails."""
        for rank, worker in enumerate(self.workers):
            if rank in self.codes:
                continue
            code = ray.get(worker.poll.remote())
            if code is not None:
                self.codes[rank] = int(code)
                if code != 0:
                    self.kill()
                    return int(code)
        return 0 if len(self.codes) == self.count else None

    def failure_reason(self) -> str:
        failed = [rank for rank, code in sorted(self.codes.items()) if code != 0]
        rank = failed[0] if failed else 0
        reason: str = ray.get(self.workers[rank].exit_reason.remote(self.codes.get(rank, -9)))
        return reason

    def limit_problem(self, check_storage: bool) -> str | None:
        problems = ray.get([w.limit_problem.remote(check_storage) for w in self.workers])
        return next((p for p in problems if p), None)

    def upload(self) -> None:
        self._gather([self.workers[0].upload.remote()])

    def samples(self) -> list[dict[str, Any]]:
        found = ray.get([w.sample.remote() for w in self.workers], timeout=30)
        return [sample for sample in found if sample]

    def kill(self) -> None:
        for worker in self.workers:
            worker.kill.remote()

    def remove_uploads(self) -> None:
        if self.workers:
            ray.get(self.workers[0].remove_uploads.remote(), timeout=60)

    def finish(self) -> None:
        try:
            ray.get([w.finish.remote() for w in self.workers], timeout=30)
        except Exception:  # noqa: BLE001 - the actors go with the placement group below
            time.sleep(0)
        for worker in self.workers:
            ray.kill(worker)
        if self.group is not None:
            remove_placement_group(self.group)
