"""Tampering with the audit log as an attacker with database access would: direct writes to ``audit_log``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text


@contextmanager
def attacker(engine) -> Iterator:
    """A connection with direct write access to the table (on PostgreSQL: the owner, with the append-only
    trigger disabled for the transaction's length)."""
    with engine.begin() as conn:
        pg = conn.dialect.name == "postgresql"
        if pg:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        yield conn
        if pg:
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
