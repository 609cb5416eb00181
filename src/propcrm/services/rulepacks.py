"""Rule pack versions of a firm: add (draft), activate, retire — every change audited.

A version's content never changes (its hash is stored); a changed pack is a new version. Accounts
keep the version they were bound to whatever happens here: activating decides what new accounts and
products get, retiring stops a version from being sold or bound again.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..domain.program import compile_pack
from ..domain.rulepack import RulePack, content_hash, parse_pack
from . import audit
from .catalog import CatalogError, add_pack
from .errors import Conflict, Invalid, NotFound

STATUSES = ("draft", "active", "retired")
MAX_PACK_BYTES = 1024 * 1024


def read_pack(body: bytes | str, *, source: str = "request body") -> RulePack:
    """A validated, compilable pack from YAML or JSON text, or :class:`Invalid` saying what is wrong."""
    raw = body.encode() if isinstance(body, str) else body
    if len(raw) > MAX_PACK_BYTES:
        raise Invalid(f"a rule pack is at most {MAX_PACK_BYTES:,} bytes")
    try:
        pack = parse_pack(raw, source=source)
        compile_pack(pack)
    except RecursionError:
        raise Invalid(f"{source}: nested too deeply to be a rule pack") from None
    except (ValueError, KeyError, TypeError) as exc:  # RulePackError is a ValueError; bad zones are KeyErrors
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise Invalid(str(message) if str(message).startswith(source) else f"{source}: {message}") from None
    return pack


def version_view(row: m.RulePackVersion, *, with_body: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"id": row.id, "pack_id": row.pack_id, "version": row.version, "status": row.status,
                           "content_hash": row.content_hash, "created_at": row.created_at}
    if with_body:
        out["pack"] = json.loads(row.body)
    return out


def list_versions(session: Session, *, firm_id: str, pack_id: str | None = None, status: str | None = None) -> list[m.RulePackVersion]:
    if status is not None and status not in STATUSES:
        raise Invalid(f"status must be one of {', '.join(STATUSES)}")
    query = select(m.RulePackVersion).where(m.RulePackVersion.firm_id == firm_id)
    if pack_id is not None:
        query = query.where(m.RulePackVersion.pack_id == pack_id)
    if status is not None:
        query = query.where(m.RulePackVersion.status == status)
    return list(session.scalars(query.order_by(m.RulePackVersion.pack_id, m.RulePackVersion.version)))


def get_version(session: Session, *, firm_id: str, version_id: int, for_update: bool = False) -> m.RulePackVersion:
    query = select(m.RulePackVersion).where(m.RulePackVersion.firm_id == firm_id, m.RulePackVersion.id == version_id)
    if for_update and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise NotFound(f"no rule pack version {version_id}")
    return row


def add_version(session: Session, *, firm_id: str, pack: RulePack, actor: str, activate: bool = False) -> tuple[m.RulePackVersion, bool]:
    """Store a pack as a draft version (and activate it); ``(row, created)``.

    The same id, version and content again changes nothing (``created`` is False); the same id and
    version with other content is a :class:`Conflict`.
    """
    digest = content_hash(pack)
    existing = session.scalars(
        select(m.RulePackVersion.id).where(
            m.RulePackVersion.firm_id == firm_id,
            m.RulePackVersion.pack_id == pack.id,
            m.RulePackVersion.version == pack.version,
        )
    ).first()
    try:
        row = add_pack(session, firm_id=firm_id, pack=pack, activate=False)
    except CatalogError as exc:
        raise Conflict(str(exc)) from None
    created = existing is None
    if created:
        audit.append(session, actor=actor, action="pack.add", entity="rule_pack", entity_id=f"{pack.id} v{pack.version}",
                     after={"version_id": row.id, "content_hash": digest, "status": row.status}, firm_id=firm_id)
    if activate and row.status != "active":
        activate_version(session, firm_id=firm_id, version_id=row.id, actor=actor)
    return row, created


def activate_version(session: Session, *, firm_id: str, version_id: int, actor: str) -> m.RulePackVersion:
    """Make a version the pack's active one (a draft, or a retired one brought back); the active one retires."""
    row = get_version(session, firm_id=firm_id, version_id=version_id, for_update=True)
    if row.status == "active":
        raise Conflict(f"rule pack {row.pack_id} v{row.version} is already active")
    query = select(m.RulePackVersion).where(
        m.RulePackVersion.firm_id == firm_id,
        m.RulePackVersion.pack_id == row.pack_id,
        m.RulePackVersion.status == "active",
        m.RulePackVersion.id != row.id,
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    retired = list(session.scalars(query))
    for other in retired:
        other.status = "retired"
    before = row.status
    row.status = "active"
    session.flush()
    audit.append(session, actor=actor, action="pack.activate", entity="rule_pack", entity_id=f"{row.pack_id} v{row.version}",
                 before={"status": before}, after={"status": "active", "version_id": row.id,
                                                   "retired": [f"{o.pack_id} v{o.version}" for o in retired]},
                 firm_id=firm_id)
    return row


def retire_version(session: Session, *, firm_id: str, version_id: int, actor: str) -> m.RulePackVersion:
    """Stop selling and binding a version; accounts already bound to it keep it."""
    row = get_version(session, firm_id=firm_id, version_id=version_id, for_update=True)
    if row.status == "retired":
        raise Conflict(f"rule pack {row.pack_id} v{row.version} is already retired")
    before = row.status
    row.status = "retired"
    session.flush()
    audit.append(session, actor=actor, action="pack.retire", entity="rule_pack", entity_id=f"{row.pack_id} v{row.version}",
                 before={"status": before}, after={"status": "retired", "version_id": row.id}, firm_id=firm_id)
    return row
