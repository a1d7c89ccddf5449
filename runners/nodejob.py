"""One node's share of a training: its folders, staged inputs, command, environment, limits
and outputs. The driver uses one in place for a one-node training; a distributed training
has one per node, inside a Ray actor placed on that node's bundle (``runners.distributed``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalicelib.errors import OpenMakerError
from chalicelib.objectstore import open_uri, platform_store
from chalicelib.objectstore.archive import safe_extract_zip
from chalicelib.objectstore.transfer import download_uri
from runners.envs import RequirementsError, ensure_env
from runners.logsink import LogSink
from runners.process import UserProcess, directory_bytes

TAIL_LINES = 20


class JobFailedError(Exception):
    """The job ends in ``status`` with ``reason`` (raised from any stage)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Layout:
    """The job's folders on one node."""

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
        for path in (
            self.source,
            self.datasets,
            self.model,
            self.checkpoint_input,
            self.checkpoint,
        ):
            path.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Rendezvous:
    """Where the nodes of a distributed training meet (``None`` for one node)."""

    node_rank: int
    nodes: int
    master_addr: str
    master_port: int
    workers: tuple[str, ...]  # host:port of every node, for TF_CONFIG


def free_port() -> int:
    """A TCP port free on this host now (a node's rendezvous port)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def env_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def openmaker_home() -> Path:
    return Path(os.environ.get("OPENMAKER_HOME", str(Path.home() / ".openmaker")))


class NodeJob:
    def __init__(self, job: dict[str, Any], node_rank: int, sink: LogSink) -> None:
        self.job = job
        self.spec: dict[str, Any] = job["spec"]
        self.node_rank = node_rank
        self.sink = sink
        self.source_name = f"node{node_rank}"
        self.home = openmaker_home()
        self.layout = Layout(
            self.home / "work" / "trainings" / job["trainingId"] / f"node{node_rank}"
        )
        self.python = sys.executable
        self.process: UserProcess | None = None
        self.uploaded: list[tuple[Any, str]] = []

    def say(self, message: str) -> None:
        self.sink.write("driver", "stdout", f"[openmaker] node{self.node_rank}: {message}\n")

    # -- inputs ---------------------------------------------------------------------------

    def stage(self) -> None:
        """Fetch the source, build its environment, fetch datasets and the checkpoint."""
        spec, layout = self.spec, self.layout
        layout.create()
        limit = spec.get("data_storage_size")
        budget = int(limit) * 10**9 if limit else None
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
                    self.python = str(
                        ensure_env(requirements, self.home / "envs", log=self._setup)
                    )
            for dataset in spec.get("dataset_list") or []:
                target = layout.datasets / dataset["dataset_name"]
                used = download_uri(dataset["data_uri"], target, max_bytes=budget)
                budget = budget - used if budget is not None else None
                self.say(f"dataset {dataset['dataset_name']}: {used} bytes")
            if spec.get("check_point_input_uri"):
                download_uri(spec["check_point_input_uri"], layout.checkpoint_input)
        except RequirementsError as exc:
            raise JobFailedError("CREATE_FAILED", str(exc)) from None
        except OpenMakerError as exc:
            raise JobFailedError("CREATE_FAILED", f"{exc.message}") from None

    def _download_source(self, uri: str) -> None:
        target = self.layout.source
        if uri.endswith(".zip"):
            fetched = self.layout.root / "source-zip"
            download_uri(uri, fetched)
            archive = next(fetched.rglob("*.zip"), None)
            if archive is None:
                raise JobFailedError("CREATE_FAILED", f"no zip at {uri}")
            safe_extract_zip(archive, target)
            shutil.rmtree(fetched, ignore_errors=True)
        else:
            download_uri(uri, target)
        count = sum(1 for p in target.rglob("*") if p.is_file())
        self.say(f"source from {uri}: {count} files")

    def _setup(self, line: str) -> None:
        self.sink.write("setup", "stdout", line + "\n")

    # -- the command ----------------------------------------------------------------------

    def command(self, rendezvous: Rendezvous | None) -> list[str]:
        spec, python = self.spec, self.python
        args: list[str] = []
        for parameter in spec.get("hyperparameter_list") or []:
            args += [f"--{parameter['parameter_name']}", str(parameter["parameter_value"])]
        algorithm = spec.get("algorithm")
        if algorithm:
            return [python, "-m", algorithm["entryModule"], *args]
        entry = spec["entry_point"]
        if spec.get("use_torchrun"):
            nproc = f"--nproc_per_node={int(spec.get('nproc_per_node') or 1)}"
            if rendezvous is None:
                return [python, "-m", "torch.distributed.run", "--standalone", nproc, entry, *args]
            return [
                python,
                "-m",
                "torch.distributed.run",
                f"--nnodes={rendezvous.nodes}",
                f"--node_rank={rendezvous.node_rank}",
                nproc,
                f"--master_addr={rendezvous.master_addr}",
                f"--master_port={rendezvous.master_port}",
                entry,
                *args,
            ]
        if entry.endswith(".sh"):
            return ["bash", entry, *args]
        return [python, entry, *args]

    def environment(self, rendezvous: Rendezvous | None) -> dict[str, str]:
        """The job contract: every ``EM_*`` variable of the guide, and rendezvous variables."""
        spec, layout, job = self.spec, self.layout, self.job
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENMAKER_", "RAY_"))}
        hps = {
            p["parameter_name"]: str(p["parameter_value"])
            for p in spec.get("hyperparameter_list") or []
        }
        datasets = []
        for dataset in spec.get("dataset_list") or []:
            path = layout.datasets / dataset["dataset_name"]
            env[f"EM_DATASET_{env_name(dataset['dataset_name'])}"] = str(path)
            datasets.append(
                {
                    "datasetName": dataset["dataset_name"],
                    "dataUri": dataset["data_uri"],
                    "path": str(path),
                }
            )
        for key, value in hps.items():
            env[f"EM_HP_{env_name(key)}"] = value
        tensorboard = tensorboard_dir(job["appKey"], job["trainingId"])
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
                "EM_REGION": job["region"],
                "EM_APPKEY": job["appKey"],
                "EM_EXPERIMENT_ID": job["experimentId"],
                "EM_TRAINING_ID": job["trainingId"],
                "EM_METRICS_FILE": str(layout.root / "metrics.jsonl"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if rendezvous is not None:
            env.update(
                {
                    "MASTER_ADDR": rendezvous.master_addr,
                    "MASTER_PORT": str(rendezvous.master_port),
                    "NODE_RANK": str(rendezvous.node_rank),
                    "EM_NODE_RANK": str(rendezvous.node_rank),
                    "EM_NODE_COUNT": str(rendezvous.nodes),
                    "TF_CONFIG": json.dumps(
                        {
                            "cluster": {"worker": list(rendezvous.workers)},
                            "task": {"type": "worker", "index": rendezvous.node_rank},
                        }
                    ),
                }
            )
            if not spec.get("use_torchrun"):  # torchrun sets these per process itself
                env.update(
                    {
                        "WORLD_SIZE": str(rendezvous.nodes),
                        "RANK": str(rendezvous.node_rank),
                        "LOCAL_RANK": "0",
                    }
                )
        return env

    def start(self, rendezvous: Rendezvous | None) -> None:
        argv = self.command(rendezvous)
        self.say("running: " + " ".join(argv))
        self.process = UserProcess(
            argv,
            cwd=self.layout.source,
            env=self.environment(rendezvous),
            sink=self.sink,
            source=self.source_name,
        )

    # -- limits ---------------------------------------------------------------------------

    def limit_problem(self, check_storage: bool) -> str | None:
        """Why the process must be killed now (memory of the flavor, data storage size)."""
        assert self.process is not None
        flavor = self.spec["flavor"]
        used = self.process.memory_bytes()
        if used > int(flavor["ram"]) * 2**20:
            return (
                f"out of memory: node{self.node_rank} used {used / 2**20:.0f} MiB, more than "
                f"the {flavor['ram']} MiB of flavor {flavor['name']}; choose a larger flavor"
            )
        limit = self.spec.get("data_storage_size")
        if check_storage and limit:
            on_disk = directory_bytes(self.layout.root)
            if on_disk > int(limit) * 10**9:
                return (
                    f"data storage exceeded: {on_disk / 10**9:.2f} GB used of {limit} GB "
                    "(dataStorageSize)"
                )
        return None

    def exit_reason(self, code: int) -> str:
        self.sink.flush()
        tail = [line for line in self.sink.tail(TAIL_LINES) if line.strip()][-5:]
        if code < 0:
            name = (
                signal.Signals(-code).name
                if -code in {int(s) for s in signal.Signals}
                else str(-code)
            )
            what = f"was killed by signal {name}"
            if -code == signal.SIGKILL:
                what += " (out of memory, or killed from outside)"
        else:
            what = f"failed with exit code {code}"
        last = " | ".join(tail) if tail else "no output"
        where = (
            f" on node{self.node_rank}" if self.job["spec"].get("instance_count", 1) > 1 else ""
        )
        return f"the entry point {what}{where}; last lines: {last}"[:4000]

    # -- outputs --------------------------------------------------------------------------

    def upload(self, cancelled: Callable[[], bool]) -> None:
        """Publish the model (and checkpoints); stops between objects when ``cancelled``."""
        spec = self.spec
        pairs = [(self.layout.model, spec["model_upload_uri"])]
        if spec.get("check_point_upload_uri"):
            pairs.append((self.layout.checkpoint, spec["check_point_upload_uri"]))
        for src, uri in pairs:
            store, prefix = open_uri(uri)
            files = sorted(p for p in src.rglob("*") if p.is_file() and not p.is_symlink())
            for path in files:
                if cancelled():
                    raise JobFailedError("STOPPED", "stopped by the user during the upload")
                relative = path.relative_to(src).as_posix()
                key = f"{prefix.rstrip('/')}/{relative}" if prefix.strip("/") else relative
                store.upload_file(path, key)
                self.uploaded.append((store, key))
            self.say(f"uploaded {len(files)} file(s) from {src.name} to {uri}")

    def remove_partial_upload(self) -> None:
        for store, key in self.uploaded:
            try:
                store.remove(key)
            except Exception as exc:  # noqa: BLE001 - best effort, said in the log
                self.say(f"could not remove partial upload {key}: {exc}")
        if self.uploaded:
            self.say(f"removed {len(self.uploaded)} partially uploaded object(s)")
        self.uploaded.clear()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill_tree()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.layout.root, ignore_errors=True)


def tensorboard_dir(appkey: str, training_id: str) -> Path:
    """Where ``EM_TENSORBOARD_LOG_DIR`` points: the platform storage, read by TensorBoard."""
    return platform_store().root / "tensorboard" / appkey / training_id
