"""``python -m serving.runtimes.torchserve``: archive, start TorchServe, serve until a signal.

Exit status 2 with a one-line reason on stderr when the model directory or TorchServe
refuses the model (the pod fails instead of answering every request with an error); 1 when
TorchServe dies while serving; 0 after SIGTERM or SIGINT, with TorchServe stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from aiohttp import web

from serving.runtimes.torchserve.archive import prepare_model_store
from serving.runtimes.torchserve.config import RuntimeConfig, parse_config
from serving.runtimes.torchserve.errors import TorchServeRuntimeError
from serving.runtimes.torchserve.front import Front, Upstream
from serving.runtimes.torchserve.torchserve import TorchServe

SUPERVISE_INTERVAL_S = 0.5


def _log(message: str) -> None:
    print(f"openmaker torchserve runtime: {message}", file=sys.stderr, flush=True)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def start_torchserve(config: RuntimeConfig, work_dir: Path) -> TorchServe:
    """TorchServe up with the model registered and loaded; stopped again if that fails."""
    deadline = time.monotonic() + config.startup_timeout_s
    store = prepare_model_store(config.model_dir, config.model_name, work_dir)
    torchserve = TorchServe(store, work_dir, config.max_body_bytes)
    torchserve.start()
    try:
        torchserve.wait_started(deadline)
        torchserve.register(config.model_name, config.workers, config.response_timeout_s, deadline)
    except BaseException:
        torchserve.stop()
        raise
    return torchserve


async def serve(config: RuntimeConfig, torchserve: TorchServe) -> int:
    """Serve the front until a signal (0) or until TorchServe exits (1)."""
    upstream = Upstream(
        inference_url=torchserve.inference_url,
        inference_key=torchserve.keys().inference,
        ready_workers=lambda: torchserve.ready_workers(config.model_name),
    )
    runner = web.AppRunner(Front(config.model_name, upstream, config.max_body_bytes).app())
    await runner.setup()
    await web.TCPSite(runner, config.host, config.http_port).start()
    _log(f"serving {config.model_name!r} on http://{config.host}:{config.http_port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        while not stop.is_set():
            code = torchserve.exit_code()
            if code is not None:
                _log(f"TorchServe exited with status {code}; stopping")
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SUPERVISE_INTERVAL_S)
        _log("stopping on a signal")
        return 0
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    own_work_dir = config.work_dir is None
    work_dir = config.work_dir or Path(tempfile.mkdtemp(prefix="openmaker-torchserve-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    torchserve: TorchServe | None = None
    try:
        torchserve = start_torchserve(config, work_dir)
        return asyncio.run(serve(config, torchserve))
    except TorchServeRuntimeError as error:
        _log(error.message)
        return 2
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping TorchServe is not interrupted
        if torchserve is not None:
            torchserve.stop()
        if own_work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
