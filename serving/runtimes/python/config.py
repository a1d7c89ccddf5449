"""What the runtime is told to serve: command-line arguments, then environment variables.

Model parameters reach a pod as arguments and as SCREAMING_SNAKE_CASE environment variables
(DESIGN §5): every option below falls back to the environment variable of its name
(``--max_new_tokens`` <- ``MAX_NEW_TOKENS``). KServe's own ModelServer options
(``--http_port``, ``--grpc_port``, ``--workers`` ...) are accepted too, spelled as KServe
spells them.
"""

from __future__ import annotations

import argparse
import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_NEW_TOKENS = 32


class Framework(enum.StrEnum):
    SKLEARN = "SKLEARN"
    HUGGING_FACE = "HUGGING_FACE"
    TENSORFLOW = "TENSORFLOW"


class Task(enum.StrEnum):
    """Hugging Face tasks this runtime serves on CPU."""

    SEQUENCE_CLASSIFICATION = "sequence_classification"
    TOKEN_CLASSIFICATION = "token_classification"
    FILL_MASK = "fill_mask"
    TEXT_GENERATION = "text_generation"
    TEXT2TEXT_GENERATION = "text2text_generation"


@dataclass(frozen=True)
class RuntimeConfig:
    model_name: str
    model_dir: Path
    framework: Framework
    task: Task | None
    http_port: int
    grpc_port: int
    enable_grpc: bool
    max_body_bytes: int
    max_new_tokens: int
    signature_name: str


def _env_default(env: Mapping[str, str], name: str, fallback: str | None) -> str | None:
    return env.get(name.upper(), fallback)


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The runtime's parser: KServe's ModelServer options plus the model's."""
    from kserve.model_server import parser as model_server_parser

    parser = argparse.ArgumentParser(
        prog="python -m serving.runtimes.python",
        description="Serve one model on KServe's ModelServer (OIP v1 and v2).",
        parents=[model_server_parser],
    )
    parser.add_argument("--model_dir", default=_env_default(env, "model_dir", None))
    parser.add_argument(
        "--framework",
        type=str.upper,
        choices=[f.value for f in Framework],
        default=_env_default(env, "framework", None),
    )
    parser.add_argument(
        "--task",
        type=lambda text: text.lower().replace("-", "_"),
        choices=[t.value for t in Task],
        default=_env_default(env, "task", None),
        help="Hugging Face task (required with --framework HUGGING_FACE).",
    )
    parser.add_argument(
        "--max_body_bytes",
        type=int,
        default=_env_default(env, "max_body_bytes", str(DEFAULT_MAX_BODY_BYTES)),
        help="Requests with a larger body get 413.",
    )
    parser.add_argument(
        "--max_new_tokens",
        type=int,
        default=_env_default(env, "max_new_tokens", str(DEFAULT_MAX_NEW_TOKENS)),
        help="Tokens a generation task adds at most.",
    )
    parser.add_argument(
        "--signature_name",
        default=_env_default(env, "signature_name", "serving_default"),
        help="TensorFlow SavedModel signature to serve.",
    )
    parser.set_defaults(
        model_name=_env_default(env, "model_name", "model"),
        enable_grpc=False,  # the gateway speaks HTTP; gRPC would need a second port per pod
    )
    return parser


def parse_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> RuntimeConfig:
    """Read the command line (``argv`` without the program name) over ``env``.

    Raises:
        SystemExit: on a missing or malformed option (argparse prints why).
    """
    env = os.environ if env is None else env
    parser = build_parser(env)
    args = parser.parse_args(list(argv))
    if not args.model_dir:
        parser.error("--model_dir (or MODEL_DIR) is required")
    if not args.framework:
        parser.error("--framework (or FRAMEWORK) is required")
    # argparse checks choices on the command line only, not on defaults from the environment
    if args.framework not in set(Framework):
        parser.error(f"unknown framework {args.framework!r}: one of {', '.join(Framework)}")
    if args.task is not None and args.task not in set(Task):
        parser.error(f"unknown task {args.task!r}: one of {', '.join(Task)}")
    framework = Framework(args.framework)
    if framework is Framework.HUGGING_FACE and not args.task:
        parser.error("--task (or TASK) is required for HUGGING_FACE")
    if args.max_body_bytes <= 0 or args.max_new_tokens <= 0:
        parser.error("--max_body_bytes and --max_new_tokens must be positive")
    return RuntimeConfig(
        model_name=args.model_name,
        model_dir=Path(args.model_dir),
        framework=framework,
        task=Task(args.task) if args.task else None,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        enable_grpc=args.enable_grpc,
        max_body_bytes=args.max_body_bytes,
        max_new_tokens=args.max_new_tokens,
        signature_name=args.signature_name,
    )
