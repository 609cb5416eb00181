"""A firm's platform connections: settings (validated per family), sealed credentials, login mapping.

Every change is audited — with the settings, never with a secret (the audit entry says which
secrets were set, not their values).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ...adapters.db import models as m
from ...adapters.db.models_platforms import PlatformConnection, PlatformLogin
from ...adapters.platforms.port import PlatformGateway
from ...adapters.platforms.secrets import SecretBox, SecretError
from ...services import audit
from ...services.errors import Conflict, Invalid, NotFound
from .families import FamilyError, family, parse_settings

UTC = dt.timezone.utc
MAX_NAME = 64


@dataclass(frozen=True)
class ConnectionInfo:
    id: int
    firm_id: str
    name: str
    family: str
    settings: dict[str, Any]
    enabled: bool
    secrets_set: tuple[str, ...]
    logins: int
    cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "family": self.family, "settings": self.settings,
                "enabled": self.enabled, "secrets_set": list(self.secrets_set), "logins": self.logins,
                "cursor": self.cursor}


def _check_name(name: str) -> str:
    value = (name or "").strip()
    if not value or len(value) > MAX_NAME or not value.isprintable() or " " in value:
        raise Invalid(f"name must be 1 to {MAX_NAME} printable characters without spaces, got {name!r}")
    return value


def _validated(family_name: str, settings: dict[str, Any]) -> dict[str, Any]:
    try:
        parsed = parse_settings(family_name, settings)
    except FamilyError as exc:
        raise Invalid(str(exc)) from None
    return msgspec.to_builtins(parsed)


def _secret_names(box: SecretBox, row: PlatformConnection) -> tuple[str, ...]:
    try:
        return tuple(sorted(box.open(row.secret)))
    except SecretError:
        return ("(sealed under another key)",)


def add_connection(session: Session, *, firm_id: str, name: str, family_name: str, settings: dict[str, Any],
                   secrets: dict[str, str], actor: str, box: SecretBox | None = None,
                   enabled: bool = True) -> PlatformConnection:
    name = _check_name(name)
    try:
        kind = family(family_name)
    except FamilyError as exc:
        raise Invalid(str(exc)) from None
    clean = _validated(family_name, settings)
    missing = [s for s in kind.secrets if not secrets.get(s)]
    if missing:
        raise Invalid(f"{family_name} needs the secret{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    unknown = sorted(set(secrets) - set(kind.secrets))
    if unknown:
        raise Invalid(f"{family_name} has no secret named {', '.join(unknown)} (it takes {', '.join(kind.secrets)})")
    if session.scalar(select(PlatformConnection.id).where(PlatformConnection.firm_id == firm_id,
                                                          PlatformConnection.name == name)) is not None:
        raise Conflict(f"firm {firm_id} already has a platform connection named {name!r}")
    box = box or SecretBox()
    now = dt.datetime.now(UTC)
    row = PlatformConnection(firm_id=firm_id, name=name, family=family_name, settings=clean,
                             secret=box.seal(dict(secrets)), enabled=enabled, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    audit.append(session, actor=actor, action="platform.connection_add", entity="platform_connection", entity_id=name,
                 after={"family": family_name, "settings": clean, "secrets_set": sorted(secrets), "enabled": enabled},
                 firm_id=firm_id)
    return row


def update_connection(session: Session, *, firm_id: str, name: str, actor: str, settings: dict[str, Any] | None = None,
                      secrets: dict[str, str] | None = None, enabled: bool | None = None,
                      box: SecretBox | None = None) -> PlatformConnection:
    row = get_connection(session, firm_id=firm_id, name=name)
    before = {"settings": row.settings, "enabled": row.enabled}
    after: dict[str, Any] = {}
    if settings is not None:
        row.settings = _validated(row.family, {**(row.settings or {}), **settings})
        after["settings"] = row.settings
    if secrets:
        box = box or SecretBox()
        current = {k: v.reveal() for k, v in box.open(row.secret).items()}
        kind = family(row.family)
        unknown = sorted(set(secrets) - set(kind.secrets))
        if unknown:
            raise Invalid(f"{row.family} has no secret named {', '.join(unknown)}")
        row.secret = box.seal({**current, **secrets})
        after["secrets_changed"] = sorted(secrets)
    if enabled is not None:
        row.enabled = enabled
        after["enabled"] = enabled
    row.updated_at = dt.datetime.now(UTC)
    audit.append(session, actor=actor, action="platform.connection_update", entity="platform_connection",
                 entity_id=row.name, before=before, after=after, firm_id=firm_id)
    return row


def get_connection(session: Session, *, firm_id: str, name: str) -> PlatformConnection:
    row = session.scalar(select(PlatformConnection).where(PlatformConnection.firm_id == firm_id,
                                                          PlatformConnection.name == name))
    if row is None:
        raise NotFound(f"no platform connection {name!r} in firm {firm_id}")
    return row


def find_connection(session: Session, *, firm_id: str, name: str) -> PlatformConnection | None:
    return session.scalar(select(PlatformConnection).where(PlatformConnection.firm_id == firm_id,
                                                           PlatformConnection.name == name))


def list_connections(session: Session, *, firm_id: str | None = None, box: SecretBox | None = None) -> list[ConnectionInfo]:
    query = select(PlatformConnection).order_by(PlatformConnection.firm_id, PlatformConnection.name)
    if firm_id is not None:
        query = query.where(PlatformConnection.firm_id == firm_id)
    rows = list(session.scalars(query))
    counts = dict(session.execute(select(PlatformLogin.connection_id, func.count())
                                  .group_by(PlatformLogin.connection_id)).all())
    box = box or SecretBox()
    return [ConnectionInfo(r.id, r.firm_id, r.name, r.family, dict(r.settings or {}), r.enabled, _secret_names(box, r),
                           counts.get(r.id, 0), r.cursor) for r in rows]


def map_login(session: Session, *, firm_id: str, connection: str, login: str, account: str, actor: str) -> PlatformLogin:
    """Bind platform ``login`` on ``connection`` to the account ``account`` (external id); the account's
    ``platform`` becomes the connection's name and its ``login`` the platform login."""
    row = get_connection(session, firm_id=firm_id, name=connection)
    login = str(login).strip()
    if not login or len(login) > 64:
        raise Invalid("login must be 1 to 64 characters")
    target = session.scalar(select(m.Account).where(m.Account.firm_id == firm_id, m.Account.external_id == account))
    if target is None:
        raise NotFound(f"no account {account!r} in firm {firm_id}")
    taken = session.scalar(select(PlatformLogin).where(PlatformLogin.connection_id == row.id,
                                                       PlatformLogin.login == login))
    if taken is not None:
        if taken.account_id == target.id:
            return taken
        raise Conflict(f"login {login} on {connection} is already mapped to another account")
    existing = session.scalar(select(PlatformLogin).where(PlatformLogin.connection_id == row.id,
                                                          PlatformLogin.account_id == target.id))
    before = None
    if existing is not None:
        before = {"login": existing.login}
        session.delete(existing)
        session.flush()
    mapping = PlatformLogin(connection_id=row.id, firm_id=firm_id, login=login, account_id=target.id,
                            created_at=dt.datetime.now(UTC))
    session.add(mapping)
    target.platform = row.name
    target.login = login
    session.flush()
    audit.append(session, actor=actor, action="platform.login_map", entity="account", entity_id=account,
                 before=before, after={"connection": connection, "login": login}, firm_id=firm_id)
    return mapping


def login_of(session: Session, *, connection_id: int, account_id: int) -> str | None:
    return session.scalar(select(PlatformLogin.login).where(PlatformLogin.connection_id == connection_id,
                                                            PlatformLogin.account_id == account_id))


def mapped_logins(session: Session, *, connection_id: int) -> dict[str, str]:
    rows = session.execute(select(PlatformLogin.login, m.Account.external_id)
                           .join(m.Account, m.Account.id == PlatformLogin.account_id)
                           .where(PlatformLogin.connection_id == connection_id))
    return {login: external for login, external in rows}


def gateway_for(row: PlatformConnection, box: SecretBox | None = None, **extra: Any) -> PlatformGateway:
    """A gateway for a stored connection (not opened yet)."""
    kind = family(row.family)
    settings = parse_settings(row.family, dict(row.settings or {}))
    secrets = (box or SecretBox()).open(row.secret)
    gateway = kind.build(settings, secrets)
    for name, value in extra.items():
        setattr(gateway, name, value)
    return gateway


__all__ = ["ConnectionInfo", "add_connection", "find_connection", "gateway_for", "get_connection", "list_connections",
           "login_of", "map_login", "mapped_logins", "update_connection"]
