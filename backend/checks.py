"""Expensive checks off the API's threads: what costs CPU time before a request can be answered (an
upload's parse and build, a layer graph's trace and its sizes on the ``meta`` device) runs in a small
pool of its own (``TOROID_CHECK_THREADS``), at most ``TOROID_CHECKS_PER_USER`` of one user's at once;
one more is answered 429 at once. The API's own threads (database work, ``/api/health``) never wait for
these checks, and one user's burst cannot fill the pool for everyone else.

Cheap bounds come first and stay on the request's path (a graph's layer count and nesting, every
parameter's range: workers/landscape/graphs.py, params.py): a spec over them is refused before any
trace. The work done here is remembered per process (nets.normalize_spec, nets.spec_size), so the
database step that follows finds it done.
"""
from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, Callable, TypeVar

from fastapi import HTTPException

from .config import get_settings

T = TypeVar("T")
_lock = threading.Lock()
_in_flight: Counter[str] = Counter()


@lru_cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(threads, 1), thread_name_prefix="toroid-check")


def in_flight(user: str) -> int:
    with _lock:
        return _in_flight[user]


async def run(user: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the checks' pool for ``user``; 429 when ``user`` has the limit in flight already.
    A check counts until it ends, also when its caller went away meanwhile."""
    settings = get_settings()
    limit = max(settings.checks_per_user, 1)
    with _lock:
        if _in_flight[user] >= limit:
            raise HTTPException(429, f"{user} has {limit} expensive checks in flight (architectures being "
                                     "traced and sized), the limit (TOROID_CHECKS_PER_USER); wait for them to end")
        _in_flight[user] += 1

    def release(_future) -> None:
        with _lock:
            _in_flight[user] -= 1
            if _in_flight[user] <= 0:
                del _in_flight[user]

    try:
        future = _pool(settings.check_threads).submit(fn, *args)
    except BaseException:
        release(None)
        raise
    future.add_done_callback(release)
    return await asyncio.wrap_future(future)
