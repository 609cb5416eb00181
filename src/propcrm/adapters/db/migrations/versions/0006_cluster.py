"""cluster — partition checkpoints and dead letters for NATS workers

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa
import propcrm.adapters.db.models  # noqa: F401


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def _seq():
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        'cluster_checkpoints',
        sa.Column('stream', sa.String(length=64), nullable=False),
        sa.Column('partition', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('seq', _seq(), nullable=False),
        sa.Column('state_seq', _seq(), nullable=False),
        sa.Column('context', sa.LargeBinary(), nullable=True),
        sa.Column('owner', sa.String(length=200), nullable=True),
        sa.Column('updated_at', propcrm.adapters.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('stream', 'partition', name=op.f('pk_cluster_checkpoints')),
    )
    op.create_table(
        'cluster_dead_letters',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('stream', sa.String(length=64), nullable=False),
        sa.Column('partition', sa.Integer(), nullable=False),
        sa.Column('stream_seq', _seq(), nullable=False),
        sa.Column('line', sa.Integer(), nullable=True),
        sa.Column('firm_id', sa.String(length=64), nullable=True),
        sa.Column('source', sa.String(length=64), nullable=True),
        sa.Column('event_id', sa.String(length=200), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('body', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', propcrm.adapters.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_cluster_dead_letters')),
    )
    op.create_index('ix_cluster_dead_letters_position', 'cluster_dead_letters', ['stream', 'partition', 'stream_seq'])


def downgrade() -> None:
    op.drop_index('ix_cluster_dead_letters_position', table_name='cluster_dead_letters')
    op.drop_table('cluster_dead_letters')
    op.drop_table('cluster_checkpoints')
