"""Writes a client may safely repeat, and writes answered as what they did.

- ``Idempotency-Key``: POST /api/jobs and POST /api/networks sent with this header (1-200 printable
  ASCII characters, e.g. a UUID, one per logical call and the same on its retries) are done once per user
  and key: a repeat is answered with what the first made (the same status, the job or network as it is
  now, read again through the visibility rules: one the caller may no longer read is a 404, and the
  header ``Idempotent-Replayed: true``); only the id of what was made is stored, never the answer. A
  repeat whose body differs is a 409, and one that arrives while the first is still at work waits for it
  (up to ``WAIT`` seconds, then 409: retry). A first attempt that failed with an error leaves nothing
  behind: its key may be used again. Keys are kept ``TOROID_IDEMPOTENCY_TTL`` seconds (expired ones of
  every user are deleted as new keys come).
- ``write``: a route's write in one worker thread and session, like ``db.in_session``, run once more on a
  fresh connection when the database had dropped the connection before anything was committed (a
  restarted PostgreSQL): nothing was applied, so repeating it is safe.
- ``committed_rows``: which rows of a model a session committed, so that a route whose write was
  committed answers with it even when the database connection died after the commit (the answer is then
  read again on a fresh connection) instead of a 500 that would make a client repeat it.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Awaitable, Callable, Iterator, TypeVar

from fastapi import HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import delete, event, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from .config import get_settings
from .db import new_session
from .models import IdempotentRequest, utcnow

HEADER = "idempotency-key"
KEY_HELP = "any unique string (e.g. a UUID) per logical request, the same on its retries"
WAIT = 30.0  # seconds a repeat waits for the first request with its key to finish
STALE = 600.0  # a claim this old without an answer was left by a process that died: it may be taken over
CLAIMED, BUSY = "claimed", "busy"
T = TypeVar("T")


async def write(fn: Callable[..., T], *args) -> T:
    """``fn(session, *args)`` in a worker thread (see the module's docstring)."""
    def call() -> T:
        for attempt in (1, 2):
            with new_session() as session:
                committing: list[bool] = []
                event.listen(session, "before_commit", lambda _s: committing.append(True))
                try:
                    return fn(session, *args)
                except DBAPIError as err:
                    if attempt == 2 or not err.connection_invalidated or committing:
                        raise
        raise AssertionError("unreachable")

    return await run_in_threadpool(call)


def request_key(request: Request) -> str | None:
    """The request's Idempotency-Key, or None; 400 when it is malformed."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    key = key.strip()
    if not 1 <= len(key) <= 200 or not all(33 <= ord(c) <= 126 for c in key):
        raise HTTPException(400, "Idempotency-Key must be 1 to 200 printable ASCII characters without spaces "
                                 "(e.g. a UUID), one per logical request")
    return key


def fingerprint(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _claim(db: Session, owner: str, key: str, fp: str):
    """CLAIMED (this request is the first), BUSY (the first is at work), or the first's (status, id made)."""
    now = utcnow()
    ttl = get_settings().idempotency_ttl
    db.execute(delete(IdempotentRequest).where(IdempotentRequest.created_at < now - timedelta(seconds=ttl)))
    db.add(IdempotentRequest(owner=owner, key=key, fingerprint=fp, created_at=now))
    try:
        db.commit()
        return CLAIMED
    except IntegrityError:
        db.rollback()
    first = db.scalar(select(IdempotentRequest).where(IdempotentRequest.owner == owner, IdempotentRequest.key == key))
    if first is None:  # released in between: try again
        return BUSY
    if first.fingerprint != fp:
        raise HTTPException(409, f"the Idempotency-Key {key!r} was used before for a different request; "
                                 "use a new key for each logical request")
    if first.status_code is not None:
        return first.status_code, first.resource_id
    created = first.created_at if first.created_at.tzinfo else first.created_at.replace(tzinfo=now.tzinfo)
    if (now - created).total_seconds() > STALE:  # its process died: this request takes it over
        taken = db.execute(update(IdempotentRequest).where(IdempotentRequest.id == first.id,
                                                           IdempotentRequest.status_code.is_(None),
                                                           IdempotentRequest.created_at == first.created_at)
                           .values(created_at=now))
        db.commit()
        if taken.rowcount == 1:
            return CLAIMED
    return BUSY


def _finish(db: Session, owner: str, key: str, status: int, resource_id: int | None) -> None:
    db.execute(update(IdempotentRequest).where(IdempotentRequest.owner == owner, IdempotentRequest.key == key)
               .values(status_code=status, resource_id=resource_id))
    db.commit()


def _release(db: Session, owner: str, key: str) -> None:
    db.execute(delete(IdempotentRequest).where(IdempotentRequest.owner == owner, IdempotentRequest.key == key,
                                               IdempotentRequest.status_code.is_(None)))
    db.commit()


async def idempotent(request: Request, owner: str, key: str | None, fp: str,
                     work: Callable[[], Awaitable[tuple[Response, int]]],
                     replay: Callable[[int, int], Awaitable[Response]]) -> Response:
    """``work()``'s answer, done once per (owner, key): see the module's docstring. ``work`` answers with
    the response and the id of what it made; ``replay(status, id)`` answers a repeat from that id (read
    again, as the caller may read it now)."""
    if key is None:
        return (await work())[0]
    deadline = time.monotonic() + WAIT
    while True:
        got = await write(_claim, owner, key, fp)
        if got == CLAIMED:
            break
        if isinstance(got, tuple):
            response = await replay(*got)
            response.headers["Idempotent-Replayed"] = "true"
            return response
        if time.monotonic() > deadline:
            raise HTTPException(409, f"a request with the Idempotency-Key {key!r} is still being processed; "
                                     "retry in a moment with the same key")
        await asyncio.sleep(0.2)
    try:
        response, made = await work()
    except BaseException:
        await write(_release, owner, key)
        raise
    await write(_finish, owner, key, response.status_code, made)
    return response


@contextmanager
def committed_rows(session: Session, model) -> Iterator[list[int]]:
    """Yield a list that holds the ids of the ``model`` rows ``session`` inserted and committed, in order."""
    flushed: list[int] = []
    committed: list[int] = []

    def after_flush(s, _context):
        flushed.extend(o.id for o in s.new if isinstance(o, model))

    def after_commit(_s):
        committed.extend(flushed)
        flushed.clear()

    def after_rollback(_s, _previous):
        flushed.clear()

    hooks = (("after_flush", after_flush), ("after_commit", after_commit), ("after_soft_rollback", after_rollback))
    for name, fn in hooks:
        event.listen(session, name, fn)
    try:
        yield committed
    finally:
        for name, fn in hooks:
            event.remove(session, name, fn)
