"""web indexes — the audit viewer's filters, the dashboard's recent decisions, an account's decisions

Revision ID: 0008
Revises: 0007

The audit viewer pages a firm's log newest first (``seq``) filtered by action, by entity (and id) or
by time; the dashboard counts a firm's decisions since a day; the account page lists an account's
decisions newest first. The same indexes are declared on the
models (``AuditEntry``, ``Decision``), so a fresh ``create_all`` and a migrated database agree.
"""
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

INDEXES = {
    'ix_audit_log_firm_action': ('audit_log', ['firm_id', 'action', 'seq']),
    'ix_audit_log_firm_entity': ('audit_log', ['firm_id', 'entity', 'entity_id', 'seq']),
    'ix_audit_log_firm_ts': ('audit_log', ['firm_id', 'ts']),
    'ix_decisions_firm_ts': ('decisions', ['firm_id', 'ts']),
    # an account's decisions newest first (the account page, the API). Not optional once the index above
    # exists: SQLite has no planner statistics, and given (firm_id, ts) it walks every decision of the
    # firm in time order to find one account's (0.1 ms -> 0.7 s at 300k decisions)
    'ix_decisions_account_ts': ('decisions', ['firm_id', 'account_id', 'ts']),
}


def upgrade() -> None:
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, (table, _columns) in reversed(INDEXES.items()):
        op.drop_index(name, table_name=table)
