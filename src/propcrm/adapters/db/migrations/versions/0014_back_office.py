"""back office — KYC documents, support conversations, staff two-factor login (issue 16)

Revision ID: 0014
Revises: 0013

``kyc_documents``: what a trader's identity is checked from (the bytes live in the document store, outside
the database and the web root). ``support_conversations``: one a trader, with its assignee and whose turn
it is. ``users.totp_*``, ``login_challenges`` and ``user_recovery_codes``: TOTP two-factor login (a login waiting
for its code; recovery codes as argon2 hashes).
"""
from alembic import op
import sqlalchemy as sa

import propcrm.adapters.db.models


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

Utc = propcrm.adapters.db.models.UtcDateTime


def upgrade() -> None:
    op.create_table('kyc_documents',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('firm_id', sa.String(length=64), nullable=False),
        sa.Column('trader_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('filename', sa.String(length=200), nullable=False),
        sa.Column('content_type', sa.String(length=64), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('storage_key', sa.String(length=80), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('uploaded_by', sa.String(length=200), nullable=False),
        sa.Column('reviewed_by', sa.String(length=200), nullable=True),
        sa.Column('review_reason', sa.Text(), nullable=True),
        sa.Column('created_at', Utc(timezone=True), nullable=False),
        sa.Column('reviewed_at', Utc(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['firm_id'], ['firms.id'], name=op.f('fk_kyc_documents_firm_id_firms')),
        sa.ForeignKeyConstraint(['trader_id'], ['traders.id'], name=op.f('fk_kyc_documents_trader_id_traders')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_kyc_documents')),
        sa.UniqueConstraint('storage_key', name=op.f('uq_kyc_documents_storage_key')),
    )
    op.create_index('ix_kyc_documents_trader', 'kyc_documents', ['firm_id', 'trader_id', 'id'])
    op.create_index('ix_kyc_documents_status', 'kyc_documents', ['firm_id', 'status'])
    op.create_table('support_conversations',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('firm_id', sa.String(length=64), nullable=False),
        sa.Column('trader_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('assigned_user_id', sa.Integer(), nullable=True),
        sa.Column('last_message_at', Utc(timezone=True), nullable=False),
        sa.Column('waiting_on', sa.String(length=16), nullable=False),
        sa.Column('closed_at', Utc(timezone=True), nullable=True),
        sa.Column('updated_at', Utc(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['firm_id'], ['firms.id'], name=op.f('fk_support_conversations_firm_id_firms')),
        sa.ForeignKeyConstraint(['trader_id'], ['traders.id'],
                                name=op.f('fk_support_conversations_trader_id_traders')),
        sa.ForeignKeyConstraint(['assigned_user_id'], ['users.id'],
                                name=op.f('fk_support_conversations_assigned_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_support_conversations')),
        sa.UniqueConstraint('firm_id', 'trader_id', name=op.f('uq_support_conversations_firm_id')),
    )
    op.create_index('ix_support_conversations_inbox', 'support_conversations',
                    ['firm_id', 'status', 'last_message_at'])
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('totp_secret', sa.String(64), nullable=True))
        batch.add_column(sa.Column('totp_enabled_at', Utc(timezone=True), nullable=True))
        batch.add_column(sa.Column('totp_last_step', sa.BigInteger(), nullable=True))
    op.create_table('login_challenges',
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('created_at', Utc(timezone=True), nullable=False),
        sa.Column('expires_at', Utc(timezone=True), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_login_challenges_user_id_users')),
        sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_login_challenges')),
    )
    op.create_index(op.f('ix_login_challenges_user_id'), 'login_challenges', ['user_id'])
    op.create_table('user_recovery_codes',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('code_hash', sa.String(length=200), nullable=False),
        sa.Column('used_at', Utc(timezone=True), nullable=True),
        sa.Column('created_at', Utc(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_recovery_codes_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_user_recovery_codes')),
    )
    op.create_index(op.f('ix_user_recovery_codes_user_id'), 'user_recovery_codes', ['user_id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_user_recovery_codes_user_id'), table_name='user_recovery_codes')
    op.drop_table('user_recovery_codes')
    op.drop_index(op.f('ix_login_challenges_user_id'), table_name='login_challenges')
    op.drop_table('login_challenges')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('totp_last_step')
        batch.drop_column('totp_enabled_at')
        batch.drop_column('totp_secret')
    op.drop_index('ix_support_conversations_inbox', table_name='support_conversations')
    op.drop_table('support_conversations')
    op.drop_index('ix_kyc_documents_status', table_name='kyc_documents')
    op.drop_index('ix_kyc_documents_trader', table_name='kyc_documents')
    op.drop_table('kyc_documents')
