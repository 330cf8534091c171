"""Database tables: networks, jobs and their results (schema changes go through Alembic)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATES = ("succeeded", "failed", "cancelled")


class User(Base):
    """A person or script using a shared server. Only a hash of the API token is stored."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    max_running_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: the server default
    max_stored_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Network(Base):
    __tablename__ = "networks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(100), default="local", index=True)
    visibility: Mapped[str] = mapped_column(String(20), default="lab")
    architecture: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset: Mapped[str] = mapped_column(String(100))
    dataset_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # optimizer + params, or {"kind": "uploaded"}
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    note: Mapped[str] = mapped_column(Text, default="", server_default="")  # free text, edited by people
    train_error: Mapped[float | None] = mapped_column(Float, nullable=True)
    test_error: Mapped[float | None] = mapped_column(Float, nullable=True)
    train_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    test_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the training curve: loaded only when read (the API reads it with plain SQL, jobs never need it)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, deferred=True)
    weights_hash: Mapped[str] = mapped_column(String(64), index=True)
    weights_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    n_params: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_cache_key_id", "cache_key", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    inputs: Mapped[list[int]] = mapped_column(JSON, default=list)  # network ids the job reads
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str] = mapped_column(String(100), default="local", index=True)
    visibility: Mapped[str] = mapped_column(String(20), default="lab")
    cache_key: Mapped[str] = mapped_column(String(64))  # indexed with id: the newest job of a key, at once
    cached_from: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result_id: Mapped[int | None] = mapped_column(ForeignKey("results.id", ondelete="SET NULL"), nullable=True,
                                                  index=True)
    queue: Mapped[str] = mapped_column(String(20), default="interactive")  # "interactive" | "batch"
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # last enqueued
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # worker alive
    fanout: Mapped[int] = mapped_column(Integer, default=0)  # chunks in flight on several workers (0: none)
    # an equal job queued or running when this one was submitted: this one waits for its answer
    attached_to: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    cost: Mapped[float | None] = mapped_column(Float, nullable=True)  # kinds' estimate, in FLOPs


class Result(Base):
    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TableVersion(Base):
    """How many times a table has changed, counted by the database's own triggers (migration 0004):
    the API keeps a table's serialized listing until its count moves."""

    __tablename__ = "table_versions"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class NetworkSource(Base):
    """A network made from others (a canonical form, a bend's midpoint: ``source["from"]``) and each of
    the networks it came from, directly or through others (migration 0009). Reading it requires reading
    every one of them; making one private makes it private too."""

    __tablename__ = "network_sources"

    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True)
    source_id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)


class IdempotentRequest(Base):
    """A write sent with an ``Idempotency-Key`` header (migrations 0005, 0008): a repeat with the same key
    from the same user is answered with ``status_code`` and the job or network ``resource_id``, read again
    (while ``status_code`` is None the first is still at work). The answer itself is never stored."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("owner", "key", name="uq_idempotency_owner_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the method, path and body
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    resource_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
