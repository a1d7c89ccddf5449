"""Runner callbacks: each job signs its reports with a token derived from a shared secret.

The secret lives in a file (0600) that the launcher creates and that the Ray nodes can read;
a job's token is ``HMAC-SHA256(secret, "{kind}:{id}")``, so a job can speak only for itself
and no token is ever placed in a job's submission, metadata or logs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from chalicelib.config import get_settings
from chalicelib.errors import UnauthorizedError

HEADER = "x-openmaker-runner-token"


def ensure_secret(path: Path | None = None) -> Path:
    """Create the secret file if it is missing (mode 0600) and return its path."""
    path = path or get_settings().runner_secret_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path


def _secret() -> bytes:
    return ensure_secret().read_bytes().strip()


def job_token(kind: str, job_id: str, secret: bytes | None = None) -> str:
    message = f"{kind}:{job_id}".encode()
    return hmac.new(secret or _secret(), message, hashlib.sha256).hexdigest()


def verify(kind: str, job_id: str, presented: str | None) -> None:
    """Raise ``UnauthorizedError`` unless ``presented`` is the token of this job."""
    if not presented or not hmac.compare_digest(presented, job_token(kind, job_id)):
        raise UnauthorizedError(f"runner token for {kind} {job_id[:64]} missing or wrong")
