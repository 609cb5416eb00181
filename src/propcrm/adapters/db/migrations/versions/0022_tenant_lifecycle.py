"""tenant left-overs of issue 16: suspended firms, forced password change, lost leads

Revision ID: 0022
Revises: 0021

``firms.suspended_at``/``suspended_reason``: the operator suspended the firm (no login, token, API key or
ingestion; services/firms.py). ``users.must_change_password``: the password is a one-time one (an
operator-onboarded admin, an admin's reset); everything but the password change and logout is refused
until it is replaced. ``leads.lost_reason``: why a lead was marked lost.
"""
from alembic import op
import sqlalchemy as sa

from propcrm.adapters.db.models import UtcDateTime


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('firms') as batch:
        batch.add_column(sa.Column('suspended_at', UtcDateTime(), nullable=True))
        batch.add_column(sa.Column('suspended_reason', sa.String(500), nullable=True))
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('must_change_password', sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    with op.batch_alter_table('leads') as batch:
        batch.add_column(sa.Column('lost_reason', sa.String(2000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('leads') as batch:
        batch.drop_column('lost_reason')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('must_change_password')
    with op.batch_alter_table('firms') as batch:
        batch.drop_column('suspended_reason')
        batch.drop_column('suspended_at')
