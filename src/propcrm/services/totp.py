"""Two-factor login with time-based one-time codes (TOTP, RFC 6238, through ``pyotp``).

For any user — staff now, the trader portal later: nothing here knows about roles. Enrolment is two steps
so a half-set-up authenticator never locks anyone out: :func:`start_enrolment` keeps a new secret and
gives the ``otpauth://`` address (QR code) to scan; :func:`confirm_enrolment` takes a code from the app,
switches two-factor on and returns ten recovery codes, shown once and kept only as argon2 hashes.

At login the password is checked first (:mod:`.logins`); for a user with two-factor on it does not issue
a session but a *challenge* (:func:`open_challenge`): a random ticket, only its SHA-256 stored, valid for
:data:`CHALLENGE_TTL` and :data:`CHALLENGE_ATTEMPTS` codes. :func:`check_code` accepts the current code
(±1 step of clock drift, each step used once) or an unused recovery code (then used up; its argon2 check
runs in a read unit of work first, :func:`recovery_candidate`, never inside the write one).
An admin may switch a user's two-factor off (a lost phone), audited; the user enrols again.

The TOTP secret is kept sealed with the secret store's key (``adapters/platforms/secrets.py``,
``PROPCRM_SECRET_KEY``; migration 0017 sealed the rows written before): a copy of the database gives
nobody a staff member's codes. :func:`secret_of` opens it for the check and the enrolment page only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Literal

import pyotp
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.platforms.secrets import SecretBox
from . import audit
from .errors import Conflict, Invalid
from .users import get_user, hash_password, verify_password

UTC = dt.timezone.utc
ISSUER = "propcrm"
CHALLENGE_TTL = dt.timedelta(minutes=5)
CHALLENGE_ATTEMPTS = 5
RECOVERY_CODES = 10
DRIFT_STEPS = 1  # a code of the previous or next 30 s step is accepted: phones' clocks drift


def secret_of(user: m.User, box: SecretBox | None = None) -> str | None:
    """The user's TOTP secret, opened (``None``: none kept)."""
    opened = (box or SecretBox()).open_text(user.totp_secret) if user.totp_secret else None
    return opened.reveal() if opened is not None else None


def enabled(user: m.User) -> bool:
    return user.totp_enabled_at is not None and bool(user.totp_secret)


def _clean(code: str) -> str:
    return "".join(ch for ch in (code or "") if ch.isalnum()).lower()[:32] if isinstance(code, str) else ""


def start_enrolment(session: Session, *, user_id: int, firm_id: str) -> tuple[str, str]:
    """A new secret for the user (two-factor stays off until confirmed): ``(secret, otpauth address)``."""
    user = get_user(session, firm_id=firm_id, user_id=user_id)
    if enabled(user):
        raise Conflict("two-factor login is already on; an admin switches it off before you enrol again")
    secret = pyotp.random_base32()
    user.totp_secret = SecretBox().seal_text(secret)
    user.totp_last_step = None
    session.flush()
    return secret, provisioning_uri(user, secret=secret)


def provisioning_uri(user: m.User, *, secret: str | None = None, issuer: str = ISSUER) -> str:
    """The ``otpauth://`` address; ``issuer``: the name the authenticator app shows (the firm's product)."""
    return pyotp.TOTP(secret or secret_of(user)).provisioning_uri(name=f"{user.email} ({user.firm_id})",
                                                                  issuer_name=issuer)


def _step_of(user: m.User, code: str, now: dt.datetime) -> int | None:
    """The time step whose code ``code`` is, within the drift allowed and not used before; else ``None``."""
    if not user.totp_secret or not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret_of(user))
    current = int(now.timestamp()) // totp.interval
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if secrets.compare_digest(totp.generate_otp(step), code):
            if user.totp_last_step is not None and step <= user.totp_last_step:
                return None  # replayed (or older than one used): each code works once
            return step
    return None


def confirm_enrolment(session: Session, *, user_id: int, firm_id: str, code: str, actor: str,
                      now: dt.datetime | None = None) -> list[str]:
    """Switch two-factor on with a code from the app; the recovery codes (shown once) are returned."""
    user = get_user(session, firm_id=firm_id, user_id=user_id)
    if enabled(user):
        raise Conflict("two-factor login is already on")
    if not user.totp_secret:
        raise Invalid("code: start the enrolment first")
    step = _step_of(user, _clean(code), now or dt.datetime.now(UTC))
    if step is None:
        raise Invalid("code: that is not the code your app shows now; check the phone's clock and try again")
    user.totp_last_step = step
    user.totp_enabled_at = now or dt.datetime.now(UTC)
    codes = _new_recovery_codes(session, user)
    audit.append(session, actor=actor, action="user.totp_enabled", entity="user", entity_id=str(user.id),
                 after={"email": user.email, "recovery_codes": len(codes)}, firm_id=user.firm_id)
    return codes


def _new_recovery_codes(session: Session, user: m.User) -> list[str]:
    session.execute(delete(m.RecoveryCode).where(m.RecoveryCode.user_id == user.id))
    codes = [f"{secrets.token_hex(4)}-{secrets.token_hex(4)}" for _ in range(RECOVERY_CODES)]
    for code in codes:
        session.add(m.RecoveryCode(user_id=user.id, code_hash=hash_password(_clean(code)),
                                   created_at=dt.datetime.now(UTC)))
    session.flush()
    return codes


def disable(session: Session, *, firm_id: str, user_id: int, actor: str, by_user_id: int | None = None) -> m.User:
    """Switch a user's two-factor off (an admin, for a lost phone; never their own)."""
    user = get_user(session, firm_id=firm_id, user_id=user_id)
    if by_user_id is not None and by_user_id == user.id:
        raise Conflict("you cannot switch off your own two-factor login; another admin does")
    if not user.totp_secret and user.totp_enabled_at is None:
        raise Conflict(f"{user.email} has no two-factor login")
    user.totp_secret = user.totp_enabled_at = user.totp_last_step = None
    session.execute(delete(m.RecoveryCode).where(m.RecoveryCode.user_id == user.id))
    session.execute(delete(m.LoginChallenge).where(m.LoginChallenge.user_id == user.id))
    audit.append(session, actor=actor, action="user.totp_disabled", entity="user", entity_id=str(user.id),
                 after={"email": user.email}, firm_id=firm_id)
    return user


# --------------------------------------------------------------------------------------------------
# the second step of a login


def _ticket_hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def open_challenge(session: Session, *, user: m.User, now: dt.datetime | None = None) -> str:
    """A ticket for the second step of ``user``'s login (their password was right)."""
    now = now or dt.datetime.now(UTC)
    session.execute(delete(m.LoginChallenge).where(m.LoginChallenge.user_id == user.id,
                                                   m.LoginChallenge.expires_at < now))
    ticket = "plc_" + secrets.token_urlsafe(32)
    session.add(m.LoginChallenge(token_hash=_ticket_hash(ticket), user_id=user.id, created_at=now,
                                 expires_at=now + CHALLENGE_TTL, attempts=0))
    session.flush()
    return ticket


def challenge_user(session: Session, *, ticket: str, now: dt.datetime | None = None) -> m.User | None:
    """The user a live ticket belongs to (it is locked for the check), or ``None``."""
    if not isinstance(ticket, str) or not ticket.startswith("plc_") or len(ticket) > 100:
        return None
    row = session.scalar(select(m.LoginChallenge).where(m.LoginChallenge.token_hash == _ticket_hash(ticket))
                         .with_for_update())
    if row is None or row.expires_at <= (now or dt.datetime.now(UTC)) or row.attempts >= CHALLENGE_ATTEMPTS:
        return None
    user = session.get(m.User, row.user_id)
    return user if user is not None and user.active and enabled(user) else None


def recovery_candidate(session: Session, *, ticket: str, code: str) -> int | None:
    """The unused recovery code of the ticket's user that ``code`` is, or ``None``. Read-only: call it in a
    read unit of work, before :func:`check_code`'s write one, so argon2 never runs holding a write lock."""
    text = _clean(code)
    if len(text) != 16 or not isinstance(ticket, str) or not ticket.startswith("plc_") or len(ticket) > 100:
        return None
    user_id = session.scalar(select(m.LoginChallenge.user_id).where(m.LoginChallenge.token_hash == _ticket_hash(ticket)))
    if user_id is None:
        return None
    for code_id, code_hash in session.execute(select(m.RecoveryCode.id, m.RecoveryCode.code_hash).where(
            m.RecoveryCode.user_id == user_id, m.RecoveryCode.used_at.is_(None))):
        if verify_password(code_hash, text):
            return code_id
    return None


def check_code(session: Session, *, ticket: str, code: str, recovery_id: int | None = None,
               now: dt.datetime | None = None) -> tuple[m.User | None, Literal["totp", "recovery"] | str]:
    """Check a second-step code: ``(user, "totp" | "recovery")`` and the ticket is used up; or
    ``(None, why)`` and the attempt is counted on the ticket. ``recovery_id``: what
    :func:`recovery_candidate` found for this code (still unused now, and the ticket's user's)."""
    now = now or dt.datetime.now(UTC)
    user = challenge_user(session, ticket=ticket, now=now)
    if user is None:
        return None, "the login expired; enter your password again"
    row = session.scalar(select(m.LoginChallenge).where(m.LoginChallenge.token_hash == _ticket_hash(ticket)))
    how: str | None = None
    step = _step_of(user, _clean(code), now)
    if step is not None:
        user.totp_last_step = step
        how = "totp"
    elif recovery_id is not None:
        recovery = session.scalar(select(m.RecoveryCode).where(
            m.RecoveryCode.id == recovery_id, m.RecoveryCode.user_id == user.id, m.RecoveryCode.used_at.is_(None))
            .with_for_update())
        if recovery is not None:
            recovery.used_at = now
            how = "recovery"
    if how is None:
        row.attempts += 1
        return None, "wrong code"
    session.delete(row)
    session.flush()
    return user, how


def recovery_codes_left(session: Session, *, user_id: int) -> int:
    return len(session.scalars(select(m.RecoveryCode.id).where(m.RecoveryCode.user_id == user_id,
                                                               m.RecoveryCode.used_at.is_(None))).all())


def qr_svg(uri: str) -> str:
    """The enrolment address as an SVG QR code, for an ``<img src="data:…">`` (the CSP allows data: images)."""
    import segno

    return segno.make(uri, error="m").svg_data_uri(scale=5)


__all__ = ["CHALLENGE_ATTEMPTS", "CHALLENGE_TTL", "check_code", "challenge_user", "confirm_enrolment", "disable",
           "enabled", "open_challenge", "provisioning_uri", "qr_svg", "recovery_candidate", "recovery_codes_left",
           "secret_of", "start_enrolment"]
