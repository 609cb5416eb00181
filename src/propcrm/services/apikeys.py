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

_KEY_ID = re.compile(r"pk_[0-9a-f]{24}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_PLATFORM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX = re.compile(r"[0-9a-fA-F]{64}")


class AuthError(Exception):
    """A refused request; the message names the problem and is safe to show the caller."""


def create_key(session: Session, *, firm_id: str, platform: str) -> tuple[str, str]:
    """A new active key for a platform of a firm: ``(key_id, secret)``. The secret is returned only here."""
    if not _PLATFORM.fullmatch(platform):
        raise ValueError(
            f"platform must be 1 to 64 letters, digits, '.', '_' or '-' (starting with a letter or digit), "
            f"got {platform!r}"
        )
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


def verify_signature(
    session: Session, *, key_id: str, timestamp: str, body: bytes, signature: str, now: dt.datetime
) -> m.ApiKey:
    """The active key that signed this body, or :class:`AuthError` saying what is wrong.

    Checked in order: the key (known and active), the timestamp (unix seconds, within 5 minutes of
    ``now``), the signature (constant-time comparison).
    """
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
    expected = sign(key.secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), SIGNATURE_PREFIX.encode() + given[len(SIGNATURE_PREFIX):].lower().encode()):
        raise AuthError(f"bad signature in {SIGNATURE_HEADER}: it does not match the body signed with this key's secret")
    return key


__all__ = [
    "AuthError",
    "KEY_HEADER",
    "MAX_CLOCK_SKEW",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "create_key",
    "sign",
    "verify_signature",
]
