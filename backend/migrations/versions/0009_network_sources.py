"""network_sources: each network made from others (a canonical form, a bend's midpoint: source "from")
and every network it came from, directly or through others. Reading it requires reading them; making one
private makes it private too. Filled from the stored networks' sources.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 04:00:00
"""
import json

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'network_sources',
        sa.Column('network_id', sa.Integer(), nullable=False),
        sa.Column('source_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['network_id'], ['networks.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('network_id', 'source_id'),
    )
    op.create_index('ix_network_sources_source_id', 'network_sources', ['source_id'])
    conn = op.get_bind()
    closure: dict[int, set[int]] = {}
    for network_id, source in conn.execute(sa.text("SELECT id, source FROM networks ORDER BY id")).all():
        if isinstance(source, str):
            try:
                source = json.loads(source)
            except ValueError:
                source = None
        made_from = source.get("from") if isinstance(source, dict) else None
        direct = {i for i in (made_from if isinstance(made_from, list) else [made_from])
                  if isinstance(i, int) and not isinstance(i, bool)}
        closure[network_id] = set(direct)
        for i in direct:  # (a source is older than what was made from it)
            closure[network_id] |= closure.get(i, set())
        for i in sorted(closure[network_id]):
            conn.execute(sa.text("INSERT INTO network_sources (network_id, source_id) VALUES (:n, :s)"),
                         {"n": network_id, "s": i})


def downgrade() -> None:
    op.drop_index('ix_network_sources_source_id', table_name='network_sources')
    op.drop_table('network_sources')
