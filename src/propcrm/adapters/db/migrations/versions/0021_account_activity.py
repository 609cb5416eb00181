"""account activity and the order time of a trade — the abuse analysis reads the projections, not the event log

Revision ID: 0021
Revises: 0020

``account_activity`` holds each accepted ``trade_opened``, ``trade_closed`` and ``session`` event of an
account (time, and the ip/device of a login or an open), written by the evaluation write path with the
trade projection in both deployments (services/trades.py); ``trades.order_ts`` keeps when the platform
received the order and ``as_sent`` (on trades and closes) the lots and price as the platform wrote
them, for evidence. The analysis watermarks counted ``raw_events.seq``; they now count
``account_activity.id``, so they are dropped: the next pass of each firm is a full one. Accounts
evaluated before this migration are filled with ``propcrm trades backfill`` (from the embedded log).
"""
from alembic import op
import sqlalchemy as sa

from propcrm.adapters.db.models import UtcDateTime


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'account_activity',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('firm_id', sa.String(64), sa.ForeignKey('firms.id', name='fk_account_activity_firm_id_firms'),
                  nullable=False),
        sa.Column('account_id', sa.Integer(),
                  sa.ForeignKey('accounts.id', name='fk_account_activity_account_id_accounts'), nullable=False),
        sa.Column('kind', sa.String(8), nullable=False),
        sa.Column('ts', UtcDateTime(), nullable=False),
        sa.Column('ip', sa.String(200), nullable=True),
        sa.Column('device', sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint('id', name='pk_account_activity'),
    )
    op.create_index('ix_account_activity_firm', 'account_activity', ['firm_id', 'id'])
    op.create_index('ix_account_activity_account', 'account_activity', ['account_id', 'id'])
    op.create_index('ix_account_activity_kind_ts', 'account_activity', ['firm_id', 'kind', 'ts'])
    with op.batch_alter_table('trades') as batch:
        batch.add_column(sa.Column('order_ts', UtcDateTime(), nullable=True))
        batch.add_column(sa.Column('as_sent', sa.String(80), nullable=True))
    with op.batch_alter_table('trade_closes') as batch:
        batch.add_column(sa.Column('as_sent', sa.String(80), nullable=True))
    op.execute("DELETE FROM analysis_watermarks")


def downgrade() -> None:
    with op.batch_alter_table('trade_closes') as batch:
        batch.drop_column('as_sent')
    with op.batch_alter_table('trades') as batch:
        batch.drop_column('as_sent')
        batch.drop_column('order_ts')
    op.drop_table('account_activity')
    op.execute("DELETE FROM analysis_watermarks")
