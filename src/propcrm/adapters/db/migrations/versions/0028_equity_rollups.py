"""equity rollups: how far each account's chart points are rolled up (issue 14)

Revision ID: 0028
Revises: 0027

``equity_rollups`` holds, per account, the minute before which its ``equity_points`` are rolled up per hour
of a trading day (``hours_until``) and per trading day (``days_until``): each such bucket keeps only its
first and last point, the points of the lowest and highest equity, balance, daily floor and max-loss level,
and every point with decisions (services/equity_rollup.py). The roll-up runs incrementally from these marks;
an account without a row has nothing rolled yet. Nothing is rolled by the upgrade itself: the first run of
the roll-up (inside ``propcrm serve``, or ``propcrm points rollup``) does it.

No foreign keys on purpose: on PostgreSQL a row inserted with a key to ``accounts`` key-share-locks the
account's row, and the evaluation worker's claim (``FOR UPDATE SKIP LOCKED``) would skip the account while a
roll-up transaction is open.
"""
from alembic import op
import sqlalchemy as sa

from propcrm.adapters.db.models import UtcDateTime


revision = '0028'
down_revision = '0027'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'equity_rollups',
        sa.Column('account_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('firm_id', sa.String(64), nullable=False),
        sa.Column('hours_until', sa.BigInteger(), nullable=False),
        sa.Column('days_until', sa.BigInteger(), nullable=False),
        sa.Column('rolled_at', UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('account_id', name='pk_equity_rollups'),
    )


def downgrade() -> None:
    op.drop_table('equity_rollups')
