"""The driver of one training: ``python -m runners.training <training-id>``, run by Ray Jobs.

It asks the control plane for the job, stages the inputs (source, requirements, datasets,
checkpoint), runs the entry point with the job contract (``EM_*`` variables, hyperparameters
as ``--key value``), watches it (timeout, memory of the flavor, data storage size, a stop
request), uploads what the code left in ``EM_MODEL_DIR`` and ``EM_CHECKPOINT_DIR``, and
reports each step. The final outcome is also written to the platform store before it is
reported, so the control plane's tick can settle the training if the report never arrives.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalicelib.errors import OpenMakerError
from chalicelib.objectstore import open_uri, platform_store
from chalicelib.objectstore.archive import safe_extract_zip
from chalicelib.objectstore.transfer import download_uri
from runners.control import ControlPlane
from runners.envs import RequirementsError, ensure_env
from runners.logsink import LogSink
from runners.process import UserProcess, directory_bytes

POLL_SECONDS = 0.2
STORAGE_CHECK_SECONDS = 5.0
TAIL_LINES = 20


class JobFailedError(Exception):
    """The job ends in ``status`` with ``reason`` (raised from any stage)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Layout:
    """The job's folders on this node."""

    root: Path
    source: Path = field(init=False)
    datasets: Path = field(init=False)
    model: Path = field(init=False)
    checkpoint_input: Path = field(init=False)
    checkpoint: Path = field(init=False)

    def __post_init__(self) -> None:
        self.source = self.root / "src"
        self.datasets = self.root / "datasets"
        self.model = self.root / "model"
        self.checkpoint_input = self.root / "checkpoint-input"
        self.checkpoint = self.root / "checkpoint"

    def create(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        for path in (self.source, self.datasets, self.model, self.checkpoint_input):
            path.mkdir(parents=True, exist_ok=True)
        self.checkpoint.mkdir(parents=True, exist_ok=True)


def env_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


class TrainingDriver:
    def __init__(self, training_id: str) -> None:
        self.training_id = training_id
        self.control = ControlPlane("training", training_id)
        self.stop_requested = threading.Event()
        self.job: dict[str, Any] = {}
        self.spec: dict[str, Any] = {}
        home = Path(os.environ.get("OPENMAKER_HOME", str(Path.home() / ".openmaker")))
        self.home = home
        self.layout = Layout(home / "work" / "trainings" / training_id)
        self.store = platform_store()
        self.sink: LogSink | None = None
        self.process: UserProcess | None = None
        self.uploaded: list[tuple[Any, str]] = []

    # -- the whole run --------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        self.job = self.control.job()
        self.spec = self.job["spec"]
        if self.job["status"] not in ("CREATE_REQUESTED", "CREATE_IN_PROGRESS"):
            print(f"training {self.training_id} is {self.job['status']}; nothing to run")
            return 0
        self.sink = LogSink(self.store, self.job["logPrefix"])
        self._write_log_meta()
        try:
            status, reason = self._run_stages()
        except JobFailedError as exc:
            status, reason = exc.status, exc.reason
        except Exception as exc:  # noqa: BLE001 - any driver fault ends the job with a reason
            status, reason = "FAIL_TRAIN", f"the job driver failed: {type(exc).__name__}: {exc}"
        if self.stop_requested.is_set() and status != "COMPLETE":
            status, reason = "STOPPED", "stopped by the user"
        self._finish(status, reason)
        return 0

    def _run_stages(self) -> tuple[str, str | None]:
        self._say(f"preparing training {self.training_id}")
        self.layout.create()
        argv, cwd = self._stage_inputs()
        env = self._environment()
        self._check_stop()
        current = self.control.report("RUNNING")
        if current != "RUNNING":
            raise JobFailedError(current, f"the training became {current} before it started")
        started = time.monotonic()
        self._say("running: " + " ".join(argv))
        self.process = UserProcess(argv, cwd=cwd, env=env, sink=self.sink, source="node0")
        code = self._watch(self.process, started)
        self.process.wait_output()
        if code != 0:
            raise JobFailedError("FAIL_TRAIN", self._exit_reason(code))
        current = self.control.report("COMPLETE_IN_PROGRESS")
        if current != "COMPLETE_IN_PROGRESS":
            raise JobFailedError(current, "the training was stopped before its upload")
        self._upload_outputs()
        return "COMPLETE", None

    # -- staging --------------------------------------------------------------------------

    def _stage_inputs(self) -> tuple[list[str], Path]:
        spec, layout = self.spec, self.layout
        limit = spec.get("data_storage_size")
        budget = int(limit) * 10**9 if limit else None
        python = sys.executable
        try:
            if spec.get("source_dir_uri"):
                self._download_source(spec["source_dir_uri"])
                entry = layout.source / spec["entry_point"]
                if not entry.is_file():
                    raise JobFailedError(
                        "CREATE_FAILED",
                        f"entry point {spec['entry_point']} not found in {spec['source_dir_uri']}",
                    )
                requirements = layout.source / "requirements.txt"
                if requirements.is_file():
                    python = str(ensure_env(requirements, self.home / "envs", log=self._say_setup))
            for dataset in spec.get("dataset_list") or []:
                target = layout.datasets / dataset["dataset_name"]
                used = download_uri(dataset["data_uri"], target, max_bytes=budget)
                budget = budget - used if budget is not None else None
                self._say(f"dataset {dataset['dataset_name']}: {used} bytes")
            if spec.get("check_point_input_uri"):
                download_uri(spec["check_point_input_uri"], layout.checkpoint_input)
        except RequirementsError as exc:
            raise JobFailedError("CREATE_FAILED", str(exc)) from None
        except OpenMakerError as exc:
            raise JobFailedError("CREATE_FAILED", exc.message) from None
        return self._command(python), layout.source

    def _download_source(self, uri: str) -> None:
        target = self.layout.source
        if uri.endswith(".zip"):
            archive = self.layout.root / "source.zip"
            download_uri(uri, self.layout.root / "source-zip")
            found = next((self.layout.root / "source-zip").rglob("*.zip"), None)
            if found is None:
                raise JobFailedError("CREATE_FAILED", f"no zip at {uri}")
            shutil.move(str(found), archive)
            safe_extract_zip(archive, target)
        else:
            download_uri(uri, target)
        self._say(f"source from {uri}: {sum(1 for p in target.rglob('*') if p.is_file())} files")

    def _command(self, python: str) -> list[str]:
        spec = self.spec
        args: list[str] = []
        for parameter in spec.get("hyperparameter_list") or []:
            args += [f"--{parameter['parameter_name']}", str(parameter["parameter_value"])]
        algorithm = spec.get("algorithm")
        if algorithm:
            return [python, "-m", algorithm["entryModule"], *args]
        entry = spec["entry_point"]
        if spec.get("use_torchrun"):
            return [
                python,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={int(spec.get('nproc_per_node') or 1)}",
                entry,
                *args,
            ]
        if entry.endswith(".sh"):
            return ["bash", entry, *args]
        return [python, entry, *args]

    def _environment(self) -> dict[str, str]:
        spec, layout = self.spec, self.layout
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAKER_")}
        hps = {
            p["parameter_name"]: str(p["parameter_value"])
            for p in spec.get("hyperparameter_list") or []
        }
        datasets = []
        for dataset in spec.get("dataset_list") or []:
            path = layout.datasets / dataset["dataset_name"]
            env[f"EM_DATASET_{env_name(dataset['dataset_name'])}"] = str(path)
            datasets.append({**_camel_dataset(dataset), "path": str(path)})
        for key, value in hps.items():
            env[f"EM_HP_{env_name(key)}"] = value
        tensorboard = self.store.root / "tensorboard" / self.job["appKey"] / self.training_id
        tensorboard.mkdir(parents=True, exist_ok=True)
        env.update(
            {
                "EM_HPS": json.dumps(hps),
                "EM_DATASETS": json.dumps(datasets),
                "EM_SOURCE_DIR": str(layout.source),
                "EM_ENTRY_POINT": spec.get("entry_point") or "",
                "EM_MODEL_DIR": str(layout.model),
                "EM_CHECKPOINT_INPUT_DIR": str(layout.checkpoint_input),
                "EM_CHECKPOINT_DIR": str(layout.checkpoint),
                "EM_TENSORBOARD_LOG_DIR": str(tensorboard),
                "EM_REGION": self.job["region"],
                "EM_APPKEY": self.job["appKey"],
                "EM_EXPERIMENT_ID": self.job["experimentId"],
                "EM_TRAINING_ID": self.training_id,
                "EM_METRICS_FILE": str(layout.root / "metrics.jsonl"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    # -- watching -------------------------------------------------------------------------

    def _watch(self, process: UserProcess, started: float) -> int:
        flavor = self.spec["flavor"]
        memory_limit = int(flavor["ram"]) * 2**20
        timeout = int(self.spec.get("timeout_minutes") or 43200) * 60
        limit = self.spec.get("data_storage_size")
        storage_limit = int(limit) * 10**9 if limit else None
        next_storage_check = 0.0
        while True:
            code = process.poll()
            if code is not None:
                return code
            if self.stop_requested.is_set():
                process.kill_tree()
                raise JobFailedError("STOPPED", "stopped by the user")
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                process.kill_tree()
                minutes = timeout // 60
                raise JobFailedError("FAIL_TRAIN", f"exceeded timeout of {minutes} minutes")
            used = process.memory_bytes()
            if used > memory_limit:
                process.kill_tree()
                raise JobFailedError(
                    "FAIL_TRAIN",
                    f"out of memory: the training used {used / 2**20:.0f} MiB, more than the "
                    f"{flavor['ram']} MiB of flavor {flavor['name']}; choose a larger flavor",
                )
            if storage_limit is not None and elapsed >= next_storage_check:
                next_storage_check = elapsed + STORAGE_CHECK_SECONDS
                on_disk = directory_bytes(self.layout.root)
                if on_disk > storage_limit:
                    process.kill_tree()
                    raise JobFailedError(
                        "FAIL_TRAIN",
                        f"data storage exceeded: {on_disk / 10**9:.2f} GB used of "
                        f"{limit} GB (dataStorageSize)",
                    )
            time.sleep(POLL_SECONDS)

    def _exit_reason(self, code: int) -> str:
        assert self.sink is not None
        self.sink.flush()
        tail = [line for line in self.sink.tail(TAIL_LINES) if line.strip()][-5:]
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals else str(-code)
            what = f"killed by signal {name}"
            if -code == signal.SIGKILL:
                what += " (out of memory, or killed from outside)"
        else:
            what = f"exit code {code}"
        last = " | ".join(tail) if tail else "no output"
        return f"the entry point ended with {what}; last lines: {last}"[:4000]

    # -- outputs --------------------------------------------------------------------------

    def _upload_outputs(self) -> None:
        spec = self.spec
        pairs = [(self.layout.model, spec["model_upload_uri"])]
        if spec.get("check_point_upload_uri"):
            pairs.append((self.layout.checkpoint, spec["check_point_upload_uri"]))
        for src, uri in pairs:
            store, prefix = open_uri(uri)
            for path in sorted(p for p in src.rglob("*") if p.is_file() and not p.is_symlink()):
                self._check_stop()
                key = "/".join(
                    filter(None, [prefix.rstrip("/"), path.relative_to(src).as_posix()])
                )
                store.upload_file(path, key)
                self.uploaded.append((store, key))
            self._say(f"uploaded {src.name} to {uri}")

    def _remove_partial_upload(self) -> None:
        for store, key in self.uploaded:
            try:
                store.remove(key)
            except Exception as exc:  # noqa: BLE001 - best effort, said in the log
                self._say(f"could not remove partial upload {key}: {exc}")
        if self.uploaded:
            self._say(f"removed {len(self.uploaded)} partially uploaded object(s)")
        self.uploaded.clear()

    # -- ending ---------------------------------------------------------------------------

    def _finish(self, status: str, reason: str | None) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill_tree()
        if status != "COMPLETE":
            self._remove_partial_upload()
        self._say(f"training ends {status}" + (f": {reason}" if reason else ""))
        outcome = {"status": status, "reason": reason, "at": datetime.now(UTC).isoformat()}
        # Durable first: the tick applies this if the report below never arrives.
        self.store.write(self.job["resultKey"], json.dumps(outcome).encode())
        if self.sink is not None:
            self.sink.close()
        try:
            self.control.report(status, reason)
        except Exception as exc:  # noqa: BLE001 - the tick settles it from the result file
            print(f"could not report {status}: {exc}", file=sys.stderr)
        shutil.rmtree(self.layout.root, ignore_errors=True)

    def _on_stop(self, signum: int, _frame: Any) -> None:
        self.stop_requested.set()
        if self.process is not None and self.process.poll() is None:
            threading.Thread(target=self.process.kill_tree, daemon=True).start()

    def _check_stop(self) -> None:
        if self.stop_requested.is_set():
            raise JobFailedError("STOPPED", "stopped by the user")

    def _say(self, message: str) -> None:
        if self.sink is not None:
            self.sink.write("driver", "stdout", f"[openmaker] {message}\n")
        print(f"[openmaker] {message}", flush=True)

    def _say_setup(self, line: str) -> None:
        if self.sink is not None:
            self.sink.write("setup", "stdout", line + "\n")

    def _write_log_meta(self) -> None:
        meta = {
            "trainingId": self.training_id,
            "trainingName": self.job["trainingName"],
            "useLog": bool(self.spec.get("use_log")),
        }
        self.store.write(
            self.job["logPrefix"].rstrip("/") + ".meta.json", json.dumps(meta).encode()
        )


def _camel_dataset(dataset: dict[str, Any]) -> dict[str, Any]:
    return {"datasetName": dataset["dataset_name"], "dataUri": dataset["data_uri"]}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m runners.training <training-id>", file=sys.stderr)
        return 2
    return TrainingDriver(args[0]).run()


if __name__ == "__main__":
    sys.exit(main())
