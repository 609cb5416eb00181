"""firms as tenants — a firm's own settings; staff TOTP secrets sealed (issue 16)

Revision ID: 0017
Revises: 0016

- ``firm_settings``: one row per firm that set something of its own (branding, SMTP, risk e-mail, webhook);
  what it leaves empty falls back to the process's environment (services/firms.py). Its secrets are one
  value sealed with the secret store's key (``sealed``).
- ``users.totp_secret``: widened and sealed with the same key (adapters/platforms/secrets.py). Rows written
  before hold the base32 secret in plain text; they are sealed here, so the key (``PROPCRM_SECRET_KEY`` or
  the data directory's ``secret.key``) must be at hand when such rows exist. The downgrade opens them again.
"""
from alembic import op
import sqlalchemy as sa

from propcrm.adapters.db.models import UtcDateTime


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def _box():
    from propcrm.adapters.platforms.secrets import SecretBox

    return SecretBox()


def upgrade() -> None:
    op.create_table(
        'firm_settings',
        sa.Column('firm_id', sa.String(64), sa.ForeignKey('firms.id'), primary_key=True),
        sa.Column('product_name', sa.String(80), nullable=True),
        sa.Column('accent_colour', sa.String(7), nullable=True),
        sa.Column('logo_key', sa.String(40), nullable=True),
        sa.Column('logo_type', sa.String(40), nullable=True),
        sa.Column('smtp_host', sa.String(255), nullable=True),
        sa.Column('smtp_port', sa.Integer, nullable=True),
        sa.Column('smtp_sender', sa.String(320), nullable=True),
        sa.Column('smtp_user', sa.String(200), nullable=True),
        sa.Column('risk_email', sa.String(320), nullable=True),
        sa.Column('webhook_url', sa.String(500), nullable=True),
        sa.Column('sealed', sa.LargeBinary, nullable=True),
        sa.Column('updated_at', UtcDateTime(timezone=True), nullable=False),
        sa.Column('updated_by', sa.String(200), nullable=True),
    )
    with op.batch_alter_table('users') as batch:
        batch.alter_column('totp_secret', type_=sa.String(400), existing_type=sa.String(64), existing_nullable=True)
    users = sa.table('users', sa.column('id', sa.Integer), sa.column('totp_secret', sa.String))
    bind = op.get_bind()
    rows = bind.execute(sa.select(users.c.id, users.c.totp_secret).where(users.c.totp_secret.isnot(None))).all()
    if rows:
        box = _box()
        for row in rows:
            bind.execute(users.update().where(users.c.id == row.id).values(totp_secret=box.seal_text(row.totp_secret)))


def downgrade() -> None:
    users = sa.table('users', sa.column('id', sa.Integer), sa.column('totp_secret', sa.String))
    bind = op.get_bind()
    rows = bind.execute(sa.select(users.c.id, users.c.totp_secret).where(users.c.totp_secret.isnot(None))).all()
    if rows:
        box = _box()
        for row in rows:
            bind.execute(users.update().where(users.c.id == row.id)
                         .values(totp_secret=box.open_text(row.totp_secret).reveal()))
    with op.batch_alter_table('users') as batch:
        batch.alter_column('totp_secret', type_=sa.String(64), existing_type=sa.String(400), existing_nullable=True)
    op.drop_table('firm_settings')
