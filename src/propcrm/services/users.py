"""People who log in: staff of a firm (admin, risk, finance, support) and traders; passwords; sessions.

Passwords are hashed with argon2id (``argon2-cffi``'s defaults) and never stored, logged or audited;
a new one must meet :mod:`propcrm.services.passwords`. A login issues a random token (bearer header or
session cookie); only its SHA-256 is stored in ``user_sessions``, so a copy of the database lets nobody
log in, and logout revokes the token for real. Logging in itself (throttling, verifying the password
outside any write transaction, which attempts are audited) is :mod:`propcrm.services.logins`.

An admin manages the firm's users: creates them, disables and enables them (a disabled user's sessions
end at once and they cannot log in), resets a password (the user's sessions end), changes a staff role,
and ends a user's sessions. Everyone changes their own password (the current one is needed; their other
sessions end) and ends their own other sessions. Each change is audited, never with a password.

**Sponsors** (the maker-checker rule of payouts, docs/lifecycle.md): a user's sponsors are the users who
created them (``created_by_user_id``), last reset their password (``password_set_by_user_id``) or last
set their role (``role_set_by_user_id``) — each one could have chosen who this user is or known their
password. The installation's operator (``propcrm users create``, ``propcrm users reset-password`` and
``set-role`` on the command line, the demo seed) sponsors nobody: such users are roots.
:func:`dependence` says why two users may not act as two people on one payment.
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
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.user_sessions import UserSession
from ..roles import ROLES, STAFF_ROLES
from . import audit
from .errors import Conflict, Invalid, NotFound
from .passwords import MAX_PASSWORD, MIN_PASSWORD, generate_password, password_problem

UTC = dt.timezone.utc
SESSION_TTL = dt.timedelta(hours=12)
TOKEN_PREFIX = "pst_"

_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")
_HASHER = PasswordHasher()


def use_password_hasher(hasher: PasswordHasher) -> PasswordHasher:
    """Hash and verify passwords with ``hasher`` from now on; returns the one used before.

    The production parameters are argon2-cffi's defaults (``_HASHER``); the test suite swaps in argon2id at
    its cheapest cost once per session (hashes still verify the same way; only the cost differs).
    """
    global _HASHER
    previous, _HASHER = _HASHER, hasher
    dummy_hash.cache_clear()  # an unknown e-mail must cost what a wrong password costs, with these parameters
    return previous


@functools.cache
def dummy_hash() -> str:
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
    must_change_password: bool = False
    """The password is a one-time one (onboarding, a reset): only the password change and logout are open."""

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
        return cls(user_id=user.id, firm_id=user.firm_id, email=user.email, role=user.role, trader_id=user.trader_id,
                   must_change_password=bool(user.must_change_password))


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
    by_user_id: int | None = None,
) -> m.User:
    """A new active user of a firm. A ``trader`` user must link a trader of the same firm; staff must not.

    ``by_user_id``: the user (an admin) who creates them, their sponsor; ``None`` for the installation's
    operator (the command line, the demo seed), whose users are roots.
    """
    email = normalise_email(email)
    if not _EMAIL.fullmatch(email) or len(email) > 320 or not email.isprintable():
        raise Invalid(f"not an e-mail address: {email[:80]!r}")
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}, got {str(role)[:40]!r}")
    if role == "operator" and by_user_id is not None:
        raise Invalid("an operator is made on the command line (propcrm users create --role operator), not by a user")
    problem = password_problem(password, email=email, firm_id=firm_id)
    if problem is not None:
        raise Invalid(problem)
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
        firm_id=firm_id, email=email, password_hash=hash_password(password), role=role, trader_id=trader_id, active=True,
        created_by_user_id=by_user_id, password_set_by_user_id=by_user_id, role_set_by_user_id=by_user_id,
    )
    session.add(user)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="user.create",
        entity="user",
        entity_id=str(user.id),
        after={"email": email, "role": role, "trader_id": trader_id, "created_by_user_id": by_user_id},
        firm_id=firm_id,
    )
    return user


def get_user(session: Session, *, firm_id: str, user_id: int) -> m.User:
    """A user of the firm, or :class:`NotFound` (also for another firm's user)."""
    user = session.get(m.User, user_id)
    if user is None or user.firm_id != firm_id:
        raise NotFound(f"no user {user_id}")
    return user


def user_by_email(session: Session, *, firm_id: str, email: str) -> m.User:
    found = session.scalars(select(m.User).where(m.User.firm_id == firm_id,
                                                 m.User.email == normalise_email(email))).first()
    if found is None:
        raise NotFound(f"no user {normalise_email(email)[:80]!r} in firm {firm_id}")
    return found


def _not_yourself(user: m.User, by_user_id: int | None, what: str) -> None:
    if by_user_id is not None and user.id == by_user_id:
        raise Conflict(f"you cannot {what} yourself; another admin (or the operator, on the command line) must")
    if by_user_id is not None and user.role == "operator":  # above the firms: not a firm admin's to manage
        raise Conflict(f"an operator is managed on the command line; an admin cannot {what} them")


def set_active(session: Session, *, firm_id: str, user_id: int, active: bool, actor: str,
               by_user_id: int | None = None, now: dt.datetime | None = None) -> m.User:
    """Disable (``active=False``: every session of the user ends now, logging in is refused) or enable a
    user. An admin cannot disable themselves (nobody would be left to undo a mistake)."""
    user = get_user(session, firm_id=firm_id, user_id=user_id)
    if not active:
        _not_yourself(user, by_user_id, "disable")
    if user.active == active:
        raise Conflict(f"user {user.id} ({user.email}) is already {'enabled' if active else 'disabled'}")
    user.active = active
    ended = 0 if active else _end_sessions(session, user.id, now=now)
    audit.append(session, actor=actor, action="user.enable" if active else "user.disable", entity="user",
                 entity_id=str(user.id), before={"active": not active},
                 after={"active": active, "email": user.email, **({} if active else {"sessions_ended": ended})},
                 firm_id=firm_id)
    return user


def reset_password(session: Session, *, firm_id: str, user_id: int, password: str | None, actor: str,
                   by_user_id: int | None = None, now: dt.datetime | None = None) -> tuple[m.User, str | None]:
    """An admin (or the operator) sets a user's password: ``password``, or a generated one (returned,
    to be handed over once). The user's sessions end. The admin becomes the user's sponsor (they know the
    password); the operator's reset makes the user a root again. Your own password is changed with
    :func:`change_own_password`, which needs the current one."""
    user = get_user(session, firm_id=firm_id, user_id=user_id)
    if by_user_id is not None and user.id == by_user_id:
        raise Conflict("change your own password with your current one (POST /api/v1/me/password)")
    _not_yourself(user, by_user_id, "reset the password of")
    generated = None
    if password is None:
        password = generated = generate_password(email=user.email, firm_id=firm_id)
    problem = password_problem(password, email=user.email, firm_id=firm_id)
    if problem is not None:
        raise Invalid(problem)
    user.password_hash = hash_password(password)
    before = user.password_set_by_user_id
    user.password_set_by_user_id = by_user_id
    user.must_change_password = True  # the one who set it knows it: the user must choose their own
    ended = _end_sessions(session, user.id, now=now)
    audit.append(session, actor=actor, action="user.password_reset", entity="user", entity_id=str(user.id),
                 before={"password_set_by_user_id": before},
                 after={"email": user.email, "password_set_by_user_id": by_user_id, "sessions_ended": ended,
                        "generated": generated is not None}, firm_id=firm_id)
    return user, generated


def change_own_password(session: Session, *, user_id: int, verified_hash: str, new_password: str, actor: str,
                        keep_token: str | None = None, now: dt.datetime | None = None) -> int:
    """Set the user's own new password; the caller verified the current one against ``verified_hash``
    (outside any write transaction: argon2 is slow). Refused when the stored hash changed meanwhile. The
    user's other sessions end (``keep_token``, the session making the change, stays); returns how many.

    Who last *set* the password (its sponsor, after an admin's reset) does not change: the admin who
    reset it could have logged in and changed it too. Only the operator's reset clears it."""
    user = session.get(m.User, user_id)
    if user is None or not user.active:
        raise NotFound(f"no user {user_id}")
    if user.password_hash != verified_hash:
        raise Conflict("the password was changed meanwhile; log in again")
    problem = password_problem(new_password, email=user.email, firm_id=user.firm_id)
    if problem is not None:
        raise Invalid(problem)
    user.password_hash = hash_password(new_password)
    user.must_change_password = False
    ended = _end_sessions(session, user.id, now=now, keep=keep_token)
    audit.append(session, actor=actor, action="user.password_change", entity="user", entity_id=str(user.id),
                 after={"email": user.email, "other_sessions_ended": ended}, firm_id=user.firm_id)
    return ended


def set_role(session: Session, *, firm_id: str, user_id: int, role: str, actor: str,
             by_user_id: int | None = None) -> m.User:
    """Change a staff user's role to another staff role (a trader user stays a trader, and staff do not
    become traders). The admin who does it becomes the user's sponsor; an admin cannot change their own."""
    user = get_user(session, firm_id=firm_id, user_id=user_id)
    if role not in STAFF_ROLES:
        raise Invalid(f"role must be one of {', '.join(STAFF_ROLES)}, got {str(role)[:40]!r}")
    if user.role not in STAFF_ROLES:
        raise Invalid(f"user {user.id} is a {user.role} user; only a staff user's role can be changed")
    _not_yourself(user, by_user_id, "change the role of")
    if user.role == role:
        raise Conflict(f"user {user.id} ({user.email}) is already {role}")
    before = {"role": user.role, "role_set_by_user_id": user.role_set_by_user_id}
    user.role, user.role_set_by_user_id = role, by_user_id
    audit.append(session, actor=actor, action="user.role_change", entity="user", entity_id=str(user.id),
                 before=before, after={"role": role, "role_set_by_user_id": by_user_id, "email": user.email},
                 firm_id=firm_id)
    return user


def end_sessions(session: Session, *, firm_id: str, user_id: int, actor: str, keep_token: str | None = None,
                 now: dt.datetime | None = None) -> int:
    """End every live session of a user (an admin's action, or one's own with ``keep_token`` = the
    session asking, which stays). Returns how many ended; audited."""
    user = get_user(session, firm_id=firm_id, user_id=user_id)
    ended = _end_sessions(session, user.id, now=now, keep=keep_token)
    audit.append(session, actor=actor, action="user.sessions_ended", entity="user", entity_id=str(user.id),
                 after={"email": user.email, "sessions_ended": ended, "kept_current": keep_token is not None},
                 firm_id=firm_id)
    return ended


def _end_sessions(session: Session, user_id: int, *, now: dt.datetime | None = None, keep: str | None = None) -> int:
    now = now or dt.datetime.now(UTC)
    query = (update(UserSession)
             .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None), UserSession.expires_at > now)
             .values(revoked_at=now))
    if keep:
        query = query.where(UserSession.token_hash != token_hash(keep))
    return session.execute(query.execution_options(synchronize_session=False)).rowcount or 0


def live_sessions(session: Session, *, user_id: int, now: dt.datetime | None = None) -> int:
    now = now or dt.datetime.now(UTC)
    return len(session.scalars(select(UserSession.token_hash).where(
        UserSession.user_id == user_id, UserSession.revoked_at.is_(None), UserSession.expires_at > now)).all())


# --------------------------------------------------------------------------------------------------
# sponsors: who could have chosen or controlled whom


def sponsors(user: m.User) -> set[int]:
    """The users who created ``user``, last reset their password or last set their role (not themselves)."""
    return {uid for uid in (user.created_by_user_id, user.password_set_by_user_id, user.role_set_by_user_id)
            if uid is not None and uid != user.id}


def sponsor_chain(session: Session, user_id: int) -> dict[int, m.User]:
    """Every transitive sponsor of the user, by id (the user's sponsors, theirs, and so on)."""
    found: dict[int, m.User] = {}
    start = session.get(m.User, user_id)
    waiting = sorted(sponsors(start)) if start is not None else []
    while waiting:
        uid = waiting.pop()
        if uid in found or uid == user_id:
            continue
        row = session.get(m.User, uid)
        if row is None:
            continue
        found[uid] = row
        waiting.extend(sponsors(row) - set(found))
    return found


def dependence(session: Session, *, firm_id: str, first: int, second: int) -> str | None:
    """Why users ``first`` and ``second`` may not act as two people on one payment, or ``None``: they are
    the same user, one sponsored the other (directly or through others), or they share a sponsor."""
    if first == second:
        return "it is the same user"
    a, b = session.get(m.User, first), session.get(m.User, second)
    if a is None or b is None or a.firm_id != firm_id or b.firm_id != firm_id:
        return "one of them is not a user of this firm"
    up_a, up_b = sponsor_chain(session, a.id), sponsor_chain(session, b.id)
    if a.id in up_b:
        return f"{a.email} sponsored {b.email} (created them, reset their password or set their role, or sponsored who did)"
    if b.id in up_a:
        return f"{b.email} sponsored {a.email} (created them, reset their password or set their role, or sponsored who did)"
    shared = sorted(set(up_a) & set(up_b))
    if shared:
        return f"{a.email} and {b.email} share a sponsor, {up_a[shared[0]].email}"
    return None


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
        verify_password(dummy_hash(), password)
        reason = "unknown user"
    elif not verify_password(user.password_hash, password):
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


def verify_password(stored: str, password: str) -> bool:
    """``password`` matches the stored argon2 hash (a malformed hash matches nothing)."""
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """The stored hash was made with other argon2 parameters than this process uses."""
    return _HASHER.check_needs_rehash(stored)


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
        select(UserSession, m.User, m.Firm.suspended_at)
        .join(m.User, m.User.id == UserSession.user_id)
        .join(m.Firm, m.Firm.id == m.User.firm_id)
        .where(UserSession.token_hash == token_hash(token))
    ).first()
    if row is None:
        return None
    login, user, suspended_at = row
    if login.revoked_at is not None or login.expires_at <= now or not user.active or user.firm_id != login.firm_id:
        return None
    if suspended_at is not None:  # the operator suspended the firm (token_refusal says so)
        return None
    return Principal.of(user)


def suspension(session: Session, firm_id: str) -> str | None:
    """Why the firm is suspended by the operator (services/firms.py), or ``None`` while it is not."""
    row = session.execute(select(m.Firm.suspended_at, m.Firm.suspended_reason).where(m.Firm.id == firm_id)).first()
    if row is None or row[0] is None:
        return None
    return f"the firm {firm_id!r} is suspended by the operator ({row[1]}); ask your operator"


def token_refusal(session: Session, *, token: str) -> str | None:
    """Why a live token of a suspended firm is refused (``None``: not that; the token is unknown or dead)."""
    if not token or len(token) > 200:
        return None
    firm_id = session.scalar(select(UserSession.firm_id).where(UserSession.token_hash == token_hash(token)))
    return suspension(session, firm_id) if firm_id is not None else None


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
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "Principal",
    "ROLES",
    "STAFF_ROLES",
    "authenticate",
    "change_own_password",
    "create_user",
    "dependence",
    "end_sessions",
    "get_user",
    "hash_password",
    "issue_token",
    "list_users",
    "reset_password",
    "resolve_token",
    "suspension",
    "token_refusal",
    "revoke_token",
    "set_active",
    "set_role",
    "sponsor_chain",
    "use_password_hasher",
]
