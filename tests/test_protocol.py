"""backend/protocol.py on both of uvicorn's HTTP implementations (httptools and h11), against a small ASGI
app in this process: request heads are limited in size (431) before the parser buffers them, and a
response the client does not take is dropped after TOROID_WRITE_TIMEOUT (issue 26)."""
from __future__ import annotations

import asyncio
import os
import socket
import threading
import time

import pytest
import uvicorn

from backend import config, protocol

from .conftest import free_port
from .helpers import drain

BIG = 16 * 1024 * 1024  # the large answer: far more than the kernel's socket buffers hold


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/big":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(BIG).encode())]})
        chunk = b"x" * (1024 * 1024)
        for i in range(BIG // len(chunk)):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < BIG // len(chunk) - 1})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(params=["httptools", "h11"])
def tiny(request, monkeypatch):
    cls = protocol.HttpToolsHeadDeadline if request.param == "httptools" else protocol.H11HeadDeadline
    monkeypatch.setenv("TOROID_WRITE_TIMEOUT", "1.5")
    monkeypatch.setenv("TOROID_MAX_HEADER_BYTES", "65536")
    monkeypatch.setenv("TOROID_HEADER_TIMEOUT", "20")
    config.get_settings.cache_clear()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=cls, log_level="warning",
                                           # h11 would refuse a head over 16 KiB by itself: the limit tested is ours
                                           lifespan="off", h11_max_incomplete_event_size=1 << 30))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield {"port": port, "server": server}
    server.should_exit = True
    thread.join(timeout=10)
    config.get_settings.cache_clear()


def get(port: int, path: str = "/", extra: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"\r\n")
        data = b""
        while not data.endswith(b"ok") and b"\r\n\r\n{" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def stream_head(port: int, pieces, limit: int) -> tuple[bytes, int]:
    """Send the head ``pieces`` (an iterable of bytes) until the server answers or stops taking them;
    returns (the answer, bytes sent). Never holds more than one piece in memory."""
    sent, answer = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            for piece in pieces:
                s.sendall(piece)
                sent += len(piece)
                if sent > limit:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    return answer, sent


def test_a_long_request_head_is_refused_431_before_it_is_buffered(tiny):
    """Before: 256 header lines of 1 MB were parsed (the server grew by their size) and answered, and one
    256 MB header line held the event loop. Now the head is counted as it arrives: 431 past 64 KiB."""
    port = tiny["port"]
    assert get(port).endswith(b"ok")
    assert get(port, extra=b"".join(b"X-Pad-%d: %s\r\n" % (i, b"y" * 1000) for i in range(60))).endswith(b"ok")

    megabyte = b"y" * (1024 * 1024)
    lines = (b"GET / HTTP/1.1\r\nHost: x\r\n" if i < 0 else b"X-Big-%d: %s\r\n" % (i, megabyte) for i in range(-1, 256))
    answer, sent = stream_head(port, lines, limit=300 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 431") and b"TOROID_MAX_HEADER_BYTES" in answer, answer[:200]
    assert sent < 64 * 1024 * 1024, f"{sent} bytes were taken before the refusal"

    # one header line of 256 MB, streamed 1 MB at a time, while another client's requests are served
    took: list[float] = []

    def health():
        for _ in range(10):
            start = time.monotonic()
            assert get(port).endswith(b"ok")
            took.append(time.monotonic() - start)
            time.sleep(0.05)

    reader = threading.Thread(target=health)
    reader.start()
    line = (b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " if i < 0 else megabyte for i in range(-1, 256))
    answer, sent = stream_head(port, line, limit=300 * 1024 * 1024)
    reader.join()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert sent < 64 * 1024 * 1024, f"{sent} bytes were taken before the refusal"
    assert len(took) == 10 and max(took) < 2.0, took

    # a head split anywhere between two reads is counted right: just under the limit is served
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"y" * (65536 - 60) + b"\r\n\r\n"
    assert len(head) <= 65536
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for i in range(0, len(head), 4093):
            s.sendall(head[i:i + 4093])
            time.sleep(0.001)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_client_that_never_reads_is_dropped_after_the_write_timeout(tiny):
    """Before: a client that asked for a large answer and never read it was held for ever (with the
    answer's bytes); 300 of them held 600 descriptors. Now the connection is aborted once its send buffer
    has not drained for TOROID_WRITE_TIMEOUT (1.5 s here)."""
    port = tiny["port"]
    before = open_fds()
    socks = []
    for _ in range(5):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    time.sleep(1.0)
    assert open_fds() >= before + 2 * len(socks)  # our end and the server's, for each client
    deadline = time.monotonic() + 15
    while open_fds() > before + len(socks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_fds() <= before + len(socks), "the server still holds the connections of clients that never read"
    for s in socks:
        got, ended = drain(s)
        assert ended and got < BIG, (ended, got)
    # a client that reads, slowly but steadily, gets the whole answer
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        got = 0
        while got < BIG:
            chunk = s.recv(1 << 20)
            assert chunk, "the answer was cut short"
            got += len(chunk)
            time.sleep(0.002)
