"""uvicorn's HTTP protocol with limits on what happens before the app sees a request, and on a client
that does not take its answer.

uvicorn times out an idle keep-alive connection, but neither a connection that never sends a request
nor one that sends its request line and headers a byte at a time (a "slowloris" client: each byte
resets nothing, yet the connection is held open for as long as it trickles). On a shared server a
few hundred such connections use up the process's file descriptors. Here a connection must complete
the head of each request (request line and headers) within ``TOROID_HEADER_TIMEOUT`` seconds of
its opening or of the previous response; otherwise it is answered 408 and closed. Bodies are timed
by backend/guard.py.

The head's size is counted here too, on the bytes as they arrive and before they reach the parser
(which would buffer a header line of any length, and re-scan it as it grows): past
``TOROID_MAX_HEADER_BYTES`` the request is answered 431 and the connection closed.

A response is written into the connection's send buffer; a client that never reads keeps it full, and
uvicorn then waits for it to drain for ever (a few hundred such clients use up the descriptors, and the
answers' bytes stay in memory). When the buffer stays above its high-water mark for
``TOROID_WRITE_TIMEOUT`` seconds without draining, the connection is aborted (its unsent bytes dropped).

Works for both of uvicorn's HTTP implementations: a request whose head is complete gets a new
``cycle``, so the deadline only checks whether the cycle changed since it was armed; the size counts the
bytes up to the head's end (the blank line), which both parsers agree on; the write timeout uses the
transport's flow control, which both receive.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import get_settings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional in uvicorn; uvicorn[standard] installs it
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

HEAD_END = b"\r\n\r\n"


class _HeadDeadline:
    """Mixin over a uvicorn HTTP protocol: the deadline and size limit of each request head, and the
    write timeout of each response."""

    transport: asyncio.Transport
    cycle: Any
    loop: asyncio.AbstractEventLoop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._head_timeout = float(settings.header_timeout)
        self._head_limit = int(settings.max_header_bytes)
        self._write_timeout = float(settings.write_timeout)
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._armed_cycle: Any = None
        self._head_bytes: int | None = 0  # bytes of the head so far; None once its end was seen
        self._head_tail = b""  # the last bytes seen, for a blank line split between two reads

    # ---- the head's deadline ----

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_bytes, self._head_tail = 0, b""
        if self._head_timeout > 0:
            self._armed_cycle = self.cycle
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_expired)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: bytes, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
        self.transport.close()

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.cycle is not self._armed_cycle:
            return  # a request head arrived in time (its response re-arms the deadline)
        self._refuse(b"408 Request Timeout", f"the request's headers did not arrive within {self._head_timeout:g} s "
                                             "(TOROID_HEADER_TIMEOUT)")

    # ---- the head's size ----

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is not None and self._head_limit > 0 and not self.transport.is_closing():
            end = (self._head_tail + data).find(HEAD_END)
            if end >= 0:  # the head ends here; the rest (a body, a pipelined request) is the parser's
                self._head_bytes += end + len(HEAD_END) - len(self._head_tail)
            else:
                self._head_bytes += len(data)
                self._head_tail = (self._head_tail + data)[-(len(HEAD_END) - 1):]
            if self._head_bytes > self._head_limit:
                self._head_bytes = None
                self._disarm_head_deadline()
                self._refuse(b"431 Request Header Fields Too Large",
                             f"the request's line and headers are longer than {self._head_limit} bytes "
                             "(TOROID_MAX_HEADER_BYTES)")
                return
            if end >= 0:
                self._head_bytes = None
        super().data_received(data)  # type: ignore[misc]

    # ---- the response's write timeout ----

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        if self._write_timeout > 0 and self._write_timer is None:
            self._write_timer = self.loop.call_later(self._write_timeout, self._write_expired)

    def resume_writing(self) -> None:
        self._cancel_write_timer()
        super().resume_writing()  # type: ignore[misc]

    def _cancel_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_expired(self) -> None:
        self._write_timer = None
        self.transport.abort()  # the client took nothing for TOROID_WRITE_TIMEOUT s: drop what is unsent

    # ---- the connection ----

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        self._cancel_write_timer()
        super().connection_lost(exc)  # type: ignore[misc]


class H11HeadDeadline(_HeadDeadline, H11Protocol):
    pass


if HttpToolsProtocol is not None:
    class HttpToolsHeadDeadline(_HeadDeadline, HttpToolsProtocol):
        pass

    HTTP_PROTOCOL: type = HttpToolsHeadDeadline
else:  # pragma: no cover - uvicorn[standard] brings httptools
    HTTP_PROTOCOL = H11HeadDeadline
