"""Per-job Python environments for a source folder's ``requirements.txt``, cached by content.

An environment is a venv with the runner's own packages visible (``--system-site-packages``,
as a framework image would have them) plus the job's requirements. Jobs with the same
requirements (and the same base Python) share one environment; the first job builds it
under a file lock, the others wait and reuse it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

READY = ".openmaker-ready"


class RequirementsError(Exception):
    """pip could not install the requirements; the message ends with pip's last lines."""


def env_key(requirements: bytes, base_python: str = sys.executable) -> str:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    digest = hashlib.sha256(requirements + f"\n#{base_python} {version}".encode())
    return digest.hexdigest()[:24]


def ensure_env(
    requirements: Path, cache_root: Path, *, log: Callable[[str], None] = print
) -> Path:
    """The python of an environment holding ``requirements`` (built once, then reused)."""
    key = env_key(requirements.read_bytes())
    target = cache_root / key
    python = target / "bin" / "python"
    if (target / READY).exists():
        log(f"reusing the environment for requirements.txt ({key})")
        return python
    cache_root.mkdir(parents=True, exist_ok=True)
    with open(cache_root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / READY).exists():
            log(f"reusing the environment for requirements.txt ({key})")
            return python
        shutil.rmtree(target, ignore_errors=True)
        log(f"creating an environment for requirements.txt ({key})")
        try:
            _run([sys.executable, "-m", "venv", "--system-site-packages", str(target)], log)
            _run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "-r",
                    str(requirements),
                ],
                log,
            )
        except RequirementsError:
            shutil.rmtree(target, ignore_errors=True)
            raise
        (target / READY).write_text(requirements.read_text(errors="replace"))
    return python


def _run(argv: list[str], log: Callable[[str], None]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAKER_")}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800, check=False)
    for line in (proc.stdout + proc.stderr).splitlines():
        log(line)
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise RequirementsError(f"requirements.txt could not be installed: {tail}")
