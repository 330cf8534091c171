"""networks.note: a free-text note per network (editable, shown on its page). (The queues were renamed
by 0006.)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 09:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('networks') as batch:
        batch.add_column(sa.Column('note', sa.Text(), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('networks') as batch:
        batch.drop_column('note')
