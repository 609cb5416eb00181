"""People who log in: staff of a firm (admin, risk, finance, support) and traders; passwords; sessions.

Passwords are hashed with argon2id (``argon2-cffi``'s defaults) and never stored, logged or audited.
A login issues a random token (bearer header or session cookie); only its SHA-256 is stored in
``user_sessions``, so a copy of the database lets nobody log in, and logout revokes the token for
real. Every login and every failed login is appended to the audit log — with the e-mail that was
tried, never the password.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.user_sessions import UserSession
from . import audit
from .errors import Conflict, Invalid, NotFound

UTC = dt.timezone.utc
ROLES = ("admin", "risk", "finance", "support", "trader")
STAFF_ROLES = ("admin", "risk", "finance", "support")
SESSION_TTL = dt.timedelta(hours=12)
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # argon2 takes any length; a bound keeps a login request cheap to refuse
TOKEN_PREFIX = "pst_"

_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")
_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the e-mail is unknown, so that a miss costs as much time as a wrong password."""
    return _HASHER.hash(secrets.token_hex(16))


class AuthenticationFailed(Exception):
    """Wrong firm, e-mail or password, or an inactive user; deliberately says no more than that."""


@dataclass(frozen=True)
class Principal:
    """Who is making a request, detached from any database session."""

    user_id: int
    firm_id: str
    email: str
    role: str
    trader_id: int | None

    @property
    def actor(self) -> str:
        """How the audit log names this user."""
        return f"user:{self.user_id}:{self.email}"

    @property
    def trader_scope(self) -> int | None:
        """The only trader whose data this user may see (traders), or ``None`` (staff: the whole firm).

        A trader user without a trader (impossible through :func:`create_user`) sees nothing (-1).
        """
        if self.role != "trader":
            return None
        return self.trader_id if self.trader_id is not None else -1

    @classmethod
    def of(cls, user: m.User) -> Principal:
        return cls(user_id=user.id, firm_id=user.firm_id, email=user.email, role=user.role, trader_id=user.trader_id)


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# --------------------------------------------------------------------------------------------------
# users


def create_user(
    session: Session,
    *,
    firm_id: str,
    email: str,
    password: str,
    role: str,
    trader_id: int | None = None,
    actor: str = "system",
) -> m.User:
    """A new active user of a firm. A ``trader`` user must link a trader of the same firm; staff must not."""
    email = normalise_email(email)
    if not _EMAIL.fullmatch(email) or len(email) > 320 or not email.isprintable():
        raise Invalid(f"not an e-mail address: {email[:80]!r}")
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}, got {str(role)[:40]!r}")
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise Invalid(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise Invalid(f"the password must have at most {MAX_PASSWORD} characters")
    if session.get(m.Firm, firm_id) is None:
        raise NotFound(f"no firm {firm_id!r}")
    if role == "trader":
        if trader_id is None:
            raise Invalid("a trader user must be linked to a trader (trader_id)")
        trader = session.get(m.Trader, trader_id)
        if trader is None or trader.firm_id != firm_id:
            raise Invalid(f"no trader {trader_id} in firm {firm_id}")
    elif trader_id is not None:
        raise Invalid(f"only trader users are linked to a trader; a {role} user sees the whole firm")
    clash = session.scalars(select(m.User.id).where(m.User.firm_id == firm_id, m.User.email == email)).first()
    if clash is not None:
        raise Conflict(f"a user {email} already exists in firm {firm_id}")
    user = m.User(
        firm_id=firm_id, email=email, password_hash=hash_password(password), role=role, trader_id=trader_id, active=True
    )
    session.add(user)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="user.create",
        entity="user",
        entity_id=str(user.id),
        after={"email": email, "role": role, "trader_id": trader_id},
        firm_id=firm_id,
    )
    return user


def list_users(session: Session, *, firm_id: str) -> list[m.User]:
    return list(session.scalars(select(m.User).where(m.User.firm_id == firm_id).order_by(m.User.id)))


def authenticate(session: Session, *, firm_id: str, email: str, password: str) -> m.User:
    """The user with these credentials, or :class:`AuthenticationFailed`; both outcomes are audited.

    The caller must commit even when this raises, so that the failed attempt stays in the audit log.
    """
    email = normalise_email(email) if isinstance(email, str) else ""
    firm_id = firm_id.strip() if isinstance(firm_id, str) else ""
    usable = 0 < len(firm_id) <= 64 and 0 < len(email) <= 320 and firm_id.isprintable() and email.isprintable()
    user = None
    if usable:
        user = session.scalars(select(m.User).where(m.User.firm_id == firm_id, m.User.email == email)).first()
    reason = None
    if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD:
        reason = "unusable password"
    elif user is None:
        _verify(_dummy_hash(), password)
        reason = "unknown user"
    elif not _verify(user.password_hash, password):
        reason = "wrong password"
    elif not user.active:
        reason = "inactive user"
    if reason is not None:
        audit.append(
            session,
            actor="anonymous",
            action="user.login_failed",
            entity="user",
            entity_id=str(user.id) if user is not None else None,
            after={"firm": _printable(firm_id, 64), "email": _printable(email, 320), "reason": reason},
            firm_id=firm_id if usable and session.get(m.Firm, firm_id) is not None else None,
        )
        raise AuthenticationFailed("wrong firm, e-mail or password")
    assert user is not None
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    audit.append(
        session,
        actor=f"user:{user.id}:{user.email}",
        action="user.login",
        entity="user",
        entity_id=str(user.id),
        after={"email": user.email, "role": user.role},
        firm_id=user.firm_id,
    )
    return user


def _printable(text: str, limit: int) -> str:
    """What was typed, fit for the audit log: no control characters, bounded."""
    return "".join(ch for ch in text[: limit * 2] if ch.isprintable())[:limit]


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# --------------------------------------------------------------------------------------------------
# sessions (bearer tokens and cookies)


def issue_token(
    session: Session, *, user: m.User, ttl: dt.timedelta = SESSION_TTL, now: dt.datetime | None = None
) -> tuple[str, dt.datetime]:
    """A new random token for ``user`` and when it expires; only its SHA-256 is stored.

    Also forgets the user's expired and revoked sessions, so the table holds live ones (and the
    recent past) only.
    """
    now = now or dt.datetime.now(UTC)
    session.execute(
        delete(UserSession).where(
            UserSession.user_id == user.id,
            or_(UserSession.expires_at < now, UserSession.revoked_at.is_not(None)),
        )
    )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = now + ttl
    session.add(UserSession(token_hash=token_hash(token), firm_id=user.firm_id, user_id=user.id, created_at=now,
                            expires_at=expires_at))
    session.flush()
    return token, expires_at


def resolve_token(session: Session, *, token: str, now: dt.datetime | None = None) -> Principal | None:
    """Who holds ``token``: ``None`` when it is unknown, expired, revoked or its user is inactive."""
    if not token or len(token) > 200 or not token.startswith(TOKEN_PREFIX):
        return None
    now = now or dt.datetime.now(UTC)
    row = session.execute(
        select(UserSession, m.User)
        .join(m.User, m.User.id == UserSession.user_id)
        .where(UserSession.token_hash == token_hash(token))
    ).first()
    if row is None:
        return None
    login, user = row
    if login.revoked_at is not None or login.expires_at <= now or not user.active or user.firm_id != login.firm_id:
        return None
    return Principal.of(user)


def revoke_token(session: Session, *, token: str, actor: str, now: dt.datetime | None = None) -> bool:
    """End the session of ``token`` (logout); audited. ``False`` when there was no live session."""
    now = now or dt.datetime.now(UTC)
    row = session.get(UserSession, token_hash(token)) if token else None
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = now
    audit.append(session, actor=actor, action="user.logout", entity="user", entity_id=str(row.user_id),
                 firm_id=row.firm_id)
    return True


__all__ = [
    "AuthenticationFailed",
    "Principal",
    "ROLES",
    "STAFF_ROLES",
    "authenticate",
    "create_user",
    "hash_password",
    "issue_token",
    "list_users",
    "resolve_token",
    "revoke_token",
]
