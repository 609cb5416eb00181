"""symbol tables — a firm's symbols (contract size, tick size and value, profit currency) for marking
open positions to market from price ticks (issue 15)

Revision ID: 0013
Revises: 0011
"""
from alembic import op
import sqlalchemy as sa
import propcrm.adapters.db.models  # noqa: F401


revision = '0013'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'symbol_tables',
        sa.Column('firm_id', sa.String(length=64), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('symbols', sa.Integer(), nullable=False),
        sa.Column('updated_at', propcrm.adapters.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column('updated_by', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['firm_id'], ['firms.id'], name=op.f('fk_symbol_tables_firm_id_firms')),
        sa.PrimaryKeyConstraint('firm_id', name=op.f('pk_symbol_tables')),
    )


def downgrade() -> None:
    op.drop_table('symbol_tables')
