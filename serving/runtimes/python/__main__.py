"""``python -m serving.runtimes.python``: load one model, then serve it until a signal.

Exit status 2 with a one-line reason on stderr when the options or the model are refused;
the ModelServer is not started then, so a supervisor sees the pod fail instead of a pod that
answers every request with an error.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import kserve

from serving.runtimes.python.config import Framework, RuntimeConfig, parse_config
from serving.runtimes.python.errors import ModelLoadError
from serving.runtimes.python.limits import BodySizeLimit


def build_model(config: RuntimeConfig) -> kserve.Model:
    """The model object for the configured framework (not loaded yet)."""
    if config.framework is Framework.SKLEARN:
        from serving.runtimes.python.sklearn_model import SklearnModel

        return SklearnModel(config.model_name, config.model_dir)
    if config.framework is Framework.HUGGING_FACE:
        from serving.runtimes.python.huggingface_model import HuggingFaceModel

        assert config.task is not None  # parse_config requires a task for HUGGING_FACE
        return HuggingFaceModel(
            config.model_name, config.model_dir, config.task, config.max_new_tokens
        )
    from serving.runtimes.python.tensorflow_model import TensorFlowModel

    return TensorFlowModel(config.model_name, config.model_dir, config.signature_name)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(sys.argv[1:] if argv is None else argv)
    model = build_model(config)
    try:
        model.load()
    except ModelLoadError as error:
        print(f"openmaker python runtime: {error.message}", file=sys.stderr)
        return 2
    from kserve.model_server import app

    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    server = kserve.ModelServer(
        http_port=config.http_port,
        grpc_port=config.grpc_port,
        enable_grpc=config.enable_grpc,
        workers=1,
    )
    server.start([model])
    return 0


if __name__ == "__main__":
    status = main()
    # The server has stopped: skip the interpreter's teardown of the KServe, torch and
    # TensorFlow modules (2 s and more), so a stopped pod frees its slot at once.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
