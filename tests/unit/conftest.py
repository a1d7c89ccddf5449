"""Unit tests run without network and without Ray."""

from __future__ import annotations

import socket
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest


def _refuse(*_args: Any, **_kwargs: Any) -> None:
    raise AssertionError("unit tests must not start Ray; use the in-process fake backend")


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    ray = sys.modules.get("ray")
    if ray is None:
        ray = types.ModuleType("ray")
        monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setattr(ray, "init", _refuse, raising=False)
    yield


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family == socket.AF_UNIX:
            return real_connect(self, address)
        raise AssertionError(f"unit tests must not use the network (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield
