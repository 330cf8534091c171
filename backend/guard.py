"""The API's front door: one plain ASGI middleware, outermost, deciding what can be decided before a
request's body is read, and answering every unexpected error itself.

- **Who asks, before the body.** A request with a body under /api/ is authenticated from its headers
  (and its caller's quota looked at) first: without a valid token it is answered 401, over its quota
  429/413, and not one byte of its body is read (uvicorn stops reading the socket once 64 kB wait
  unread, then closes the connection). The route finds the caller in the request's state.
- **Bodies counted as they arrive**, chunked ones too: past the limit (uploads: the weights limit
  ``TOROID_MAX_UPLOAD_BYTES`` plus 1 MiB of multipart, any other body ``TOROID_MAX_JSON_BYTES``) the
  request is answered 413 and the rest is never read. A declared ``Content-Length`` over the limit is
  refused at once.
- **Stalled bodies**: nothing received for ``TOROID_BODY_STALL_TIMEOUT`` seconds, or a body not complete
  after ``TOROID_BODY_TIMEOUT``, is answered 408.
- **Unexpected errors** are answered as JSON 500 naming a request id (also in the log and in every
  answer's ``X-Request-ID`` header); the error does not reach the server, so it keeps the keep-alive
  connection open.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from urllib.parse import parse_qs

from sqlalchemy.engine import Connection
from starlette.exceptions import HTTPException

from . import lifecycle, networks
from .auth import Principal, authenticate
from .config import get_settings
from .db import read

log = logging.getLogger("toroid.api")
MULTIPART_SLACK = 1024 * 1024  # the meta part and multipart framing around an uploaded weights file
PRINCIPAL = "toroid_principal"  # where the caller waits in the request's state for current_user


class BodyRefused(HTTPException):
    """Raised from ``receive`` while the app reads a body (an HTTPException, so the app's handler answers
    it as JSON; FastAPI's body parsing lets HTTPExceptions through)."""

    def __init__(self, status: int, detail: str):
        super().__init__(status, detail, headers={"Connection": "close"})


def _unfinished_jobs(conn: Connection, owner: str) -> int:
    return lifecycle.unfinished(conn, owner)


def _stored_bytes(conn: Connection, owner: str) -> int:
    return networks.stored_bytes(conn, owner)


def _dry_run(scope) -> bool:
    """A job's dry run creates nothing, so no quota is looked at (the route validates and estimates only)."""
    if scope["path"].rstrip("/") != "/api/jobs":
        return False
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return any(v.lower() in ("true", "1", "yes", "on") for v in query.get("dry_run", []))


async def _quota_refusal(method: str, path: str, user: Principal, unfinished: int | None = None) -> tuple[int, str] | None:
    """The caller's quota, decided before its body is read (the route checks again when it writes);
    ``unfinished``: the caller's unfinished jobs when authentication already counted them."""
    if method == "POST" and path == "/api/jobs":
        n = unfinished if unfinished is not None else await read(_unfinished_jobs, user.name)
        if n >= user.max_running_jobs:
            return 429, (f"{user.name} has {n} unfinished jobs, the limit is {user.max_running_jobs}; wait for "
                         "some to end or cancel them")
    if method == "POST" and path == "/api/networks":
        used = await read(_stored_bytes, user.name)
        if used >= user.max_stored_bytes:
            return 413, (f"storage quota exceeded: {user.name} stores {used} bytes of weights, the limit is "
                         f"{user.max_stored_bytes}; delete networks first")
    return None


async def answer(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def _counted(receive, limit: int, stall: float, total: float):
    """``receive`` with the body's bytes counted against ``limit`` and its pace against the timeouts."""
    state = {"bytes": 0, "done": False, "deadline": time.monotonic() + total}

    async def counted_receive():
        if state["done"]:  # after the body: the app listens for a disconnect, untimed
            return await receive()
        wait = min(stall, state["deadline"] - time.monotonic())
        try:
            message = await asyncio.wait_for(receive(), timeout=max(wait, 0.0))
        except asyncio.TimeoutError:
            raise BodyRefused(408, f"the request body stalled (nothing for {stall:g} s, or not complete "
                                   f"after {total:g} s); send it at once") from None
        if message["type"] == "http.request":
            state["bytes"] += len(message.get("body", b""))
            if state["bytes"] > limit:
                raise BodyRefused(413, f"request body larger than the limit of {limit} bytes")
            state["done"] = not message.get("more_body", False)
        else:
            state["done"] = True
        return message

    return counted_receive


class Guard:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(6)
        started = False

        async def send_with_id(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            refusal = None
            headers = dict(scope["headers"])
            length = headers.get(b"content-length", b"")
            if (length and length != b"0") or b"transfer-encoding" in headers:
                settings = get_settings()
                path, method = scope["path"].rstrip("/"), scope["method"]
                upload = method == "POST" and path == "/api/networks"
                limit = settings.max_upload_bytes + MULTIPART_SLACK if upload else settings.max_json_bytes
                if length and (not length.isdigit() or int(length) > limit):
                    refusal = 413, f"request body larger than the limit of {limit} bytes"
                elif path.startswith("/api/"):
                    counted = {} if method == "POST" and path == "/api/jobs" else None  # one read for both
                    try:
                        user = await authenticate(scope["app"], headers.get(b"authorization", b"").decode("latin-1"),
                                                  counted)
                    except HTTPException as exc:
                        refusal = exc.status_code, exc.detail
                    else:
                        scope.setdefault("state", {})[PRINCIPAL] = user
                        refusal = None if _dry_run(scope) else await _quota_refusal(
                            method, path, user, (counted or {}).get("count"))
                if refusal is None:
                    receive = _counted(receive, limit, settings.body_stall_timeout, settings.body_timeout)
            if refusal is not None:
                extra = [(b"www-authenticate", b"Bearer")] if refusal[0] == 401 else []
                await answer(send_with_id, *refusal, headers=[(b"connection", b"close"), *extra])
                return
            await self.app(scope, receive, send_with_id)
        except BodyRefused as exc:  # raised where the app's handlers do not reach
            if not started:
                await answer(send_with_id, exc.status_code, exc.detail, headers=[(b"connection", b"close")])
        except Exception:  # noqa: BLE001 - every unexpected error ends here, answered, never re-raised
            log.exception("unhandled error in request %s: %s %s", request_id, scope.get("method"), scope.get("path"))
            if not started:
                await answer(send_with_id, 500, f"internal error; the server log has the details under request id "
                                                f"{request_id}")
            # else the answer was cut half-way: the server closes that connection, as it must
