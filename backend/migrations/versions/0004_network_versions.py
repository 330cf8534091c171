"""table_versions: a counter the database bumps whenever the networks table changes (triggers), so
that an API process can tell in one cheap read whether its cached network list is still right; an
index on jobs.result_id (a result's readers are found through its jobs); jobs indexed by
(cache_key, id) instead of cache_key alone.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 06:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# PostgreSQL: a deferred constraint trigger runs at commit, so the counter's row is locked only for the
# last moment of a writing transaction (no deadlock with other row locks) and a reader that sees the new
# count sees the new rows too. SQLite has a single writer; plain row triggers do.
PG_UP = [
    """CREATE FUNCTION toroid_bump_networks_version() RETURNS trigger AS $$
    BEGIN
        UPDATE table_versions SET version = version + 1 WHERE name = 'networks';
        RETURN NULL;
    END $$ LANGUAGE plpgsql""",
    """CREATE CONSTRAINT TRIGGER networks_version AFTER INSERT OR UPDATE OR DELETE ON networks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION toroid_bump_networks_version()""",
]
PG_DOWN = ["DROP TRIGGER IF EXISTS networks_version ON networks",
           "DROP FUNCTION IF EXISTS toroid_bump_networks_version()"]
SQLITE_UP = [
    f"""CREATE TRIGGER networks_version_{event.lower()} AFTER {event} ON networks
    BEGIN UPDATE table_versions SET version = version + 1 WHERE name = 'networks'; END"""
    for event in ("INSERT", "UPDATE", "DELETE")
]
SQLITE_DOWN = [f"DROP TRIGGER IF EXISTS networks_version_{e}" for e in ("insert", "update", "delete")]


def upgrade() -> None:
    versions = op.create_table(
        'table_versions',
        sa.Column('name', sa.String(length=50), nullable=False),
        sa.Column('version', sa.BigInteger(), nullable=False, server_default='0'),
        sa.PrimaryKeyConstraint('name'),
    )
    op.bulk_insert(versions, [{'name': 'networks', 'version': 0}])
    postgres = op.get_bind().dialect.name == 'postgresql'
    for statement in PG_UP if postgres else SQLITE_UP:
        op.execute(statement)
    op.create_index('ix_jobs_result_id', 'jobs', ['result_id'], unique=False)
    # the cache's question "the newest finished job with this key" walks (cache_key, id) backwards and
    # stops at once, however many answers a key has had
    op.drop_index('ix_jobs_cache_key', table_name='jobs')
    op.create_index('ix_jobs_cache_key_id', 'jobs', ['cache_key', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_jobs_cache_key_id', table_name='jobs')
    op.create_index('ix_jobs_cache_key', 'jobs', ['cache_key'], unique=False)
    op.drop_index('ix_jobs_result_id', table_name='jobs')
    postgres = op.get_bind().dialect.name == 'postgresql'
    for statement in PG_DOWN if postgres else SQLITE_DOWN:
        op.execute(statement)
    op.drop_table('table_versions')
