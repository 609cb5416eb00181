"""near-breach alerts name the moment of the worst point (issue 16)

Revision ID: 0026
Revises: 0025

- ``near_breach_alerts.reached_at``: the time of the event that brought the account nearest the limit in its
  evaluation batch (the alert's equity, level and distance are that event's); empty for alerts raised before,
  which measured the state a batch ended with.
"""
from alembic import op
import sqlalchemy as sa

from propcrm.adapters.db.models import UtcDateTime


revision = '0026'
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('near_breach_alerts', sa.Column('reached_at', UtcDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('near_breach_alerts') as batch:
        batch.drop_column('reached_at')
