"""Secrets at rest: the platform key (a 0600 file or OPENMAKER_SECRET_KEY), rotation, and a
stored value no configured key opens."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from chalicelib import crypto
from chalicelib.config import reset_settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPENMAKER_HOME", str(tmp_path))
    monkeypatch.delenv("OPENMAKER_SECRET_KEY", raising=False)
    reset_settings()
    yield tmp_path
    reset_settings()


def test_a_key_file_is_made_0600_on_first_use_and_values_round_trip(home: Path) -> None:
    stored = crypto.encrypt("s3cr3t")

    assert stored.startswith(crypto.PREFIX) and "s3cr3t" not in stored
    assert crypto.decrypt(stored) == "s3cr3t"
    assert crypto.encrypt("s3cr3t") != stored  # a fresh IV each time
    mode = stat.S_IMODE(crypto.key_file().stat().st_mode)
    assert mode == 0o600
    assert crypto.decrypt("plain value") == "plain value"  # stored in the clear: as it is


def test_a_configured_key_wins_and_an_older_key_still_opens_old_values(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("OPENMAKER_SECRET_KEY", old)
    before = crypto.encrypt("token-1")

    monkeypatch.setenv("OPENMAKER_SECRET_KEY", f"{new},{old}")
    after = crypto.encrypt("token-2")

    assert crypto.decrypt(before) == "token-1" and crypto.decrypt(after) == "token-2"
    monkeypatch.setenv("OPENMAKER_SECRET_KEY", new)
    assert crypto.decrypt(after) == "token-2"
    with pytest.raises(crypto.SecretUnreadableError):
        crypto.decrypt(before)
    assert not crypto.key_file().exists()  # a configured key makes no file
