"""when time alone can next change an account's state: the worker's clock catch-up (issue 14)

Revision ID: 0020
Revises: 0019

- ``account_states.next_due``: the first instant at which a firm ``clock`` event can change the stored
  state (``PhaseProgram.next_due``: the trading day's end in the pack's timezone, a maximum duration,
  inactivity, the weekend start; far in the future once the account is no longer live).
- ``account_states.news_until``: the latest calendar time of a ``news`` entry that can still change it
  (``PhaseProgram.news_until``), NULL when none can.

The evaluation worker catches an account up after a firm clock or news event only when one of these says
it can change; the others meet those events with their next event. Rows written before this revision have
``next_due`` NULL, read as "unknown: catch up as before", until their state is next written (or
``propcrm accounts refresh-figures`` computes them).
"""
from alembic import op
import sqlalchemy as sa

from propcrm.adapters.db.models import UtcDateTime


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('account_states', sa.Column('next_due', UtcDateTime(timezone=True), nullable=True))
    op.add_column('account_states', sa.Column('news_until', UtcDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('account_states') as batch:
        batch.drop_column('news_until')
        batch.drop_column('next_due')
