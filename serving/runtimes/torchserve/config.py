"""What the runtime is told to serve: command-line options, then environment variables.

Model parameters reach a pod as arguments and as SCREAMING_SNAKE_CASE environment variables
(DESIGN §5): every option falls back to the variable of its name (``--http-port`` <-
``HTTP_PORT``, ``--model-dir`` <- ``MODEL_DIR``).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_STARTUP_TIMEOUT_S = 120.0
# TorchServe's own rule for model names, kept short enough for a URL path segment.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


@dataclass(frozen=True)
class RuntimeConfig:
    model_name: str
    model_dir: Path
    host: str
    http_port: int
    workers: int
    max_body_bytes: int
    startup_timeout_s: float
    response_timeout_s: int
    work_dir: Path | None


def _option(
    parser: argparse.ArgumentParser,
    env: Mapping[str, str],
    flag: str,
    kind: type,
    default: object,
    help_text: str,
    required: bool = False,
) -> None:
    variable = flag.lstrip("-").replace("-", "_").upper()
    fallback = env.get(variable, default)
    parser.add_argument(
        flag,
        type=kind,
        default=fallback,
        required=required and fallback is None,
        help=f"{help_text} (env {variable})",
    )


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.runtimes.torchserve",
        description="Serve one PyTorch model with TorchServe behind OIP v1/v2 routes.",
    )
    _option(parser, env, "--model-name", str, None, "the model's name in every route", True)
    _option(
        parser, env, "--model-dir", Path, None, "a .mar, or weights + model.py + handler.py", True
    )
    _option(parser, env, "--host", str, "127.0.0.1", "address the pod's HTTP port binds to")
    _option(parser, env, "--http-port", int, 8080, "the pod's HTTP port (OIP v1/v2)")
    _option(parser, env, "--workers", int, 1, "TorchServe worker processes for the model")
    _option(parser, env, "--max-body-bytes", int, DEFAULT_MAX_BODY_BYTES, "largest request")
    _option(
        parser,
        env,
        "--startup-timeout-s",
        float,
        DEFAULT_STARTUP_TIMEOUT_S,
        "seconds TorchServe gets to load the model",
    )
    _option(parser, env, "--response-timeout-s", int, 120, "seconds one inference may take")
    _option(parser, env, "--work-dir", Path, None, "TorchServe's private files (default: temp)")
    return parser


def parse_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> RuntimeConfig:
    """Options from ``argv``, each falling back to its environment variable."""
    parser = build_parser(os.environ if env is None else env)
    args = parser.parse_args(list(argv))
    if not MODEL_NAME.fullmatch(args.model_name):
        parser.error("--model-name: letters, digits, '-' and '_', at most 128, not '-' first")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.max_body_bytes < 1:
        parser.error("--max-body-bytes must be positive")
    return RuntimeConfig(
        model_name=args.model_name,
        model_dir=args.model_dir,
        host=args.host,
        http_port=args.http_port,
        workers=args.workers,
        max_body_bytes=args.max_body_bytes,
        startup_timeout_s=args.startup_timeout_s,
        response_timeout_s=args.response_timeout_s,
        work_dir=args.work_dir,
    )
