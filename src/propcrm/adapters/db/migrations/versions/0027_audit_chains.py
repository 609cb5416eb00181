"""the audit log: one hash chain per firm (issue 14)

Revision ID: 0027
Revises: 0026

- ``audit_log.chain_seq``: an entry's position in its firm's chain (entries with no firm — operator and
  system actions — form their own chain). NULL marks an entry written before this migration: those stay
  exactly as they were, in the one global chain they were written in (hash format 1, linked by ``seq``);
  nothing is re-hashed, so nothing written before can be laundered by the upgrade, no audit key is needed
  to migrate, and every anchor taken before the upgrade still checks exactly against them.
- ``ux_audit_log_chain``: (coalesce(firm_id, ''), chain_seq) unique — one entry per place in a chain; it is
  also the index the tail read and the per-chain walk of ``propcrm audit verify`` use.
- PostgreSQL: the ``seq`` sequence is moved past the highest ``seq`` (entries used to be numbered by the
  append lock, which wrote ``seq`` explicitly; now the sequence numbers them without any global lock).

Nothing is written to the anchor files: the anchor writer's next anchor records every chain's tail.
"""
from alembic import op
import sqlalchemy as sa


revision = '0027'
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('chain_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                      nullable=True))
    op.create_index('ux_audit_log_chain', 'audit_log', [sa.text("coalesce(firm_id, '')"), 'chain_seq'], unique=True)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("SELECT setval(pg_get_serial_sequence('audit_log', 'seq'), "
                   "coalesce((SELECT max(seq) FROM audit_log), 0) + 1, false)")


def downgrade() -> None:
    # refused when per-firm entries exist: the format-1 chain cannot take them without re-hashing
    count = op.get_bind().execute(sa.text("SELECT count(*) FROM audit_log WHERE chain_seq IS NOT NULL")).scalar()
    if count:
        raise RuntimeError(f"{count} audit entries were written in per-firm chains; downgrading would break "
                           "propcrm audit verify")
    op.drop_index('ux_audit_log_chain', table_name='audit_log')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_column('chain_seq')
