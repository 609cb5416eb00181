"""leaderboard — traders who opted in to the firm's leaderboard, their pseudonym and a staff hide (issue 17)

Revision ID: 0019
Revises: 0018
"""
from alembic import op
import sqlalchemy as sa

from propcrm.adapters.db.models import UtcDateTime


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'leaderboard_entries',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('firm_id', sa.String(64), sa.ForeignKey('firms.id', name='fk_leaderboard_entries_firm_id_firms'),
                  nullable=False),
        sa.Column('trader_id', sa.Integer(),
                  sa.ForeignKey('traders.id', name='fk_leaderboard_entries_trader_id_traders'), nullable=False),
        sa.Column('pseudonym', sa.String(40), nullable=False),
        sa.Column('pseudonym_key', sa.String(40), nullable=False),
        sa.Column('opted_in', sa.Boolean(), nullable=False),
        sa.Column('opted_in_at', UtcDateTime(), nullable=False),
        sa.Column('hidden_at', UtcDateTime(), nullable=True),
        sa.Column('hidden_by', sa.String(200), nullable=True),
        sa.Column('hidden_reason', sa.String(500), nullable=True),
        sa.Column('updated_at', UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_leaderboard_entries'),
        sa.UniqueConstraint('firm_id', 'trader_id', name='uq_leaderboard_entries_trader'),
        sa.UniqueConstraint('firm_id', 'pseudonym_key', name='uq_leaderboard_entries_pseudonym'),
    )
    op.create_index('ix_leaderboard_entries_listed', 'leaderboard_entries', ['firm_id', 'opted_in', 'hidden_at'])
    op.create_index('ix_leaderboard_entries_changed', 'leaderboard_entries', ['firm_id', 'updated_at'])


def downgrade() -> None:
    op.drop_index('ix_leaderboard_entries_changed', table_name='leaderboard_entries')
    op.drop_index('ix_leaderboard_entries_listed', table_name='leaderboard_entries')
    op.drop_table('leaderboard_entries')
