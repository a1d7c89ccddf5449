"""Errors of the Python runtime.

A request's fault is KServe's ``InvalidInput`` (rendered by the ModelServer as a 400 with
``{"error": message}``); a model that cannot be served is a :class:`ModelLoadError`, which
stops the process before it listens.
"""

from __future__ import annotations

from chalicelib.errors import OpenMakerError


class ModelLoadError(OpenMakerError):
    """The model directory cannot be served: missing, unreadable or refused (pickle weights)."""

    result_code = 42200
    http_status = 422
