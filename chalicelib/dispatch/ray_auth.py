"""Ray's token authentication (``RAY_AUTH_MODE=token``): the bearer token to send to the
dashboard (Jobs API), found where Ray itself looks for it."""

from __future__ import annotations

import os
from pathlib import Path


def ray_auth_token() -> str | None:
    """``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``
    (Ray turns token auth on by itself when that file exists)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def ray_auth_headers() -> dict[str, str]:
    token = ray_auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}
