"""Connectors that carry a platform command to a trading platform.

A command is plain JSON, as the outbox holds it, plus ``firm`` and ``idempotency_key``::

    {"command": "disable", "account": "A1", "platform": "mt5", "login": "A1", "decision": 42,
     "kind": "breach", "rule": "daily_loss", "message": "…", "trader_id": 7,
     "firm": "demo", "idempotency_key": "decision:42:platform_command"}

``command`` is one of ``disable``, ``enable``, ``pause`` (with ``until``, RFC 3339), ``resume`` and
``create_account`` (with ``phase`` and ``previous``). Delivery is at least once: the same command may
arrive twice (a dispatcher died after sending, before recording it), always with the same
``idempotency_key``, and a bridge must drop the repeat.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import httpx

from ..delivery import DeliveryError, SignedJsonPoster, safe_url

log = logging.getLogger("propcrm.platforms")


@runtime_checkable
class PlatformConnector(Protocol):
    """Carries one command to a platform; returns when the platform has accepted it, raises otherwise."""

    def send(self, command: dict[str, Any]) -> None: ...


class LoggingConnector:
    """The demo's platform: keeps the commands it was sent (the newest ``keep``) and logs each one."""

    def __init__(self, *, keep: int = 10_000, logger: logging.Logger | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.keep = keep
        self._log = logger or log
        self._lock = threading.Lock()

    def send(self, command: dict[str, Any]) -> None:
        with self._lock:
            self.sent.append(dict(command))
            if len(self.sent) > self.keep:
                del self.sent[: len(self.sent) - self.keep]
        self._log.info(
            "platform %s: %s account %s (%s)",
            command.get("platform"), command.get("command"), command.get("account"), command.get("idempotency_key"),
        )


class SignedWebhookConnector:
    """POSTs each command as signed JSON to a platform bridge; a non-2xx answer raises.

    Headers: ``X-Propcrm-Timestamp`` (unix seconds), ``X-Propcrm-Signature`` (``sha256=`` + hex
    HMAC-SHA256 of ``timestamp + "." + body`` under ``secret``) and ``Idempotency-Key`` (the
    command's ``idempotency_key``, also in the body).
    """

    def __init__(self, url: str, secret: str, timeout: float = 10.0, *, clock: Callable[[], float] = time.time,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._poster = SignedJsonPoster(url, secret, timeout=timeout, what="platform bridge", clock=clock,
                                        transport=transport)

    @property
    def url(self) -> str:
        return self._poster.url

    def __repr__(self) -> str:  # never the secret
        return f"SignedWebhookConnector({safe_url(self.url)!r})"

    def send(self, command: dict[str, Any]) -> None:
        key = command.get("idempotency_key")
        self._poster.post(command, extra_headers={"Idempotency-Key": str(key)} if key else None)

    def close(self) -> None:
        self._poster.close()


__all__ = ["DeliveryError", "LoggingConnector", "PlatformConnector", "SignedWebhookConnector"]
