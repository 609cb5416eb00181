"""staff tasks and near-breach alerts of the back office (issue 16)

Revision ID: 0018
Revises: 0017

- ``staff_tasks``: a follow-up attached to a trader, an account or a case, given to a staff member, due on a
  calendar day, done once (who and when kept).
- ``near_breach_settings``: per firm, the distance to a loss limit (percent of equity and/or an amount) that
  alerts risk staff; ``near_breach_alerts``: one per account, limit and trading day (unique), seen by whom.
"""
from alembic import op
import sqlalchemy as sa

from propcrm.adapters.db.models import Money, UtcDateTime


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'staff_tasks',
        sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
        sa.Column('firm_id', sa.String(64), sa.ForeignKey('firms.id'), nullable=False),
        sa.Column('title', sa.String(200), nullable=False),
        sa.Column('details', sa.Text, nullable=True),
        sa.Column('trader_id', sa.Integer, sa.ForeignKey('traders.id'), nullable=True),
        sa.Column('account_id', sa.Integer, sa.ForeignKey('accounts.id'), nullable=True),
        sa.Column('case_id', sa.Integer, sa.ForeignKey('cases.id'), nullable=True),
        sa.Column('assigned_user_id', sa.Integer, sa.ForeignKey('users.id'), nullable=True),
        sa.Column('due_on', sa.Date, nullable=True),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('created_by', sa.String(200), nullable=False),
        sa.Column('created_at', UtcDateTime(timezone=True), nullable=False),
        sa.Column('done_by', sa.String(200), nullable=True),
        sa.Column('done_at', UtcDateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_staff_tasks_open', 'staff_tasks', ['firm_id', 'status', 'due_on'])
    op.create_index('ix_staff_tasks_trader', 'staff_tasks', ['firm_id', 'trader_id'])
    op.create_table(
        'near_breach_settings',
        sa.Column('firm_id', sa.String(64), sa.ForeignKey('firms.id'), primary_key=True),
        sa.Column('within_pct', Money(), nullable=True),
        sa.Column('within_amount', Money(), nullable=True),
        sa.Column('updated_by', sa.String(200), nullable=False),
        sa.Column('updated_at', UtcDateTime(timezone=True), nullable=False),
    )
    op.create_table(
        'near_breach_alerts',
        sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
        sa.Column('firm_id', sa.String(64), sa.ForeignKey('firms.id'), nullable=False),
        sa.Column('account_id', sa.Integer, sa.ForeignKey('accounts.id'), nullable=False),
        sa.Column('limit_rule', sa.String(16), nullable=False),
        sa.Column('trading_day', sa.Date, nullable=False),
        sa.Column('equity', Money(), nullable=False),
        sa.Column('level', Money(), nullable=False),
        sa.Column('distance', Money(), nullable=False),
        sa.Column('created_at', UtcDateTime(timezone=True), nullable=False),
        sa.Column('seen_by', sa.String(200), nullable=True),
        sa.Column('seen_at', UtcDateTime(timezone=True), nullable=True),
        sa.UniqueConstraint('account_id', 'limit_rule', 'trading_day'),
    )
    op.create_index('ix_near_breach_alerts_firm', 'near_breach_alerts', ['firm_id', 'id'])


def downgrade() -> None:
    op.drop_index('ix_near_breach_alerts_firm', table_name='near_breach_alerts')
    op.drop_table('near_breach_alerts')
    op.drop_table('near_breach_settings')
    op.drop_index('ix_staff_tasks_trader', table_name='staff_tasks')
    op.drop_index('ix_staff_tasks_open', table_name='staff_tasks')
    op.drop_table('staff_tasks')
