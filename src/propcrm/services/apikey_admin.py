"""Administering platform API keys: list (never the secret), create (the secret once), revoke; audited."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from . import audit
from .apikeys import create_key
from .errors import Invalid, NotFound


def key_view(row: m.ApiKey) -> dict[str, Any]:
    """A key as it may be shown: everything but the secret."""
    return {"id": row.id, "platform": row.platform, "active": row.active, "created_at": row.created_at,
            "last_used_at": row.last_used_at}


def list_keys(session: Session, *, firm_id: str) -> list[m.ApiKey]:
    return list(session.scalars(select(m.ApiKey).where(m.ApiKey.firm_id == firm_id).order_by(m.ApiKey.created_at, m.ApiKey.id)))


def issue_key(session: Session, *, firm_id: str, platform: str, actor: str) -> tuple[m.ApiKey, str]:
    """A new key and its secret (returned only here, never logged or audited)."""
    try:
        key_id, secret = create_key(session, firm_id=firm_id, platform=platform)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    row = session.get(m.ApiKey, key_id)
    assert row is not None
    audit.append(session, actor=actor, action="api_key.create", entity="api_key", entity_id=key_id,
                 after={"platform": platform}, firm_id=firm_id)
    return row, secret


def revoke_key(session: Session, *, firm_id: str, key_id: str, actor: str) -> m.ApiKey:
    """Deactivate a key: requests signed with it are refused from now on. Revoking twice changes nothing."""
    row = session.get(m.ApiKey, key_id) if isinstance(key_id, str) and len(key_id) <= 40 else None
    if row is None or row.firm_id != firm_id:
        raise NotFound(f"no API key {key_id[:40]!r}")
    if row.active:
        row.active = False
        audit.append(session, actor=actor, action="api_key.revoke", entity="api_key", entity_id=row.id,
                     before={"active": True}, after={"active": False}, firm_id=firm_id)
    return row
