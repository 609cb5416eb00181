"""leaderboard fairness and a cheap pseudonym check (issue 17)

Revision ID: 0024
Revises: 0023

- ``leaderboard_settings``: a firm's minimum closed trades and trading days in the period to be ranked
  (no row: the defaults, services/leaderboard.py).
- ``ix_accounts_external_id_folded`` / ``ix_accounts_login_folded``: (firm, lower(…)) expression indexes, so
  the check that a pseudonym is not one of the firm's account ids or logins probes an index instead of
  walking every account of the firm.
"""
from alembic import op
import sqlalchemy as sa

from propcrm.adapters.db.models import UtcDateTime


revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'leaderboard_settings',
        sa.Column('firm_id', sa.String(64), sa.ForeignKey('firms.id', name='fk_leaderboard_settings_firm_id_firms'),
                  primary_key=True),
        sa.Column('min_trades', sa.Integer, nullable=False),
        sa.Column('min_days', sa.Integer, nullable=False),
        sa.Column('updated_at', UtcDateTime(timezone=True), nullable=False),
        sa.Column('updated_by', sa.String(200), nullable=True),
    )
    op.create_index('ix_accounts_external_id_folded', 'accounts', ['firm_id', sa.text('lower(external_id)')])
    op.create_index('ix_accounts_login_folded', 'accounts', ['firm_id', sa.text('lower(login)')])


def downgrade() -> None:
    op.drop_index('ix_accounts_login_folded', table_name='accounts')
    op.drop_index('ix_accounts_external_id_folded', table_name='accounts')
    op.drop_table('leaderboard_settings')
