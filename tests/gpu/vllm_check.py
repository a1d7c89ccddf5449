"""The device check of the vLLM runtime, for a machine with a GPU and vLLM installed (it
installs nothing and needs no network): a GPU text_generation pod's command from
``serving.deploy.runtime_command`` run under ``serving.pods.PodSupervisor``, ready on its
health route, then OpenAI completions, with timings.

    python tests/gpu/vllm_check.py MODEL_DIR [--restart]

MODEL_DIR is a Hugging Face model folder with safetensors weights; when it has no
``config.json`` a tiny random GPT-2 (a byte-level BPE tokenizer trained on a few lines) is
built there first with transformers and tokenizers, which vLLM brings. The answers are
gibberish: this checks the path, not the model. ``OPENMAKER_VLLM_BIN`` names the vllm
executable when it is not on PATH. Also printed: what the paths the gateway sends today
(``/openai/v1/completions``, ``/v2/health/ready``) answer, and with ``--restart`` how long
the pod takes to come back after its runtime is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from chalicelib.objectstore.local import LocalFileStore  # noqa: E402
from runners.logsink import LogSink  # noqa: E402
from runners.nodejob import free_port  # noqa: E402
from serving.deploy import ModelSpec, health_path_for, runtime_command  # noqa: E402
from serving.pods import PodSupervisor  # noqa: E402

READY_SECONDS = 300.0
CORPUS = ["Hello world, this is a tiny model.", "The quick brown fox jumps over the lazy dog."]


def build_tiny_model(folder: Path) -> None:
    """A random 2-layer GPT-2 and its tokenizer, saved as safetensors."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 50, vocab_size=400, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    tokenizer.save_pretrained(folder)
    end = tokenizer.eos_token_id  # GPT-2's own 50256 is outside this vocabulary
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=128,  # 2 heads of 64: a head size every attention backend takes
        n_layer=2,
        n_head=2,
        bos_token_id=end,
        eos_token_id=end,
    )
    GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)


def wait_ready(pod: PodSupervisor, seconds: float, exits: int = 0) -> float:
    """Seconds until the health route answers 200; fails at an exit beyond ``exits``."""
    started = time.monotonic()
    while not pod.ready():
        if len(pod.exits) > exits:
            raise RuntimeError(f"the runtime exited {pod.exits[-1].code}")
        if time.monotonic() - started > seconds:
            raise TimeoutError(f"not ready after {seconds:.0f} s: {pod.status()}")
        time.sleep(0.5)
    return time.monotonic() - started


def post(url: str, body: dict[str, Any]) -> tuple[float, requests.Response]:
    started = time.perf_counter()
    reply = requests.post(url, json=body, timeout=60)
    return time.perf_counter() - started, reply


def check(pod: PodSupervisor, name: str, restart: bool) -> dict[str, object]:
    ready = wait_ready(pod, READY_SECONDS)
    result: dict[str, object] = {"argv": pod.argv, "ready_s": round(ready, 2)}
    base = f"http://127.0.0.1:{pod.port}"
    body = {"model": name, "prompt": "Hello world", "max_tokens": 16, "temperature": 0}
    seconds, reply = post(f"{base}/v1/completions", body)
    reply.raise_for_status()
    result["first_completion_s"] = round(seconds, 3)
    result["completion"] = reply.json()
    timings = [post(f"{base}/v1/completions", body)[0] for _ in range(8)]
    result["completion_mean_ms"] = round(1000 * sum(timings) / len(timings), 1)
    result["models"] = requests.get(f"{base}/v1/models", timeout=10).json()
    result["gateway_paths"] = {
        "/openai/v1/completions": post(f"{base}/openai/v1/completions", body)[1].status_code,
        "/v2/health/ready": requests.get(f"{base}/v2/health/ready", timeout=10).status_code,
    }
    if restart:
        pid = pod.status()["pid"]
        os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.5)
        killed = time.monotonic()
        wait_ready(pod, READY_SECONDS, exits=1)
        result["restart_ready_s"] = round(time.monotonic() - killed, 2)
        result["restarts"] = pod.restarts
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--restart", action="store_true", help="kill the runtime once")
    args = parser.parse_args()
    if not (args.model_dir / "config.json").exists():
        started = time.monotonic()
        build_tiny_model(args.model_dir)
        print(f"built a tiny GPT-2 in {args.model_dir} in {time.monotonic() - started:.1f} s")
    parameters = [
        ("task", "text_generation"),
        ("max_model_len", "128"),
        ("dtype", "float16"),
        ("gpu_memory_utilization", "0.3"),
        ("enforce_eager", "true"),
    ]
    spec = ModelSpec("tiny", "HUGGING_FACE", "file:///unused", gpus=1, parameters=parameters)
    port = free_port()
    argv, env = runtime_command(spec, args.model_dir.resolve(), port)
    with tempfile.TemporaryDirectory(prefix="vllm-check-") as logs:
        sink = LogSink(LocalFileStore(Path(logs)), "logs/pod/")
        pod = PodSupervisor(
            argv,
            port=port,
            env={**os.environ, **env},
            cwd=REPO_ROOT,
            sink=sink,
            source="tiny.0",
            health_path=health_path_for(spec),
        )
        pod.start()
        try:
            print(json.dumps(check(pod, spec.name, args.restart), indent=2))
            return 0
        except Exception as exc:  # noqa: BLE001 - the runtime's log says why
            print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            sink.flush()
            lines = [line for c in sorted(Path(logs).rglob("*.jsonl")) for line in c.open()]
            for line in lines[-60:]:
                print(json.loads(line)["body"], file=sys.stderr)
            return 1
        finally:
            pod.stop()
            sink.close()


if __name__ == "__main__":
    sys.exit(main())
