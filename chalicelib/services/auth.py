"""Appkeys (projects) and access tokens; tokens are random and stored as SHA-256 digests."""

from __future__ import annotations

import hashlib
import secrets
import string
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import bindparam, select

from chalicelib.errors import ForbiddenError, NotFoundError, UnauthorizedError
from chalicelib.store.db import Database
from chalicelib.store.models import AccessToken, Project

_APPKEY_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Credentials:
    appkey: str
    token: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_from_headers(headers: Mapping[str, str]) -> str | None:
    """The bearer token of ``x-nhn-authorization`` or the raw ``X-EasyMaker-Token``."""
    direct = headers.get("x-easymaker-token")
    if direct:
        return direct.strip()
    value = headers.get("x-nhn-authorization") or headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("authorization header must be 'Bearer <token>'")
    return token.strip()


# Token digest -> (appkey, monotonic expiry). Tokens are never reissued for another appkey,
# so a cached positive answer can only become stale by revocation, within TOKEN_CACHE_SECONDS.
TOKEN_CACHE_SECONDS = 10.0
_TOKEN_CACHE_MAX = 4096
_token_cache: dict[str, tuple[str, float]] = {}
_TOKEN_OWNER = select(AccessToken.appkey).where(AccessToken.token_hash == bindparam("digest"))


def _owner_of(database: Database, digest: str) -> str | None:
    cached = _token_cache.get(digest)
    now = time.monotonic()
    if cached is not None and cached[1] > now:
        return cached[0]
    with database.engine.connect() as connection:
        owner = connection.execute(_TOKEN_OWNER, {"digest": digest}).scalar_one_or_none()
    if owner is not None:
        if len(_token_cache) >= _TOKEN_CACHE_MAX:
            _token_cache.clear()
        _token_cache[digest] = (owner, now + TOKEN_CACHE_SECONDS)
    return owner


def forget_cached_tokens() -> None:
    _token_cache.clear()


def authenticate(database: Database, appkey: str, headers: Mapping[str, str]) -> str:
    """Return the appkey the request may act on, or raise 401/403."""
    token = token_from_headers(headers)
    if not token:
        raise UnauthorizedError(
            "missing access token: send 'x-nhn-authorization: Bearer <token>' "
            "or 'X-EasyMaker-Token: <token>'"
        )
    owner = _owner_of(database, hash_token(token))
    if owner is None:
        raise UnauthorizedError("invalid access token")
    if owner != appkey:
        raise ForbiddenError(f"the access token does not grant access to appkey {appkey}")
    return owner


def new_appkey() -> str:
    return "".join(secrets.choice(_APPKEY_ALPHABET) for _ in range(20))


def create_project(database: Database, name: str = "default", appkey: str | None = None) -> str:
    appkey = appkey or new_appkey()
    with database.session() as session:
        session.add(Project(appkey=appkey, name=name))
    return appkey


def create_token(database: Database, appkey: str, description: str = "") -> str:
    """Issue a new token for ``appkey``; the clear token is returned once and never stored."""
    token = "omk_" + secrets.token_urlsafe(32)
    with database.session() as session:
        if session.get(Project, appkey) is None:
            raise NotFoundError(f"appkey {appkey} not found")
        session.add(
            AccessToken(
                id=str(uuid.uuid4()),
                appkey=appkey,
                token_hash=hash_token(token),
                description=description,
            )
        )
    return token


def list_projects(database: Database) -> list[tuple[str, str, int]]:
    """(appkey, name, number of tokens) of every project."""
    with database.session() as session:
        projects = session.scalars(select(Project).order_by(Project.created_at)).all()
        tokens = session.scalars(select(AccessToken)).all()
        return [
            (p.appkey, p.name, sum(1 for t in tokens if t.appkey == p.appkey)) for p in projects
        ]
