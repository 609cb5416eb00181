"""trade history, payout methods and certificates — positions opened and closed per account (with costs
and partial closes); a payout's method, destination, payment reference and "sent" step; certificates

Revision ID: 0015
Revises: 0014

Filled by the evaluation write path in the transaction of the decisions (services/trades.py), in the
embedded and the scaled-out deployment alike. Accounts evaluated before this migration are filled with
``propcrm trades backfill`` (from the embedded event log).
"""
from alembic import op
import sqlalchemy as sa

from propcrm.adapters.db.models import Money, UtcDateTime


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'trades',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('firm_id', sa.String(64), sa.ForeignKey('firms.id', name='fk_trades_firm_id_firms'), nullable=False),
        sa.Column('account_id', sa.Integer(), sa.ForeignKey('accounts.id', name='fk_trades_account_id_accounts'),
                  nullable=False),
        sa.Column('position', sa.String(200), nullable=False),
        sa.Column('symbol', sa.String(200), nullable=True),
        sa.Column('side', sa.String(4), nullable=True),
        sa.Column('lots', Money(), nullable=True),
        sa.Column('open_ts', UtcDateTime(), nullable=True),
        sa.Column('open_price', Money(), nullable=True),
        sa.Column('open_event_id', sa.String(200), nullable=True),
        sa.Column('closed_lots', Money(), nullable=False),
        sa.Column('close_ts', UtcDateTime(), nullable=True),
        sa.Column('close_price', Money(), nullable=True),
        sa.Column('profit', Money(), nullable=False),
        sa.Column('commission', Money(), nullable=False),
        sa.Column('swap', Money(), nullable=False),
        sa.Column('net', Money(), nullable=False),
        sa.Column('closes', sa.Integer(), nullable=False),
        sa.Column('held_s', sa.BigInteger(), nullable=True),
        sa.Column('status', sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_trades'),
    )
    op.create_index('ix_trades_journal', 'trades', ['firm_id', 'account_id', 'status', 'close_ts', 'id'])
    op.create_index('ix_trades_position', 'trades', ['account_id', 'position', 'status'])
    op.create_table(
        'trade_closes',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('firm_id', sa.String(64), sa.ForeignKey('firms.id', name='fk_trade_closes_firm_id_firms'),
                  nullable=False),
        sa.Column('account_id', sa.Integer(),
                  sa.ForeignKey('accounts.id', name='fk_trade_closes_account_id_accounts'), nullable=False),
        sa.Column('trade_id', sa.Integer(), sa.ForeignKey('trades.id', name='fk_trade_closes_trade_id_trades'),
                  nullable=False),
        sa.Column('event_id', sa.String(200), nullable=False),
        sa.Column('event_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
        sa.Column('ts', UtcDateTime(), nullable=False),
        sa.Column('lots', Money(), nullable=False),
        sa.Column('price', Money(), nullable=False),
        sa.Column('profit', Money(), nullable=False),
        sa.Column('commission', Money(), nullable=False),
        sa.Column('swap', Money(), nullable=False),
        sa.Column('net', Money(), nullable=False),
        sa.Column('reason', sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint('id', name='pk_trade_closes'),
    )
    op.create_index('ix_trade_closes_trade_id', 'trade_closes', ['trade_id'])
    op.create_index('ix_trade_closes_account_ts', 'trade_closes', ['firm_id', 'account_id', 'ts'])


    with op.batch_alter_table('payouts') as batch:
        batch.add_column(sa.Column('method', sa.String(16), nullable=True))
        batch.add_column(sa.Column('destination', sa.String(200), nullable=True))
        batch.add_column(sa.Column('payment_reference', sa.String(200), nullable=True))
        batch.add_column(sa.Column('sent_at', UtcDateTime(), nullable=True))
        batch.add_column(sa.Column('sent_by', sa.String(200), nullable=True))
    op.create_table(
        'certificates',
        sa.Column('id', sa.String(32), nullable=False),
        sa.Column('firm_id', sa.String(64), sa.ForeignKey('firms.id', name='fk_certificates_firm_id_firms'),
                  nullable=False),
        sa.Column('trader_id', sa.Integer(), sa.ForeignKey('traders.id', name='fk_certificates_trader_id_traders'),
                  nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('subject', sa.String(64), nullable=False),
        sa.Column('facts', sa.JSON(), nullable=False),
        sa.Column('issued_at', UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_certificates'),
        sa.UniqueConstraint('firm_id', 'kind', 'subject', name='one_certificate_per_achievement'),
    )
    op.create_index('ix_certificates_trader_id', 'certificates', ['trader_id'])


def downgrade() -> None:
    op.drop_table('certificates')
    with op.batch_alter_table('payouts') as batch:
        for column in ('sent_by', 'sent_at', 'payment_reference', 'destination', 'method'):
            batch.drop_column(column)
    op.drop_table('trade_closes')
    op.drop_table('trades')
