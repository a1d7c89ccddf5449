"""The driver of one training: ``python -m runners.training <training-id>``, run by Ray Jobs.

It asks the control plane for the job, stages the inputs (source, requirements, datasets,
checkpoint), runs the entry point with the job contract (``EM_*`` variables, hyperparameters
as ``--key value``), watches it (timeout, memory of the flavor, data storage size, a stop
request), uploads what the code left in ``EM_MODEL_DIR`` and ``EM_CHECKPOINT_DIR``, and
reports each step. A one-node training runs in the driver itself (Ray reserved the flavor's
resources for it); more nodes run in actors on a placement group (``runners.distributed``).

The final outcome is written to the platform store before it is reported, so the control
plane's tick settles the training even if the report never arrives.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from chalicelib.objectstore import open_uri, platform_store
from runners.control import ControlPlane
from runners.logsink import LogSink
from runners.monitor import MetricsReporter, Sampler, nvidia_smi_source
from runners.nodejob import JobFailedError, NodeJob

POLL_SECONDS = 0.2
STORAGE_CHECK_SECONDS = 5.0


class TrainingDriver:
    def __init__(self, training_id: str) -> None:
        self.training_id = training_id
        self.control = ControlPlane("training", training_id)
        self.stop_requested = threading.Event()
        self.job: dict[str, Any] = {}
        self.store = platform_store()
        self.sink: LogSink | None = None
        self.node: NodeJob | None = None
        self.cluster: Any = None  # runners.distributed.NodeGroup for several nodes
        self.reporter: MetricsReporter | None = None

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        self.job = self.control.job()
        if self.job["status"] not in ("CREATE_REQUESTED", "CREATE_IN_PROGRESS"):
            print(f"training {self.training_id} is {self.job['status']}; nothing to run")
            return 0
        self.sink = LogSink(self.store, self.job["logPrefix"])
        self._write_log_meta()
        try:
            if int(self.job["spec"].get("instance_count") or 1) > 1:
                status, reason = self._run_distributed()
            else:
                status, reason = self._run_here()
        except JobFailedError as exc:
            status, reason = exc.status, exc.reason
        except Exception as exc:  # noqa: BLE001 - any driver fault ends the job with a reason
            status, reason = "FAIL_TRAIN", f"the job driver failed: {type(exc).__name__}: {exc}"
        if self.stop_requested.is_set() and status != "COMPLETE":
            status, reason = "STOPPED", "stopped by the user"
        self._finish(status, reason)
        return 0

    def _settle(self, status: str, reason: str | None) -> str:
        """Record the outcome durably, then report it; returns what the control plane holds.

        The result file comes first: the tick applies it if the report never arrives."""
        outcome = {"status": status, "reason": reason, "at": datetime.now(UTC).isoformat()}
        self.store.write(self.job["resultKey"], json.dumps(outcome).encode())
        try:
            return self.control.report(status, reason)
        except Exception as exc:  # noqa: BLE001 - the tick settles it from the result file
            print(f"could not report {status}: {exc}", file=sys.stderr)
            return status

    # -- one node, in this process ---------------------------------------------------------

    def _run_here(self) -> tuple[str, str | None]:
        assert self.sink is not None
        self._say(f"preparing training {self.training_id}")
        node = self.node = NodeJob(self.job, 0, self.sink)
        node.stage()
        self._started()
        node.start(None)
        assert node.process is not None
        sampler = Sampler("node0", lambda: node.process, nvidia_smi_source())
        self._monitor(lambda: [s for s in [sampler.sample()] if s])
        process = node.process
        code = self._watch(process.poll, [node], pause=process.wait)
        self._stop_monitor()
        node.process.wait_output()
        if code != 0:
            raise JobFailedError("FAIL_TRAIN", node.exit_reason(code))
        self._completing()
        node.upload(self.stop_requested.is_set)
        return "COMPLETE", None

    # -- several nodes, in actors ---------------------------------------------------------

    def _run_distributed(self) -> tuple[str, str | None]:
        from runners.distributed import NodeGroup  # imports ray: only distributed jobs pay

        self._say(f"placing {self.job['spec']['instance_count']} nodes for {self.training_id}")
        group = self.cluster = NodeGroup(self.job, self.stop_requested)
        # ray.init (inside NodeGroup) installs its own SIGTERM handler: a stop must reach us.
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        group.place()
        group.stage()
        self._started()
        group.start()
        self._monitor(group.samples)
        failed = self._watch(group.poll, None, group=group)
        self._stop_monitor()
        if failed != 0:
            raise JobFailedError("FAIL_TRAIN", group.failure_reason())
        self._completing()
        group.upload()
        return "COMPLETE", None

    # -- shared steps ---------------------------------------------------------------------

    def _monitor(self, collect: Any) -> None:
        self.reporter = MetricsReporter(collect, self.control.metrics)
        self.reporter.start()

    def _stop_monitor(self) -> None:
        if self.reporter is not None:
            self.reporter.stop()
            self.reporter = None

    def _started(self) -> None:
        if self.stop_requested.is_set():
            raise JobFailedError("STOPPED", "stopped by the user")
        current = self.control.report("RUNNING")
        if current != "RUNNING":
            raise JobFailedError(current, f"the training became {current} before it started")

    def _completing(self) -> None:
        current = self.control.report("COMPLETE_IN_PROGRESS")
        if current != "COMPLETE_IN_PROGRESS":
            raise JobFailedError(current, "the training was stopped before its upload")

    def _watch(
        self,
        poll: Any,
        nodes: list[NodeJob] | None,
        group: Any = None,
        pause: Any = time.sleep,
    ) -> int:
        """Wait for the code to end; enforce stop, timeout, memory and storage limits.

        ``pause`` waits between checks; for one local process it is the process's own wait,
        so its end is seen at once rather than at the next check."""
        timeout = int(self.job["spec"].get("timeout_minutes") or 43200) * 60
        started = time.monotonic()
        next_storage_check = STORAGE_CHECK_SECONDS
        while True:
            code = poll()
            if code is not None:
                return int(code)
            elapsed = time.monotonic() - started
            problem = None
            if self.stop_requested.is_set():
                self._kill_all(nodes, group)
                raise JobFailedError("STOPPED", "stopped by the user")
            if elapsed > timeout:
                problem = f"exceeded timeout of {timeout // 60} minutes"
            else:
                check_storage = elapsed >= next_storage_check
                if check_storage:
                    next_storage_check = elapsed + STORAGE_CHECK_SECONDS
                if nodes is not None:
                    problem = next(
                        (p for n in nodes if (p := n.limit_problem(check_storage))), None
                    )
                elif group is not None:
                    problem = group.limit_problem(check_storage)
            if problem:
                self._kill_all(nodes, group)
                raise JobFailedError("FAIL_TRAIN", problem)
            pause(POLL_SECONDS)

    def _kill_all(self, nodes: list[NodeJob] | None, group: Any) -> None:
        for node in nodes or []:
            node.kill()
        if group is not None:
            group.kill()

    def _remove_uploads(self) -> None:
        if self.node is not None:
            self.node.remove_partial_upload()
        if self.cluster is not None:
            self.cluster.remove_uploads()

    def _finish(self, status: str, reason: str | None) -> None:
        self._stop_monitor()
        if status != "COMPLETE":
            self._remove_uploads()
        self._say(f"training ends {status}" + (f": {reason}" if reason else ""))
        # Every line is stored, and copied to the log upload folder, before the status says
        # the job ended: a client that saw the end finds the whole log.
        self._flush_log()
        log_uri = self.job["spec"].get("log_upload_uri")
        if log_uri:
            self._upload_log(log_uri)
        held = self._settle(status, reason)
        if status == "COMPLETE" and held == "STOP_IN_PROGRESS":
            # The user stopped it during the upload: a stopped training publishes no model.
            self._remove_uploads()
            self._say("stopped during the upload: the uploaded model was removed")
            self._flush_log()
            if log_uri:
                self._upload_log(log_uri)
            self._settle("STOPPED", "stopped by the user during the upload")
        if self.sink is not None:
            self.sink.close()
        if self.node is not None:
            self.node.cleanup()
        if self.cluster is not None:
            self.cluster.finish()

    def _flush_log(self) -> None:
        if self.sink is not None:
            self.sink.flush()

    def _upload_log(self, uri: str) -> None:
        """The whole log as text at ``uri``/training.log (the IBM way's results folder)."""
        from chalicelib.services.joblogs import read_logs  # pydantic: only when needed

        lines: list[str] = []
        cursor = None
        while True:
            records, cursor = read_logs(
                self.store, self.job["logPrefix"], cursor=cursor, limit=1000
            )
            if not records:
                break
            lines += [f"{r.time.isoformat()} {r.level} [{r.source}] {r.body}" for r in records]
        try:
            store, prefix = open_uri(uri)
            key = f"{prefix.rstrip('/')}/training.log" if prefix.strip("/") else "training.log"
            store.write(key, ("\n".join(lines) + "\n").encode())
        except Exception as exc:  # noqa: BLE001 - the log stays readable through the API
            print(f"could not copy the log to {uri}: {exc}", file=sys.stderr)

    def _on_stop(self, signum: int, _frame: Any) -> None:
        self.stop_requested.set()
        if self.node is not None:
            threading.Thread(target=self.node.kill, daemon=True).start()

    def _say(self, message: str) -> None:
        if self.sink is not None:
            self.sink.write("driver", "stdout", f"[openmaker] {message}\n")
        print(f"[openmaker] {message}", flush=True)

    def _write_log_meta(self) -> None:
        meta = {
            "trainingId": self.training_id,
            "trainingName": self.job["trainingName"],
            "useLog": bool(self.job["spec"].get("use_log")),
        }
        self.store.write(self.job["logMetaKey"], json.dumps(meta).encode())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m runners.training <training-id>", file=sys.stderr)
        return 2
    return TrainingDriver(args[0]).run()


if __name__ == "__main__":
    sys.exit(main())
