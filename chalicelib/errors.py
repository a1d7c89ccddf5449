"""The single error root of OpenMaker.

Every error the control plane raises on purpose derives from :class:`OpenMakerError`. Each
subclass carries a stable ``result_code`` (the envelope's ``header.resultCode``) and the HTTP
status it maps to. The API edge (``chalicelib.api.envelope``) renders them once; domain and
service code never raises Chalice errors.
"""

from __future__ import annotations

from typing import Any


class OpenMakerError(Exception):
    """Base of every deliberate error. ``details`` is extra, secret-free context for clients."""

    result_code: int = 50000
    http_status: int = 500

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class BadRequestError(OpenMakerError):
    result_code = 40000
    http_status = 400


class ValidationError(BadRequestError):
    """Input that does not satisfy a field rule; ``details`` lists ``{field, rule, message}``."""

    result_code = 40001


class MalformedBodyError(BadRequestError):
    result_code = 40002


class UnauthorizedError(OpenMakerError):
    result_code = 40100
    http_status = 401


class ForbiddenError(OpenMakerError):
    result_code = 40300
    http_status = 403


class NotFoundError(OpenMakerError):
    result_code = 40400
    http_status = 404


class RouteNotFoundError(NotFoundError):
    result_code = 40401


class MethodNotAllowedError(OpenMakerError):
    result_code = 40500
    http_status = 405


class ConflictError(OpenMakerError):
    result_code = 40900
    http_status = 409


class InvalidTransition(ConflictError):  # noqa: N818 - the name STYLE.md gives it
    """A status change that the resource's transition table does not allow."""

    result_code = 40901

    def __init__(self, resource: str, current: str, target: str) -> None:
        super().__init__(f"{resource} cannot go from {current} to {target}")
        self.resource = resource
        self.current = current
        self.target = target


class StaleStateError(ConflictError):
    """A compare-and-set status update lost a race with another writer."""

    result_code = 40902


class DependentResourceError(ConflictError):
    """A delete refused because other resources still use this one."""

    result_code = 40903


class DuplicateNameError(ConflictError):
    result_code = 40904


class IdempotencyConflictError(ConflictError):
    result_code = 40905


class UnsupportedMediaTypeError(OpenMakerError):
    result_code = 41500
    http_status = 415


class TooManyRequestsError(OpenMakerError):
    result_code = 42900
    http_status = 429


class InternalError(OpenMakerError):
    result_code = 50000
    http_status = 500
