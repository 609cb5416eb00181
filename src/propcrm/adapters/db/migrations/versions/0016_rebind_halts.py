"""re-bind and kill switch — firm-wide trading halts, a state generation, superseded decisions (issue 19)

Revision ID: 0016
Revises: 0015

- ``trading_halts``: one row per halt of a group of accounts (scope, reason, who, how many) and its resume.
- ``accounts.halt_id``: the halt that stopped the account (status ``halted``); a resume restores exactly
  the accounts that still carry it and are still ``halted``.
- ``account_states.generation``: bumped whenever something other than the evaluation worker rewrites an
  account's stored state (a re-bind, a cleared breach). An in-memory copy of a state is valid only while
  its generation (and ``last_seq``) match the row's: the invalidation point for caches of the worker.
- ``decisions.superseded_at``: a decision that a re-bind's replay under the new version no longer makes
  (kept, never deleted; marked).
"""
from alembic import op
import sqlalchemy as sa

from propcrm.adapters.db.models import UtcDateTime


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'trading_halts',
        sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
        sa.Column('firm_id', sa.String(64), sa.ForeignKey('firms.id'), nullable=False, index=True),
        sa.Column('scope', sa.JSON, nullable=False),
        sa.Column('reason', sa.Text, nullable=False),
        sa.Column('actor', sa.String(200), nullable=False),
        sa.Column('accounts', sa.Integer, nullable=False),
        sa.Column('created_at', UtcDateTime(timezone=True), nullable=False),
        sa.Column('resumed_at', UtcDateTime(timezone=True), nullable=True),
        sa.Column('resumed_by', sa.String(200), nullable=True),
        sa.Column('resume_reason', sa.Text, nullable=True),
        sa.Column('resumed', sa.Integer, nullable=True),
    )
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('halt_id', sa.Integer, nullable=True))
        batch.create_index('ix_accounts_halt_id', ['halt_id'])
    op.add_column('account_states', sa.Column('generation', sa.Integer, nullable=False, server_default='0'))
    op.add_column('decisions', sa.Column('superseded_at', UtcDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('decisions') as batch:
        batch.drop_column('superseded_at')
    with op.batch_alter_table('account_states') as batch:
        batch.drop_column('generation')
    with op.batch_alter_table('accounts') as batch:
        batch.drop_index('ix_accounts_halt_id')
        batch.drop_column('halt_id')
    op.drop_table('trading_halts')
