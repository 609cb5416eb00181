"""account figures — the accounts list's sortable numbers beside each state

Revision ID: 0007
Revises: 0006

Rows written before this migration keep NULL figures until their account's next event, or until
``propcrm accounts refresh-figures`` fills them from the stored states (a migration does not run the
engine).
"""
from alembic import op
import sqlalchemy as sa
import propcrm.adapters.db.models  # noqa: F401


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

INDEXES = {
    'ix_account_states_changed': ['firm_id', 'updated_at'],
    'ix_account_states_daily': ['firm_id', 'daily_distance_cents', 'account_id'],
    'ix_account_states_max_loss': ['firm_id', 'max_loss_distance_cents', 'account_id'],
    'ix_account_states_nearest': ['firm_id', 'nearest_bp', 'account_id'],
    'ix_account_states_target': ['firm_id', 'target_bp', 'account_id'],
    'ix_account_states_days': ['firm_id', 'trading_days', 'account_id'],
}


def _money():
    return propcrm.adapters.db.models.Money(24, 8)


def upgrade() -> None:
    op.add_column('account_states', sa.Column('daily_floor', _money(), nullable=True))
    op.add_column('account_states', sa.Column('daily_distance', _money(), nullable=True))
    op.add_column('account_states', sa.Column('daily_distance_cents', sa.BigInteger(), nullable=True))
    op.add_column('account_states', sa.Column('max_loss_level', _money(), nullable=True))
    op.add_column('account_states', sa.Column('max_loss_distance', _money(), nullable=True))
    op.add_column('account_states', sa.Column('max_loss_distance_cents', sa.BigInteger(), nullable=True))
    op.add_column('account_states', sa.Column('nearest_bp', sa.Integer(), nullable=True))
    op.add_column('account_states', sa.Column('target_bp', sa.Integer(), nullable=True))
    op.add_column('account_states', sa.Column('trading_days', sa.Integer(), nullable=True))
    for name, columns in INDEXES.items():
        op.create_index(name, 'account_states', columns)
    # sorting the list by risk score: the latest score per account, per firm
    op.create_index('ix_risk_scores_firm_score', 'risk_scores', ['firm_id', 'score', 'account_id'])


def downgrade() -> None:
    op.drop_index('ix_risk_scores_firm_score', table_name='risk_scores')
    for name in INDEXES:
        op.drop_index(name, table_name='account_states')
    with op.batch_alter_table('account_states') as batch:
        for column in ('trading_days', 'target_bp', 'nearest_bp', 'max_loss_distance_cents', 'max_loss_distance',
                       'max_loss_level', 'daily_distance_cents', 'daily_distance', 'daily_floor'):
            batch.drop_column(column)
