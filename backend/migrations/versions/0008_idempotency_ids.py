"""idempotency_keys keeps the id of what the first request made (resource_id), not its answer: a repeat is
answered by reading that job or network again, through the visibility rules. Stored answers are dropped
(a key with one and no id answers as a key whose job is gone: 404); downgrading cannot bring them back.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 03:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('idempotency_keys') as batch:
        batch.add_column(sa.Column('resource_id', sa.Integer(), nullable=True))
    # the id of what each answered key made, from its stored answer (both kinds answered {"id": ...})
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, response FROM idempotency_keys WHERE response IS NOT NULL")).all()
    import json

    for key_id, response in rows:
        try:
            made = json.loads(response).get("id")
        except (ValueError, AttributeError):
            made = None
        if isinstance(made, int):
            conn.execute(sa.text("UPDATE idempotency_keys SET resource_id = :r WHERE id = :i"), {"r": made, "i": key_id})
    with op.batch_alter_table('idempotency_keys') as batch:
        batch.drop_column('response')


def downgrade() -> None:
    with op.batch_alter_table('idempotency_keys') as batch:
        batch.add_column(sa.Column('response', sa.Text(), nullable=True))
        batch.drop_column('resource_id')
