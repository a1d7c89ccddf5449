"""Idempotent creates: the first response to an ``X-Idempotency-Key`` is replayed on retries.

The record is written in the same transaction as the resource, so a create and its record
commit together; a concurrent duplicate loses on the primary key and replays the winner.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pydantic_core
from chalice import Response
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chalicelib.domain.common import utc_now
from chalicelib.errors import BadRequestError, IdempotencyConflictError, OpenMakerError
from chalicelib.store.db import Database
from chalicelib.store.models import IdempotencyRecord

RETENTION = timedelta(hours=24)
MAX_KEY_LENGTH = 255

Work = Callable[[Session], tuple[int, dict[str, Any]]]


def fingerprint(method: str, route: str, params: dict[str, str], body: bytes | None) -> str:
    """What makes two requests "the same": route, path parameters and the JSON body's meaning
    (whitespace and key order do not count)."""
    digest = hashlib.sha256()
    digest.update(f"{method} {route} {sorted(params.items())}\n".encode())
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True).encode()
    except ValueError:
        canonical = body or b""
    digest.update(canonical)
    return digest.hexdigest()


def _replay(record: IdempotencyRecord, fingerprint_: str) -> Response:
    if record.fingerprint != fingerprint_:
        raise IdempotencyConflictError(
            "X-Idempotency-Key was already used with a different request; use a new key"
        )
    return Response(
        body=record.response_body,
        status_code=record.status_code,
        headers={"Content-Type": "application/json", "X-Idempotent-Replay": "true"},
    )


def _find(database: Database, appkey: str, key: str) -> IdempotencyRecord | None:
    with database.session() as session:
        return session.get(IdempotencyRecord, (appkey, key))


def run_once(database: Database, appkey: str, key: str, fingerprint_: str, work: Work) -> Response:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise BadRequestError(f"X-Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters")
    existing = _find(database, appkey, key)
    if existing is not None:
        return _replay(existing, fingerprint_)
    try:
        with database.session() as session:
            status, payload = work(session)
            body = pydantic_core.to_json(payload, by_alias=True).decode()
            if status < 300:
                session.add(
                    IdempotencyRecord(
                        appkey=appkey,
                        key=key,
                        fingerprint=fingerprint_,
                        status_code=status,
                        response_body=body,
                    )
                )
                session.flush()
    except (IntegrityError, OpenMakerError):
        winner = _find(database, appkey, key)
        if winner is None:
            raise
        return _replay(winner, fingerprint_)
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json"})


def purge_expired(database: Database) -> int:
    """Forget records older than the retention window (called from ``tick``)."""
    with database.session() as session:
        result = session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.created_at < utc_now() - RETENTION)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
