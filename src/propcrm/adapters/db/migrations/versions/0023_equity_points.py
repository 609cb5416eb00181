"""equity points: the account chart's series, written by the evaluation in both deployments

Revision ID: 0023
Revises: 0022

``equity_points`` holds, per account, the equity, balance, daily floor and max-loss level after evaluated
events, downsampled as written (per account and UTC minute at most the first, last, lowest and highest
point and up to four points with decisions: services/equity_points.py). The back office chart reads it
instead of replaying ``raw_events``, which the scale-out deployment never fills. Accounts evaluated before
this migration are filled with ``propcrm trades backfill`` (from the embedded log).
"""
from alembic import op
import sqlalchemy as sa

from propcrm.adapters.db.models import Money, UtcDateTime


revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'equity_points',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('firm_id', sa.String(64), sa.ForeignKey('firms.id', name='fk_equity_points_firm_id_firms'),
                  nullable=False),
        sa.Column('account_id', sa.Integer(),
                  sa.ForeignKey('accounts.id', name='fk_equity_points_account_id_accounts'), nullable=False),
        sa.Column('minute', sa.BigInteger(), nullable=False),
        sa.Column('ts', UtcDateTime(), nullable=False),
        sa.Column('equity', Money(), nullable=False),
        sa.Column('balance', Money(), nullable=False),
        sa.Column('daily_floor', Money(), nullable=True),
        sa.Column('max_loss', Money(), nullable=True),
        sa.Column('decisions', sa.String(400), nullable=True),
        sa.PrimaryKeyConstraint('id', name='pk_equity_points'),
    )
    op.create_index('ix_equity_points_account', 'equity_points', ['account_id', 'minute', 'ts'])


def downgrade() -> None:
    op.drop_table('equity_points')
