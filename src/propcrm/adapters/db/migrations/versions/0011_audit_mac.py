"""audit mac — each audit entry's key mark, HMAC-SHA256(audit key, hash)

Revision ID: 0011
Revises: 0010

Entries written before an audit key is configured keep NULL (services/audit.py). Adding a column is
not an UPDATE: PostgreSQL's append-only trigger on audit_log is untouched.
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('audit_log', sa.Column('mac', sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('audit_log') as batch:
        batch.drop_column('mac')
