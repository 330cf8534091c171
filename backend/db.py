"""SQLAlchemy 2 engine and sessions; the schema is owned by Alembic (backend/migrations).

Ways in:
- ``session_scope`` / ``new_session``: an ORM session in a transaction (workers, CLI);
- ``in_session``: the same for an API route, in one worker thread;
- ``read``: one pooled connection in autocommit for the API's hot reads, so that a read costs one
  round trip to the database (no BEGIN, no ROLLBACK, no ping) and no ORM bookkeeping.

A pooled PostgreSQL connection is pinged only when it has been idle for ``TOROID_DB_PING_AFTER``
seconds (a restarted server or a firewall may have dropped it); one that fails the ping is replaced
before anybody uses it. A ping on every checkout would cost a round trip per request.
"""
from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from .config import get_settings

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")


@lru_cache
def get_engine(url: str | None = None) -> Engine:
    settings = get_settings()
    url = url or settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.ensure_dirs()
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # API and worker processes share the file
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # The pool holds a connection for every API thread, so that none is opened and closed per request.
    engine = create_engine(url, pool_size=settings.api_threads + 2, max_overflow=10, pool_recycle=3600)
    _ping_when_idle(engine, settings.db_ping_after)
    return engine


def _ping_when_idle(engine: Engine, after: float) -> None:
    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, _proxy):
        last = record.info.get("checked_in")
        if last is not None and time.monotonic() - last > after:
            try:
                with dbapi_conn.cursor() as cur:
                    cur.execute("SELECT 1")
                if not dbapi_conn.autocommit:
                    dbapi_conn.rollback()
            except Exception as err:  # the pool throws this connection away and takes another
                raise exc.DisconnectionError(f"stale pooled connection: {err}") from err

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn, record):
        record.info["checked_in"] = time.monotonic()


@lru_cache
def _session_factory(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


def new_session() -> Session:
    return _session_factory()()


@contextmanager
def committing(session: Session) -> Iterator[Session]:
    """Commit ``session`` when the block ends; roll it back on an error."""
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _lock_id(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def lock(session: Session, *names: str) -> None:
    """Take the named locks (e.g. "owner:alice", "key:<cache key>") for the rest of the session's
    transaction: PostgreSQL advisory transaction locks; on SQLite the database's one write lock."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        for name in sorted(set(names)):  # one order everywhere: no deadlock between two lockers
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_lock_id(name)})")
    elif conn.dialect.name == "sqlite" and not conn.connection.dbapi_connection.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # (a writing transaction holds the write lock already)


@contextmanager
def locked(session: Session, *names: str) -> Iterator[Session]:
    """One transaction holding the named locks until it ends: committed when the block ends, rolled back
    on an error."""
    lock(session, *names)
    with committing(session):
        yield session


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = new_session()
    try:
        with committing(session):
            yield session
    finally:
        session.close()


async def in_session(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(session, *args)`` in one worker thread with its own session, closed (its connection back
    in the pool) before the thread is free again. The API's routes work this way: a request holds a
    pooled connection only while it runs in a thread, never while it waits for one (a request that held
    a connection while waiting for one of the few API threads could deadlock with requests holding
    the threads while waiting for a connection)."""
    def call() -> T:
        with new_session() as session:
            return fn(session, *args)

    return await run_in_threadpool(call)


@lru_cache
def _read_engine() -> Engine:
    return get_engine().execution_options(isolation_level="AUTOCOMMIT")


def read_connection() -> Connection:
    """A pooled connection in autocommit: every statement sees the newest committed data."""
    return _read_engine().connect()


async def read(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(connection, *args)`` in one worker thread with a read connection (the API's reads);
    like ``in_session``, the connection is back in the pool before the thread is."""
    def call() -> T:
        with read_connection() as conn:
            return fn(conn, *args)

    def call_once_more_if_disconnected() -> T:
        try:
            return call()
        except exc.DBAPIError as err:
            # The database dropped the connection (a restart) since it was last checked; the pool has
            # thrown its connections away. A read is safe to repeat, on a fresh one.
            if not err.connection_invalidated:
                raise
            return call()

    return await run_in_threadpool(call_once_more_if_disconnected)


def reset_engines() -> None:
    """Forget the engines and session factories (after the settings changed: tests, tools)."""
    for fn in (get_engine, _session_factory, _read_engine):
        fn.cache_clear()


def upgrade_database() -> None:
    """Bring the database schema to the newest Alembic revision (run at service start)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", get_settings().sqlalchemy_url.replace("%", "%%"))
    with get_engine().begin() as connection:
        if connection.dialect.name == "postgresql":  # API and workers may start together: one migrates
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7243507)")
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
