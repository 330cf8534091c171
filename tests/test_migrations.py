"""Upgrading the schema keeps what is stored: a database at the first revision, with data, upgraded to head."""
from __future__ import annotations

import os

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text

from backend.db import MIGRATIONS

from .conftest import services_env


def alembic_config(connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade_keeps_data(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        conn.execute(text(
            "INSERT INTO networks (name, owner, visibility, architecture, dataset, dataset_options, source, tags, "
            "history, weights_hash, n_params, created_at) VALUES ('old', 'local', 'lab', '{\"kind\": \"mlp\"}', "
            "'digits', '{}', '{}', '[]', '[]', :h, 10, CURRENT_TIMESTAMP)"), {"h": "a" * 64})
        conn.execute(text(
            "INSERT INTO jobs (kind, params, inputs, status, progress, message, owner, cache_key, queue, attempts, "
            "created_at) VALUES ('path', '{}', '[1]', 'queued', 0, 'queued', 'local', 'k', 'gpu', 0, CURRENT_TIMESTAMP)"))
    with engine.begin() as conn:  # an answered Idempotency-Key of before 0008 (it stored the whole answer)
        command.upgrade(alembic_config(conn), "0007")
        conn.execute(text("INSERT INTO idempotency_keys (owner, key, fingerprint, status_code, response, created_at) "
                          "VALUES ('local', 'k1', :f, 202, '{\"id\": 1, \"kind\": \"path\"}', CURRENT_TIMESTAMP)"),
                     {"f": "f" * 64})
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    with engine.connect() as conn:  # 0008: the key keeps the id of the job it made, not the answer
        assert conn.execute(text("SELECT status_code, resource_id FROM idempotency_keys")).one() == (202, 1)
        assert "response" not in {c["name"] for c in inspect(conn).get_columns("idempotency_keys")}
    with engine.connect() as conn:
        row = conn.execute(text("SELECT name, weights_hash, weights_bytes FROM networks")).one()
        assert row == ("old", "a" * 64, 0)
        job = conn.execute(text("SELECT status, visibility, fanout FROM jobs")).one()
        assert job == ("queued", "lab", 0)
        assert "users" in inspect(conn).get_table_names()
    with engine.connect() as conn:  # the tables the code declares are exactly those the migrations made
        from alembic.autogenerate import compare_metadata
        from alembic.runtime.migration import MigrationContext

        from backend.models import Base

        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    with engine.begin() as conn:  # the database counts changes of networks from the first upgrade on
        before = conn.execute(text("SELECT version FROM table_versions WHERE name = 'networks'")).scalar()
        conn.execute(text("UPDATE networks SET name = 'renamed'"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM table_versions WHERE name = 'networks'")).scalar() == before + 1
    with engine.begin() as conn:  # and back down, for a rollback
        command.downgrade(alembic_config(conn), "base")
    with engine.connect() as conn:
        assert "networks" not in inspect(conn).get_table_names()
    engine.dispose()


def test_sqlite_upgrade_keeps_data(tmp_path):
    upgrade_keeps_data(f"sqlite:///{tmp_path / 'old.db'}")


def test_postgresql_upgrade_keeps_data():
    env = services_env(f"toroid_migrate_{os.getpid()}", flush_redis=False)
    url = env["TOROID_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
    upgrade_keeps_data(url)
