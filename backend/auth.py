"""Users, API tokens and who may see what.

A token is shown once when it is made; the database keeps only its SHA-256. Scripts send
``Authorization: Bearer <token>``; the dashboard asks for the token once and keeps it in the browser.
Without authentication (the single-user default on 127.0.0.1) every request acts as ``local``, an admin.
Private networks, jobs and results are visible to their owner and to admins only; others get 404.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from fastapi import HTTPException, Request
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from .config import get_settings
from .db import read
from .models import User

LOCAL = "local"


@dataclass(frozen=True)
class Principal:
    name: str
    is_admin: bool
    max_running_jobs: int
    max_stored_bytes: int

    def can_read(self, obj) -> bool:
        return getattr(obj, "visibility", "lab") == "lab" or obj.owner == self.name or self.is_admin

    def can_write(self, obj) -> bool:
        return obj.owner == self.name or self.is_admin


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(session: Session, name: str, admin: bool = False) -> tuple[User, str]:
    """Add a user; returns it with its token (shown once, never stored)."""
    if not name or len(name) > 100 or not all(c.isalnum() or c in "-_.@" for c in name):
        raise ValueError("a user name is 1-100 letters, digits or -_.@")
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise ValueError(f"user {name!r} exists already; use `toroid user token {name}` for a new token")
    token = secrets.token_urlsafe(32)
    user = User(name=name, is_admin=admin, token_hash=hash_token(token))
    session.add(user)
    session.commit()
    return user, token


def new_token(session: Session, name: str) -> str:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise ValueError(f"no user {name!r}")
    token = secrets.token_urlsafe(32)
    user.token_hash = hash_token(token)
    session.commit()
    return token


def principal_of(user) -> Principal:
    """The Principal of a User (or of a row with the same columns)."""
    s = get_settings()
    return Principal(user.name, user.is_admin, user.max_running_jobs or s.max_running_jobs,
                     user.max_stored_bytes or s.max_stored_bytes)


def local_principal() -> Principal:
    s = get_settings()
    return Principal(LOCAL, True, s.max_running_jobs, s.max_stored_bytes)


def _user_by_token_hash(conn: Connection, token_hash: str, unfinished: dict | None = None) -> Principal | None:
    t = User.__table__
    columns = [t.c.name, t.c.is_admin, t.c.max_running_jobs, t.c.max_stored_bytes]
    if unfinished is not None:  # the user's unfinished jobs too, in the same query
        from .lifecycle import ACTIVE
        from .models import Job

        j = Job.__table__
        columns.append(select(func.count(j.c.id)).where(j.c.owner == t.c.name, j.c.status.in_(ACTIVE))
                       .scalar_subquery().label("unfinished"))
    row = conn.execute(select(*columns).where(t.c.token_hash == token_hash)).first()
    if row is None:
        return None
    if unfinished is not None:
        unfinished["count"] = int(row.unfinished)
    return principal_of(row)


async def authenticate(app, header: str, unfinished: dict | None = None) -> Principal:
    """Who sends ``Authorization: header`` to ``app`` (HTTPException 401 when a token is required and
    missing or wrong). Without a token on an open server it touches no database; with one it costs one
    indexed read. With ``unfinished`` (a dict) a token's read also puts the user's count of unfinished
    jobs there, as ``"count"`` (the front door's quota check of a submission, without a second read)."""
    required = getattr(app.state, "require_auth", False)
    if not required and not header:
        return local_principal()
    scheme, _, token = header.partition(" ")
    if (scheme.lower() != "bearer" or not token) and required:
        raise HTTPException(401, "this server requires an API token: send 'Authorization: Bearer <token>' "
                                 "(an admin makes one with `toroid user add NAME`)",
                            headers={"WWW-Authenticate": "Bearer"})
    user = await read(_user_by_token_hash, hash_token(token.strip()), unfinished) if token else None
    if user is None:
        if not required:  # an open single-user server: a stale token in a browser is no reason to refuse
            return local_principal()
        raise HTTPException(401, "unknown or revoked API token", headers={"WWW-Authenticate": "Bearer"})
    return user


async def current_user(request: Request) -> Principal:
    """FastAPI dependency: who is asking. A request with a body was authenticated by the front door
    (backend.guard) before its body was read; the others are here."""
    known = request.scope.get("state", {}).get("toroid_principal")
    if known is not None:
        return known
    return await authenticate(request.app, request.headers.get("authorization", ""))
