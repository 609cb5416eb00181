"""Platform credentials: API keys and the HMAC signature every ingestion request carries.

A platform (an MT5 bridge, a cTrader plugin, a file uploader…) holds a key id and a secret. Each
request carries three headers:

``X-Propcrm-Key``
    the key id (``pk_…``), which names the firm and the platform (the events' source);
``X-Propcrm-Timestamp``
    the time of signing, in unix seconds as decimal text; more than 5 minutes away from the
    server's clock (either way) is refused, which bounds how long a captured request can be replayed;
``X-Propcrm-Signature``
    ``sha256=`` followed by the lowercase hex HMAC-SHA256 of ``timestamp + "." + body`` under the
    secret — the exact body bytes as sent.

For example, in Python::

    ts = str(int(time.time()))
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {"X-Propcrm-Key": key_id, "X-Propcrm-Timestamp": ts, "X-Propcrm-Signature": f"sha256={mac}"}

The secret is shown once, when the key is created, and is never logged or returned again (it is
kept because verifying an HMAC needs it).

**What a key may write.** A key's platform name says what it is for:

* a **provider key** — a name starting with ``kyc`` or ``payments`` (``kyc``, ``kyc-sumsub``,
  ``payments-stripe``) — may only call its provider's webhook (``/api/v1/webhooks/kyc`` or
  ``/payments``), never post events;
* a **platform key** (``mt5``, ``ctrader``, ``demo``, …) posts events, and those that name an account
  only for the accounts on that platform (``accounts.platform``); firm-wide events (clock, news,
  price) from any platform key of the firm;
* names starting with ``propcrm-`` (and ``propcrm`` itself) are **reserved** for the events propcrm
  writes itself (``propcrm-payouts``: payout withdrawals and carried profit): no key can be created
  with one, and events arriving under one from outside are refused (:func:`is_reserved_source` —
  the one place that says which names are reserved).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets

from sqlalchemy.orm import Session

from ..adapters.db import models as m

KEY_HEADER = "X-Propcrm-Key"
TIMESTAMP_HEADER = "X-Propcrm-Timestamp"
SIGNATURE_HEADER = "X-Propcrm-Signature"
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
SIGNATURE_PREFIX = "sha256="

#: the event sources propcrm writes under itself; every name with this prefix is reserved
RESERVED_SOURCE_PREFIX = "propcrm-"
PROVIDERS = ("kyc", "payments")

_KEY_ID = re.compile(r"pk_[0-9a-f]{24}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_PLATFORM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX = re.compile(r"[0-9a-fA-F]{64}")


class AuthError(Exception):
    """A refused request; the message names the problem and is safe to show the caller."""


def is_reserved_source(name: str) -> bool:
    """Whether events under source ``name`` can only come from propcrm itself (case does not matter:
    ``PropCRM-Payouts`` is refused as a key's name like ``propcrm-payouts``)."""
    folded = name.casefold()
    return folded == RESERVED_SOURCE_PREFIX.rstrip("-") or folded.startswith(RESERVED_SOURCE_PREFIX)


def reserved_source_refusal(name: str) -> str | None:
    """Why ``name`` cannot be a key's platform or an external source, or ``None``."""
    if not is_reserved_source(name):
        return None
    return (f"the name {name!r} is reserved for propcrm's own events (names starting with "
            f"'{RESERVED_SOURCE_PREFIX}'); use another platform name")


def provider_of(platform: str) -> str | None:
    """The provider (``kyc`` or ``payments``) whose webhook a key of this platform name is for, or ``None``
    for a platform key."""
    return next((provider for provider in PROVIDERS if platform.startswith(provider)), None)


def create_key(session: Session, *, firm_id: str, platform: str) -> tuple[str, str]:
    """A new active key for a platform of a firm: ``(key_id, secret)``. The secret is returned only here."""
    if not _PLATFORM.fullmatch(platform):
        raise ValueError(
            f"platform must be 1 to 64 letters, digits, '.', '_' or '-' (starting with a letter or digit), "
            f"got {platform!r}"
        )
    refusal = reserved_source_refusal(platform)
    if refusal is not None:
        raise ValueError(f"platform: {refusal}")
    if session.get(m.Firm, firm_id) is None:
        raise ValueError(f"no firm {firm_id!r}")
    key_id = f"pk_{secrets.token_hex(12)}"
    secret = secrets.token_urlsafe(32)
    session.add(m.ApiKey(id=key_id, firm_id=firm_id, platform=platform, secret=secret, active=True))
    session.flush()
    return key_id, secret


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Propcrm-Signature`` value for a body signed at ``timestamp`` (what a platform sends)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + mac


def check_key(session: Session, *, key_id: str, timestamp: str, signature: str, now: dt.datetime) -> m.ApiKey:
    """Everything about a request but its body: the key (known and active), the timestamp (unix seconds,
    within 5 minutes of ``now``) and the signature's form. Checked before a body is read, so an unknown
    caller cannot make the server take in 32 MiB. Raises :class:`AuthError` saying what is wrong."""
    key = session.get(m.ApiKey, key_id) if _KEY_ID.fullmatch(key_id or "") else None
    if key is None:
        raise AuthError(f"unknown API key in {KEY_HEADER}")
    if not key.active:
        raise AuthError(f"API key {key_id} is inactive")
    if not _TIMESTAMP.fullmatch(timestamp or ""):
        raise AuthError(f"malformed {TIMESTAMP_HEADER}: expected unix seconds as decimal digits")
    skew = int(timestamp) - now.timestamp()
    if abs(skew) > MAX_CLOCK_SKEW.total_seconds():
        direction = "ahead of" if skew > 0 else "behind"
        raise AuthError(
            f"stale {TIMESTAMP_HEADER}: {abs(skew):.0f} s {direction} the server's clock "
            f"(at most {MAX_CLOCK_SKEW.total_seconds():.0f} s allowed)"
        )
    given = signature or ""
    if not (given.startswith(SIGNATURE_PREFIX) and _HEX.fullmatch(given[len(SIGNATURE_PREFIX):])):
        raise AuthError(f"malformed {SIGNATURE_HEADER}: expected 'sha256=' and 64 hex digits")
    return key


def check_body(secret: str, *, key_id: str, timestamp: str, body: bytes, signature: str) -> None:
    """The signature matches the body signed with ``secret`` (constant-time comparison), or :class:`AuthError`."""
    given = signature or ""
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(),
                               SIGNATURE_PREFIX.encode() + given[len(SIGNATURE_PREFIX):].lower().encode()):
        raise AuthError(f"bad signature in {SIGNATURE_HEADER}: it does not match the body signed with this key's secret")


def verify_signature(
    session: Session, *, key_id: str, timestamp: str, body: bytes, signature: str, now: dt.datetime
) -> m.ApiKey:
    """The active key that signed this body, or :class:`AuthError` saying what is wrong.

    Checked in order: the key (known and active), the timestamp (unix seconds, within 5 minutes of
    ``now``), the signature (constant-time comparison): :func:`check_key`, then :func:`check_body`.
    """
    key = check_key(session, key_id=key_id, timestamp=timestamp, signature=signature, now=now)
    check_body(key.secret, key_id=key_id, timestamp=timestamp, body=body, signature=signature)
    return key


__all__ = [
    "AuthError",
    "PROVIDERS",
    "RESERVED_SOURCE_PREFIX",
    "check_body",
    "check_key",
    "is_reserved_source",
    "provider_of",
    "reserved_source_refusal",
    "KEY_HEADER",
    "MAX_CLOCK_SKEW",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "create_key",
    "sign",
    "verify_signature",
]
