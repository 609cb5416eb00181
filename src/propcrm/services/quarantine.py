"""The quarantine as a risk officer reads it: lines that could not be accepted, and re-submitting them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from . import audit
from .accounts import MAX_PAGE, Page
from .errors import Invalid, NotFound

PREVIEW_CHARS = 2000
MAX_RESUBMIT = 10_000


def entry_view(row: m.Quarantine, *, preview: bool = True) -> dict[str, Any]:
    text = bytes(row.body).decode("utf-8", "replace")
    truncated = preview and len(text) > PREVIEW_CHARS
    return {"id": row.id, "source": row.source, "line": row.line, "reason": row.reason,
            "received_at": row.received_at, "resolved_at": row.resolved_at, "body_bytes": len(row.body),
            "body": text[:PREVIEW_CHARS] if truncated else text, "body_truncated": truncated}


def list_entries(session: Session, *, firm_id: str, resolved: bool | None = False, source: str | None = None,
                 limit: int = 50, offset: int = 0) -> Page:
    """Quarantined lines, newest first; by default the unresolved ones only."""
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid(f"limit must be between 1 and {MAX_PAGE}")
    if offset < 0:
        raise Invalid("offset must not be negative")
    conditions = [m.Quarantine.firm_id == firm_id]
    if resolved is True:
        conditions.append(m.Quarantine.resolved_at.is_not(None))
    elif resolved is False:
        conditions.append(m.Quarantine.resolved_at.is_(None))
    if source is not None:
        conditions.append(m.Quarantine.source == source)
    total = session.scalar(select(func.count()).select_from(m.Quarantine).where(*conditions)) or 0
    rows = session.scalars(
        select(m.Quarantine).where(*conditions).order_by(m.Quarantine.id.desc()).limit(limit).offset(offset)
    )
    return Page(total=total, limit=limit, offset=offset, items=[entry_view(r) for r in rows])


def get_entry(session: Session, *, firm_id: str, entry_id: int) -> m.Quarantine:
    row = session.get(m.Quarantine, entry_id)
    if row is None or row.firm_id != firm_id:
        raise NotFound(f"no quarantine entry {entry_id}")
    return row


def resubmit(session: Session, *, firm_id: str, ids: list[int], actor: str) -> dict[str, Any]:
    """Ingest quarantined lines again (say, after their account was created); audited."""
    from . import ingest

    if not ids:
        raise Invalid("name at least one quarantine entry id")
    if len(ids) > MAX_RESUBMIT:
        raise Invalid(f"at most {MAX_RESUBMIT:,} entries at a time")
    try:
        report = ingest.resubmit(session, firm_id=firm_id, quarantine_ids=ids)
    except ingest.IngestError as exc:
        raise NotFound(str(exc)) from None
    audit.append(session, actor=actor, action="quarantine.resubmit", entity="quarantine",
                 entity_id=",".join(map(str, ids[:20])) + (",…" if len(ids) > 20 else ""),
                 after={"entries": len(ids), "accepted": report.accepted, "duplicates": report.duplicates,
                        "rejected": report.rejected}, firm_id=firm_id)
    return report.to_dict()
