"""networks.note: a free-text note per network (editable, shown on its page); jobs' queues renamed to
the two of issue 16: ``gpu`` -> ``batch`` and ``cpu`` -> ``interactive`` (queued jobs are re-sent to
their queue under the new name by the reconciler).

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-01 09:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0004'
branch_labels = None
depends_on = None

RENAMES = {"gpu": "batch", "cpu": "interactive"}


def upgrade() -> None:
    with op.batch_alter_table('networks') as batch:
        batch.add_column(sa.Column('note', sa.Text(), nullable=False, server_default=''))
    for old, new in RENAMES.items():
        op.execute(sa.text("UPDATE jobs SET queue = :new WHERE queue = :old").bindparams(new=new, old=old))


def downgrade() -> None:
    for old, new in RENAMES.items():
        op.execute(sa.text("UPDATE jobs SET queue = :old WHERE queue = :new").bindparams(new=new, old=old))
    with op.batch_alter_table('networks') as batch:
        batch.drop_column('note')
