"""Serialized answers kept in an API process until the database says their table changed.

The database counts the changes of a table itself (triggers, ``models.TableVersion``); a reader reads
that count first, then (on a miss) the rows, so an entry is never older than the count it is filed
under. Each API process has its own cache; they agree because they all read the same count.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable

from sqlalchemy import select
from sqlalchemy.engine import Connection

from .models import TableVersion

VERSIONS = TableVersion.__table__


def table_version(conn: Connection, name: str) -> int:
    return conn.execute(select(VERSIONS.c.version).where(VERSIONS.c.name == name)).scalar_one()


class VersionedCache:
    """At most ``max_entries`` answers and ``max_bytes`` bytes, least recently used out first."""

    def __init__(self, table: str, max_entries: int = 256, max_bytes: int = 64 * 1024 * 1024):
        self.table, self.max_entries, self.max_bytes = table, max_entries, max_bytes
        self._entries: OrderedDict[Hashable, tuple[int, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, conn: Connection, key: Hashable, compute: Callable[[], bytes]) -> bytes:
        version = table_version(conn, self.table)  # before the rows: see the module's docstring
        key = (str(conn.engine.url), key)  # a process that talks to two databases (tests) keeps them apart
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == version:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
            self.misses += 1
        body = compute()
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1])
            if len(body) <= self.max_bytes:
                self._entries[key] = (version, body)
                self._bytes += len(body)
            while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= len(dropped)
        return body
