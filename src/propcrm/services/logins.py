"""Logging in with a password: throttled per account and per address, verified outside any write
transaction, audited without flooding the audit log.

Why it is built this way: argon2 takes tens of milliseconds of CPU by design. Verified inside the
request's write transaction it held SQLite's write lock that long, so a handful of anonymous clients
guessing passwords queued every ingestion request behind them (``propcrm bench login`` measures it),
and every guess was an audit entry. Now a login

1. asks the :class:`LoginThrottle` first — a throttled attempt is answered 429 with ``Retry-After``
   at once: no database, no argon2;
2. reads the user in a read-only unit of work (on SQLite it never takes the write lock);
3. verifies the password with no transaction open (against a dummy hash when the e-mail is unknown, so
   a miss costs the same time);
4. writes in a short transaction: on success the session token and the ``user.login`` entry (after
   checking the user is still active and the password unchanged); on failure the failure is counted and
   audited only while it says something new (see :meth:`LoginThrottle.failed`).

The throttle is in memory, per process (each API process counts on its own; N processes allow N times
the limits). Limits, per sliding window:

* an **account** (firm + e-mail, known or not): :data:`ACCOUNT_FAILURES` failed logins in
  :data:`ACCOUNT_WINDOW` seconds; then the account's logins are refused until the oldest failure leaves
  the window. (A crowd can therefore keep one account's logins refused; the account's sessions go on.)
* an **address** (the client's IP as the server sees it; behind a proxy, configure the proxy headers):
  :data:`ADDRESS_FAILURES` failed logins in :data:`ADDRESS_WINDOW` seconds, and :data:`ADDRESS_ATTEMPTS`
  logins of any outcome a minute (which bounds the argon2 work one address can ask for).

A successful login clears the account's failures (not the address's).
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..adapters.db import models as m
from . import audit, totp
from .users import MAX_PASSWORD, dummy_hash, hash_password, issue_token, normalise_email
from .users import needs_rehash as hash_is_outdated
from .users import verify_password as _verify  # (a module name of its own: tests replace it)

ACCOUNT_FAILURES = 10
ACCOUNT_WINDOW = 15 * 60
ADDRESS_FAILURES = 20
ADDRESS_WINDOW = 10 * 60
ADDRESS_ATTEMPTS = 60
ATTEMPT_WINDOW = 60
MAX_KEYS = 100_000  # counters kept per kind; the least recently used go first (bounded memory)


@dataclass
class _Counter:
    times: deque
    refused: int = 0  # throttled attempts since the last audited entry of this key


class _Window:
    """Timestamps of events per key within a sliding window, for at most MAX_KEYS keys."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit, self.seconds = limit, seconds
        self.keys: OrderedDict[str, _Counter] = OrderedDict()

    def counter(self, key: str, now: float) -> _Counter:
        found = self.keys.get(key)
        if found is None:
            found = self.keys[key] = _Counter(deque())
            if len(self.keys) > MAX_KEYS:
                self.keys.popitem(last=False)
        else:
            self.keys.move_to_end(key)
        while found.times and found.times[0] <= now - self.seconds:
            found.times.popleft()
        return found

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` is under its limit again (0: it is)."""
        found = self.counter(key, now)
        if len(found.times) < self.limit:
            return 0.0
        return max(found.times[-self.limit] + self.seconds - now, 0.001)

    def add(self, key: str, now: float) -> int:
        found = self.counter(key, now)
        found.times.append(now)
        return len(found.times)

    def clear(self, key: str) -> None:
        self.keys.pop(key, None)


@dataclass(frozen=True)
class Throttled:
    retry_after: int
    """Whole seconds until a login may be tried again."""
    which: str
    """``account`` or ``address``."""
    first: bool
    """The first refusal since the limit was reached (audited; the next ones are counted only)."""
    refused: int
    """Throttled attempts on this key not yet in the audit log (this one included)."""


class LoginThrottle:
    """In-memory counters of login attempts and failures (thread-safe; one per API process)."""

    def __init__(self, *, account_failures: int = ACCOUNT_FAILURES, account_window: float = ACCOUNT_WINDOW,
                 address_failures: int = ADDRESS_FAILURES, address_window: float = ADDRESS_WINDOW,
                 address_attempts: int = ADDRESS_ATTEMPTS, attempt_window: float = ATTEMPT_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.account_failures, self.address_failures = account_failures, address_failures
        self._account = _Window(account_failures, account_window)
        self._address = _Window(address_failures, address_window)
        self._attempts = _Window(address_attempts, attempt_window)
        self._clock = clock
        self._lock = threading.Lock()

    def admit(self, *, address: str, account: str) -> Throttled | None:
        """Whether a login may be tried now; counts it as an attempt of ``address`` when it may."""
        with self._lock:
            now = self._clock()
            for which, window, key in (("account", self._account, account), ("address", self._address, address),
                                       ("address", self._attempts, address)):
                wait = window.wait(key, now)
                if wait:
                    counter = window.counter(key, now)
                    counter.refused += 1
                    return Throttled(retry_after=math.ceil(wait), which=which, first=counter.refused == 1,
                                     refused=counter.refused)
            self._attempts.add(address, now)
            return None

    def failed(self, *, address: str, account: str) -> tuple[int, int, int]:
        """Count a failed login: ``(failures of the account, failures of the address, throttled attempts
        of either not yet audited)``; the counters of refused attempts start again, as the caller
        audits this failure with them."""
        with self._lock:
            now = self._clock()
            of_account = self._account.add(account, now)
            of_address = self._address.add(address, now)
            refused = 0
            for window, key in ((self._account, account), (self._address, address), (self._attempts, address)):
                counter = window.counter(key, now)
                refused += counter.refused
                counter.refused = 0
            return of_account, of_address, refused

    def succeeded(self, *, account: str) -> None:
        with self._lock:
            self._account.clear(account)


def account_key(firm_id: str, email: str) -> str:
    return f"{(firm_id or '').strip()[:64]}\x00{normalise_email(email)[:320]}"


@dataclass(frozen=True)
class LoginResult:
    """A login's outcome: ``user`` and ``token`` when it succeeded; ``throttled`` when refused unchecked."""

    user: m.User | None = None
    token: str | None = None
    expires_at: dt.datetime | None = None
    throttled: Throttled | None = None
    challenge: str | None = None  # the password was right; the user's second factor is asked for (totp.py)
    problem: str | None = None  # why a second step failed, in words for the login page
    refused: str | None = None  # the credentials were right, but the firm is suspended (said in words)

    @property
    def ok(self) -> bool:
        return self.user is not None


def _printable(text: str, limit: int) -> str:
    """What was typed, fit for the audit log: no control characters, bounded."""
    return "".join(ch for ch in text[: limit * 2] if ch.isprintable())[:limit]


def log_in(sessions: sessionmaker[Session], read_sessions: sessionmaker[Session], throttle: LoginThrottle, *,
           firm_id: object, email: object, password: object, address: str,
           now: dt.datetime | None = None) -> LoginResult:
    """Check a password login (see the module's docstring). Commits its own short transactions."""
    email = normalise_email(email) if isinstance(email, str) else ""
    firm_id = firm_id.strip() if isinstance(firm_id, str) else ""
    address = (address or "unknown")[:100]
    key = account_key(firm_id, email)
    usable = 0 < len(firm_id) <= 64 and 0 < len(email) <= 320 and firm_id.isprintable() and email.isprintable()
    throttled = throttle.admit(address=address, account=key)
    if throttled is not None:
        if throttled.first:  # once per limit reached; the attempts refused after it are counted
            with sessions.begin() as session:
                audit.append(session, actor="anonymous", action="user.login_throttled", entity="user",
                             after={"firm": _printable(firm_id, 64), "email": _printable(email, 320),
                                    "address": address, "limit": throttled.which,
                                    "retry_after_s": throttled.retry_after},
                             firm_id=_firm_or_none(session, firm_id, usable))
        return LoginResult(throttled=throttled)
    user_id = stored_hash = None
    active = False
    if usable:
        with read_sessions() as session:
            row = session.execute(select(m.User.id, m.User.password_hash, m.User.active).where(
                m.User.firm_id == firm_id, m.User.email == email)).first()
        if row is not None:
            user_id, stored_hash, active = row
    # argon2 with no transaction open
    reason = None
    if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD:
        reason = "unusable password"
    elif stored_hash is None:
        _verify(dummy_hash(), password)
        reason = "unknown user"
    elif not _verify(stored_hash, password):
        reason = "wrong password"
    elif not active:
        reason = "inactive user"
    needs_rehash = reason is None and hash_is_outdated(stored_hash)
    new_hash = hash_password(password) if needs_rehash else None
    with sessions.begin() as session:
        user = session.get(m.User, user_id) if reason is None else None
        if reason is None and (user is None or not user.active or user.password_hash != stored_hash):
            reason = "changed while logging in"  # disabled or given a new password meanwhile
        if reason is not None:
            of_account, of_address, refused = throttle.failed(address=address, account=key)
            if of_account <= 1 or of_address <= 1 or refused or of_account == throttle.account_failures \
                    or of_address == throttle.address_failures:
                # the first failure of an account or an address, the one that reaches a limit, and any
                # with throttled attempts to report; the others are counted, not written
                audit.append(session, actor="anonymous", action="user.login_failed", entity="user",
                             entity_id=str(user_id) if user_id is not None else None,
                             after={"firm": _printable(firm_id, 64), "email": _printable(email, 320),
                                    "reason": reason, "address": address, "failures_of_account": of_account,
                                    "failures_of_address": of_address, "throttled_since_last_entry": refused},
                             firm_id=_firm_or_none(session, firm_id, usable))
            return LoginResult()
        assert user is not None
        refused = _suspended(session, user, address)
        if refused is not None:
            return LoginResult(refused=refused)
        if new_hash is not None:
            user.password_hash = new_hash
        if totp.enabled(user):  # no session yet: the second step (complete_second_factor) issues it
            ticket = totp.open_challenge(session, user=user, now=now)
            return LoginResult(challenge=ticket)
        audit.append(session, actor=f"user:{user.id}:{user.email}", action="user.login", entity="user",
                     entity_id=str(user.id), after={"email": user.email, "role": user.role, "address": address},
                     firm_id=user.firm_id)
        token, expires_at = issue_token(session, user=user, now=now)
        session.flush()
        session.expunge(user)
    throttle.succeeded(account=key)
    return LoginResult(user=user, token=token, expires_at=expires_at)


def complete_second_factor(sessions: sessionmaker[Session], read_sessions: sessionmaker[Session],
                           throttle: LoginThrottle, *, ticket: object, code: object, address: str,
                           now: dt.datetime | None = None) -> LoginResult:
    """The second step of a login with two-factor on: the code (or a recovery code) for the ticket the
    password step gave. Wrong codes count against the account like wrong passwords and use up the ticket.
    A recovery code's argon2 check runs with no write transaction open."""
    address = (address or "unknown")[:100]
    code = code if isinstance(code, str) else ""
    recovery_id = None
    if isinstance(ticket, str):
        with read_sessions() as session:
            recovery_id = totp.recovery_candidate(session, ticket=ticket, code=code)
    with sessions.begin() as session:
        user = totp.challenge_user(session, ticket=ticket, now=now) if isinstance(ticket, str) else None
        if user is None:
            return LoginResult(problem="the login expired or was used up; enter your password again")
        key = account_key(user.firm_id, user.email)
        throttled = throttle.admit(address=address, account=key)
        if throttled is not None:
            return LoginResult(throttled=throttled)
        found, how = totp.check_code(session, ticket=ticket, code=code, recovery_id=recovery_id, now=now)
        if found is None:
            of_account, of_address, _ = throttle.failed(address=address, account=key)
            audit.append(session, actor="anonymous", action="user.login_failed", entity="user", entity_id=str(user.id),
                         after={"firm": user.firm_id, "email": user.email, "reason": f"second factor: {how}",
                                "address": address, "failures_of_account": of_account,
                                "failures_of_address": of_address}, firm_id=user.firm_id)
            return LoginResult(challenge=ticket, problem=how)
        refused = _suspended(session, found, address)
        if refused is not None:
            return LoginResult(refused=refused, problem=refused)
        audit.append(session, actor=f"user:{found.id}:{found.email}", action="user.login", entity="user",
                     entity_id=str(found.id), after={"email": found.email, "role": found.role, "address": address,
                                                     "second_factor": how}, firm_id=found.firm_id)
        token, expires_at = issue_token(session, user=found, now=now)
        session.flush()
        session.expunge(found)
    throttle.succeeded(account=key)
    return LoginResult(user=found, token=token, expires_at=expires_at)


def _suspended(session: Session, user: m.User, address: str) -> str | None:
    """The firm's suspension, audited as a refused login (only after the password was right: whether a firm
    is suspended is told to its users, not to anyone typing its id)."""
    from .users import suspension

    refused = suspension(session, user.firm_id)
    if refused is not None:
        audit.append(session, actor="anonymous", action="user.login_failed", entity="user", entity_id=str(user.id),
                     after={"firm": user.firm_id, "email": user.email, "reason": "firm suspended",
                            "address": address}, firm_id=user.firm_id)
    return refused


def _firm_or_none(session: Session, firm_id: str, usable: bool) -> str | None:
    return firm_id if usable and session.get(m.Firm, firm_id) is not None else None


def check_current_password(read_sessions: sessionmaker[Session], throttle: LoginThrottle, *, user_id: int,
                           firm_id: str, email: str, password: object, address: str) -> tuple[str | None, Throttled | None]:
    """For changing one's own password: the stored hash when ``password`` is the user's current one
    (verified outside any transaction), else ``None``; throttled like a login of that account."""
    key = account_key(firm_id, email)
    throttled = throttle.admit(address=address, account=key)
    if throttled is not None:
        return None, throttled
    with read_sessions() as session:
        stored = session.scalar(select(m.User.password_hash).where(m.User.id == user_id))
    if stored is not None and isinstance(password, str) and 0 < len(password) <= MAX_PASSWORD \
            and _verify(stored, password):
        return stored, None
    throttle.failed(address=address, account=key)
    return None, None


__all__ = ["LoginResult", "LoginThrottle", "Throttled", "account_key", "check_current_password",
           "complete_second_factor", "log_in"]
