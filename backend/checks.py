"""Expensive checks off the API's threads: what costs CPU time before a request can be answered runs
beside the API, at most ``TOROID_CHECKS_PER_USER`` of one user's at once (one more is answered 429 at
once), so that the API's own threads (database work, ``/api/health``) never wait for them and one
user's burst cannot hold up everyone else's.

- The heavy check of an architecture (a layer graph's trace, its sizes on the ``meta`` device) runs in
  ``TOROID_CHECK_PROCESSES`` processes of its own (started on first use), so it does not even share the
  API's interpreter lock; what it found (the normal form and the sizes) is remembered in the API process
  (nets.remember), where the steps that follow find it done. 0 processes: in the threads below.
- What follows and needs the API process's objects (an upload's parse, its model built and its weights
  loaded) runs in ``TOROID_CHECK_THREADS`` threads of its own, apart from the API's threads.

Cheap bounds come first and stay on the request's path (a graph's layer count and nesting, every
parameter's range: workers/landscape/graphs.py, params.py): a spec over them is refused before any trace.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
from collections import Counter
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, AsyncIterator, Callable, TypeVar

from workers.landscape import nets

from .config import get_settings
from .errors import Invalid, TooMany

T = TypeVar("T")
log = logging.getLogger("toroid.checks")
_lock = threading.Lock()
_in_flight: Counter[str] = Counter()


@lru_cache
def _threads(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(n, 1), thread_name_prefix="toroid-check")


@lru_cache
def _processes(n: int) -> ProcessPoolExecutor:
    # spawned, not forked: the API process has threads (a fork copies their locks in whatever state)
    return ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"))


def in_flight(user: str) -> int:
    with _lock:
        return _in_flight[user]


def _release(user: str) -> None:
    with _lock:
        _in_flight[user] -= 1
        if _in_flight[user] <= 0:
            del _in_flight[user]


@asynccontextmanager
async def slot(user: str) -> AsyncIterator[Callable[..., Any]]:
    """One of ``user``'s check slots (429 when all are taken) for the block; gives ``run(fn, *args)``, which
    runs ``fn`` in the checks' threads. Work the block started counts until it ends, also when the
    request went away meanwhile."""
    limit = max(get_settings().checks_per_user, 1)
    with _lock:
        if _in_flight[user] >= limit:
            raise TooMany(f"{user} has {limit} expensive checks in flight (architectures being "
                                     "traced and sized), the limit (TOROID_CHECKS_PER_USER); wait for them to end")
        _in_flight[user] += 1
    pending: list = []

    async def run(fn: Callable[..., T], *args: Any, executor: Executor | None = None) -> T:
        future = (executor or _threads(get_settings().check_threads)).submit(fn, *args)
        pending.append(future)
        return await asyncio.wrap_future(future)

    try:
        yield run
    finally:
        left = [f for f in pending if not f.done()]
        if not left:
            _release(user)
        else:  # the request went away while its work runs: the slot is free when that work ends
            count = [len(left)]

            def done(_f) -> None:
                with _lock:
                    count[0] -= 1
                    last = count[0] == 0
                if last:
                    _release(user)

            for f in left:
                f.add_done_callback(done)


async def run(user: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the checks' threads, in one of ``user``'s slots."""
    async with slot(user) as run_:
        return await run_(fn, *args)


_trace_lock = threading.Lock()


def _architecture(spec: Any, input_shape: tuple[int, ...] | None, n_classes: int | None):
    """In a check process (one task at a time), or in a check thread under a lock: the normal form of
    ``spec`` and, given a data set's shape, its sizes. (Two torch.fx traces at once in one process can
    fail: "module is not installed as a submodule", seen with 16 concurrent submits.)"""
    with _trace_lock:
        normal = nets.normalize_spec(spec)
        return normal, (nets.spec_size(normal, input_shape, n_classes) if input_shape is not None else None)


async def architecture(run_: Callable[..., Any], spec: Any, input_shape: tuple[int, ...] | None = None,
                       n_classes: int | None = None) -> dict[str, Any] | None:
    """The heavy check of ``spec`` (in a slot's ``run_``): its normal form, traced and sized in a check
    process, remembered in this one. Raises nets.SpecError as ``nets.normalize_spec`` would; None when the
    check itself failed otherwise (the request's own steps then check the spec as they always did)."""
    n = get_settings().check_processes
    try:
        try:
            normal, sizes = await run_(_architecture, spec, input_shape, n_classes,
                                       executor=_processes(n) if n > 0 else None)
        except BrokenProcessPool:  # a check process died (killed, out of memory): a fresh pool next time
            _processes.cache_clear()
            normal, sizes = await run_(_architecture, spec, input_shape, n_classes)
    except nets.SpecError:
        raise
    except Exception:  # noqa: BLE001 - not a verdict on the spec: the request's own steps check it as before
        log.warning("the heavy check of an architecture failed; left to the request", exc_info=True)
        return None
    nets.remember(spec, normal, input_shape, n_classes, sizes)
    return normal


async def _architecture_or_400(run_, arch) -> None:
    """The heavy check of ``arch`` (the arguments of ``architecture``, or None: nothing to check); a spec
    that fails it is the caller's mistake."""
    if arch is None:
        return
    try:
        await architecture(run_, *arch)
    except nets.SpecError as exc:
        raise Invalid(f"architecture: {exc}") from None


async def job(user: str, kind: str, params: Any) -> None:
    """A job's checks that need no database and cost CPU time (a train job's own architecture), ahead of
    ``jobs.submit``, in one of ``user``'s slots; nothing for kinds that take no architecture."""
    from . import jobs

    if not jobs.heavy(kind):
        return
    async with slot(user) as run_:
        await _architecture_or_400(run_, jobs.architecture_of(params))
        await run_(jobs.precheck, kind, params)


async def upload(user: str, meta: str, filename: str, blob: bytes):
    """An upload parsed and checked (uploads.prepare), its architecture's heavy check first, in one of
    ``user``'s slots."""
    from . import uploads

    async with slot(user) as run_:
        await _architecture_or_400(run_, uploads.architecture_of(meta))
        return await run_(uploads.prepare, meta, filename, blob)

