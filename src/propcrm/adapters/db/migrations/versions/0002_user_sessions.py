"""user sessions: hashed login tokens

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 12:00:00
"""
from alembic import op
import sqlalchemy as sa
import propcrm.adapters.db.models


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('user_sessions',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('firm_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', propcrm.adapters.db.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', propcrm.adapters.db.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', propcrm.adapters.db.models.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['firm_id'], ['firms.id'], name=op.f('fk_user_sessions_firm_id_firms')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_sessions_user_id_users')),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_user_sessions'))
    )
    with op.batch_alter_table('user_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_sessions_firm_id'), ['firm_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_user_sessions_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('user_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_sessions_user_id'))
        batch_op.drop_index(batch_op.f('ix_user_sessions_firm_id'))
    op.drop_table('user_sessions')
