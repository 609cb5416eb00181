"""Delivering a document to another system: the failure type, and signed JSON over HTTP.

Both the platform bridge (:class:`~propcrm.adapters.platforms.SignedWebhookConnector`) and a firm's
own systems (:class:`~propcrm.adapters.notify.WebhookNotifier`) receive JSON signed exactly as
platforms sign the events they send us (``services/apikeys.py``)::

    X-Propcrm-Timestamp: <unix seconds>
    X-Propcrm-Signature: sha256=<lowercase hex HMAC-SHA256(secret, timestamp + "." + body)>

so a receiver verifies our requests with the code it already has for its own. The body is canonical
JSON (sorted keys, no insignificant whitespace, UTF-8): the exact bytes signed are the bytes sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

TIMESTAMP_HEADER = "X-Propcrm-Timestamp"
SIGNATURE_HEADER = "X-Propcrm-Signature"
SIGNATURE_PREFIX = "sha256="


class DeliveryError(Exception):
    """A delivery that did not happen (or is not known to have happened); safe to record and show.

    Messages never carry a secret, a credential or a URL's user info or query string.
    """


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of ``timestamp + "." + body`` under ``secret``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + mac


def canonical_body(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=str).encode("utf-8")


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment: what may appear in logs and ``last_error``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "<unparseable url>"


class SignedJsonPoster:
    """POSTs signed canonical JSON to one URL; anything but a 2xx answer raises :class:`DeliveryError`."""

    def __init__(self, url: str, secret: str, *, timeout: float = 10.0, what: str = "receiver",
                 clock: Callable[[], float] = time.time, transport: httpx.BaseTransport | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{what} URL must be http:// or https://, got {safe_url(url)!r}")
        if not secret:
            raise ValueError(f"{what}: a signing secret is required")
        self.url = url
        self._secret = secret
        self.timeout = timeout
        self.what = what
        self._clock = clock
        self._client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, transport=transport)

    def __repr__(self) -> str:  # never the secret
        return f"{type(self).__name__}({safe_url(self.url)!r}, timeout={self.timeout})"

    def post(self, document: Any, *, extra_headers: dict[str, str] | None = None) -> None:
        body = canonical_body(document)
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            **(extra_headers or {}),
        }
        where = safe_url(self.url)
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"{self.what} {where}: no answer within {self.timeout:g} s ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{self.what} {where}: {type(exc).__name__}: {self._scrub(str(exc))}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"{self.what} {where} answered HTTP {response.status_code}")

    def _scrub(self, text: str) -> str:
        """An error's text with the full URL and the secret taken out, shortened."""
        text = text.replace(self.url, safe_url(self.url)).replace(self._secret, "<secret>")
        return text[:300]

    def close(self) -> None:
        self._client.close()


__all__ = ["DeliveryError", "SIGNATURE_HEADER", "SignedJsonPoster", "TIMESTAMP_HEADER", "canonical_body", "safe_url",
           "sign"]
