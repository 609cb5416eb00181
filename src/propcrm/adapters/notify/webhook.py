"""Signed JSON webhooks to a firm's own systems (its CRM, Slack bridge, risk desk tooling).

The body is the notification as JSON; the signature scheme is the one platforms use towards us
(see ``adapters/delivery.py``). Delivery is at least once; ``idempotency_key`` (in the body and the
``Idempotency-Key`` header) lets the receiver drop a repeat.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from ..delivery import SignedJsonPoster, safe_url


class WebhookNotifier:
    def __init__(self, url: str, secret: str, timeout: float = 10.0, *, clock: Callable[[], float] = time.time,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._poster = SignedJsonPoster(url, secret, timeout=timeout, what="firm webhook", clock=clock,
                                        transport=transport)

    @property
    def url(self) -> str:
        return self._poster.url

    def __repr__(self) -> str:  # never the secret
        return f"WebhookNotifier({safe_url(self.url)!r})"

    def send(self, document: dict[str, Any]) -> None:
        key = document.get("idempotency_key")
        self._poster.post(document, extra_headers={"Idempotency-Key": str(key)} if key else None)

    def close(self) -> None:
        self._poster.close()


__all__ = ["WebhookNotifier"]
