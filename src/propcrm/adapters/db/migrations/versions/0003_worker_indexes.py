"""worker read paths: stream and type indexes on raw_events

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_raw_events_stream", "raw_events", ["firm_id", "account_id", "seq"])
    op.create_index("ix_raw_events_by_type", "raw_events", ["firm_id", "type", "seq"])


def downgrade() -> None:
    op.drop_index("ix_raw_events_by_type", table_name="raw_events")
    op.drop_index("ix_raw_events_stream", table_name="raw_events")
