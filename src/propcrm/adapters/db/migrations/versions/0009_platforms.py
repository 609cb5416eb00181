"""platforms — connections to trading platforms, login mapping, economic calendar sources

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa
import propcrm.adapters.db.models  # noqa: F401


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def _time():
    return propcrm.adapters.db.models.UtcDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'platform_connections',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('firm_id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('family', sa.String(length=32), nullable=False),
        sa.Column('settings', sa.JSON(), nullable=False),
        sa.Column('secret', sa.LargeBinary(), nullable=True),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('cursor', sa.Text(), nullable=True),
        sa.Column('created_at', _time(), nullable=False),
        sa.Column('updated_at', _time(), nullable=False),
        sa.ForeignKeyConstraint(['firm_id'], ['firms.id'], name=op.f('fk_platform_connections_firm_id_firms')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_platform_connections')),
        sa.UniqueConstraint('firm_id', 'name', name=op.f('uq_platform_connections_firm_id')),
    )
    op.create_index(op.f('ix_platform_connections_firm_id'), 'platform_connections', ['firm_id'])
    op.create_table(
        'platform_logins',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('connection_id', sa.Integer(), nullable=False),
        sa.Column('firm_id', sa.String(length=64), nullable=False),
        sa.Column('login', sa.String(length=64), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('created_at', _time(), nullable=False),
        sa.ForeignKeyConstraint(['connection_id'], ['platform_connections.id'],
                                name=op.f('fk_platform_logins_connection_id_platform_connections')),
        sa.ForeignKeyConstraint(['firm_id'], ['firms.id'], name=op.f('fk_platform_logins_firm_id_firms')),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_platform_logins_account_id_accounts')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_platform_logins')),
        sa.UniqueConstraint('connection_id', 'login', name='uq_platform_logins_connection_login'),
        sa.UniqueConstraint('connection_id', 'account_id', name='uq_platform_logins_connection_account'),
    )
    op.create_index(op.f('ix_platform_logins_connection_id'), 'platform_logins', ['connection_id'])
    op.create_index(op.f('ix_platform_logins_firm_id'), 'platform_logins', ['firm_id'])
    op.create_table(
        'calendar_sources',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('firm_id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('location', sa.Text(), nullable=False),
        sa.Column('format', sa.String(length=16), nullable=False),
        sa.Column('timezone', sa.String(length=64), nullable=False),
        sa.Column('interval_s', sa.Integer(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('last_fetched_at', _time(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('last_count', sa.Integer(), nullable=True),
        sa.Column('created_at', _time(), nullable=False),
        sa.ForeignKeyConstraint(['firm_id'], ['firms.id'], name=op.f('fk_calendar_sources_firm_id_firms')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_calendar_sources')),
        sa.UniqueConstraint('firm_id', 'name', name=op.f('uq_calendar_sources_firm_id')),
    )
    op.create_index(op.f('ix_calendar_sources_firm_id'), 'calendar_sources', ['firm_id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_calendar_sources_firm_id'), table_name='calendar_sources')
    op.drop_table('calendar_sources')
    op.drop_index(op.f('ix_platform_logins_firm_id'), table_name='platform_logins')
    op.drop_index(op.f('ix_platform_logins_connection_id'), table_name='platform_logins')
    op.drop_table('platform_logins')
    op.drop_index(op.f('ix_platform_connections_firm_id'), table_name='platform_connections')
    op.drop_table('platform_connections')
