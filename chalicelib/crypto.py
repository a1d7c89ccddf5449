"""Secrets at rest: the values users give that must never be shown again (a gated Hugging
Face model's token, registry passwords) are stored encrypted with Fernet (AES-128-CBC and
HMAC-SHA256) under the platform's key, and decrypted only where a runner needs them.

The key is ``OPENMAKER_SECRET_KEY`` (a Fernet key, for a deployment that keeps it in a secret
manager) or the file ``$OPENMAKER_HOME/secret.key``, created 0600 on first use. Several keys
may be given, comma-separated, newest first: values are encrypted with the first and
decrypted with any, so a key can be rotated.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from chalicelib.config import get_settings

PREFIX = "enc:v1:"  # marks a stored value as encrypted
MASK = "********"  # what the API shows for a secret value


class SecretUnreadableError(Exception):
    """A stored secret that no configured key opens (the key was lost or replaced)."""


def key_file() -> Path:
    return get_settings().home / "secret.key"


def _keys() -> list[bytes]:
    configured = os.environ.get("OPENMAKER_SECRET_KEY", "").strip()
    if configured:
        return [part.strip().encode() for part in configured.split(",") if part.strip()]
    path = key_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(Fernet.generate_key())
    return [path.read_bytes().strip()]


def _box() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in _keys()])


def encrypt(value: str) -> str:
    """``value`` as it is stored: ``enc:v1:`` and a Fernet token."""
    return PREFIX + _box().encrypt(value.encode()).decode()


def decrypt(stored: str) -> str:
    """The value of a stored secret (a value stored in the clear comes back as it is)."""
    if not stored.startswith(PREFIX):
        return stored
    try:
        return _box().decrypt(stored[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        raise SecretUnreadableError("a stored secret cannot be decrypted with the key") from None


def is_encrypted(stored: str) -> bool:
    return stored.startswith(PREFIX)
