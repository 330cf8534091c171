"""job-kind registry: a job may attach to an equal queued or running one (single flight), carries its
cost estimate; queues renamed gpu -> batch, cpu -> interactive.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 09:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attached_to', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('cost', sa.Float(), nullable=True))
        batch_op.create_index('ix_jobs_attached_to', ['attached_to'], unique=False)
    op.execute("UPDATE jobs SET queue = 'batch' WHERE queue = 'gpu'")
    op.execute("UPDATE jobs SET queue = 'interactive' WHERE queue = 'cpu'")


def downgrade() -> None:
    op.execute("UPDATE jobs SET queue = 'gpu' WHERE queue = 'batch'")
    op.execute("UPDATE jobs SET queue = 'cpu' WHERE queue = 'interactive'")
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_attached_to')
        batch_op.drop_column('cost')
        batch_op.drop_column('attached_to')
