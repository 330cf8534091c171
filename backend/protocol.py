"""uvicorn's HTTP protocol with a deadline for the request head (what happens before the app sees a request).

uvicorn times out an idle keep-alive connection, but neither a connection that never sends a request
nor one that sends its request line and headers a byte at a time (a "slowloris" client: each byte
resets nothing, yet the connection is held open for as long as it trickles). On a shared server a
few hundred such connections use up the process's file descriptors. Here a connection must complete
the head of each request (request line and headers) within ``TOROID_HEADER_TIMEOUT`` seconds of
its opening or of the previous response; otherwise it is answered 408 and closed. Bodies are timed
by backend/guard.py.

Works for both of uvicorn's HTTP implementations: a request whose head is complete gets a new
``cycle``, so the deadline only checks whether the cycle changed since it was armed.
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


class _HeadDeadline:
    """Mixin over a uvicorn HTTP protocol: the deadline for each request head."""

    transport: asyncio.Transport
    cycle: Any
    loop: asyncio.AbstractEventLoop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = float(get_settings().header_timeout)
        self._head_timer: asyncio.TimerHandle | None = None
        self._armed_cycle: Any = None

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        if self._head_timeout > 0:
            self._armed_cycle = self.cycle
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_expired)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.cycle is not self._armed_cycle:
            return  # a request head arrived in time (its response re-arms the deadline)
        detail = json.dumps({"detail": f"the request's headers did not arrive within {self._head_timeout:g} s "
                                       "(TOROID_HEADER_TIMEOUT)"}).encode()
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(detail)).encode() + b"\r\nconnection: close\r\n\r\n" + detail)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)  # type: ignore[misc]


class H11HeadDeadline(_HeadDeadline, H11Protocol):
    pass


if HttpToolsProtocol is not None:
    class HttpToolsHeadDeadline(_HeadDeadline, HttpToolsProtocol):
        pass

    HTTP_PROTOCOL: type = HttpToolsHeadDeadline
else:  # pragma: no cover - uvicorn[standard] brings httptools
    HTTP_PROTOCOL = H11HeadDeadline
