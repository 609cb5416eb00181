"""the done tasks' list by an index (issue 16's scale bound)

Revision ID: 0025
Revises: 0024

- ``ix_staff_tasks_done``: (firm, status, done_at, id), so the staff tasks' "done" view (newest done first,
  50 a page) walks an index instead of sorting every done task of the firm for each page (36,000 of them at
  a firm of 100,000 accounts: 170 ms of CPU a page).
"""
from alembic import op


revision = '0025'
down_revision = '0024'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_staff_tasks_done', 'staff_tasks', ['firm_id', 'status', 'done_at', 'id'])


def downgrade() -> None:
    op.drop_index('ix_staff_tasks_done', table_name='staff_tasks')
