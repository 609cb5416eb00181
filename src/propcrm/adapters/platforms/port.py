"""The port every platform family implements, and the shapes that cross it.

A *gateway* is one connection to one platform server, written from the vendor's documentation
(``mt5/webapi.py``, ``mt5/bridge_client.py``, ``matchtrader/brokerapi.py``). It knows the vendor's
protocol and nothing of propcrm's database: it reports what the platform says — account readings,
open positions, and platform events already mapped to propcrm's event types (GUIDE §2) but keyed by
the platform *login*, with ids derived from the platform's own tickets — and it carries out commands.
:class:`~propcrm.adapters.platforms.runner.ConnectorRunner` turns that into ingested events (login →
account, ordering, glitch guard, cursor) and :mod:`propcrm.features.platforms.commands` turns outbox
rows into calls of the command methods.

Event ids are stable functions of platform tickets (``deal-<ticket>``, ``login-<login>-<time>``…), so
a deal seen twice — after a reconnect, a restart, an overlapping page — is the same event, and
ingestion's idempotency on (firm, source, id) stores it once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

UTC = dt.timezone.utc


class PlatformError(RuntimeError):
    """The platform refused or failed a request; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = True, code: str | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code


class NotConnected(PlatformError):
    """The session is gone (network, authentication lost): reconnect, then go on from the cursor."""


@dataclass(frozen=True, slots=True)
class PlatformEvent:
    """An event as a platform reports it: a ``login`` (None for firm-wide events) instead of an
    account, and ``body`` — ``id``, ``type`` and the type's fields other than ``account`` and ``ts``
    (money and prices as :class:`~decimal.Decimal`)."""

    login: str | None
    ts: dt.datetime
    body: dict[str, Any]
    kind: str = "deal"  # deal | balance | session | position (reconciliation) — for metrics


@dataclass(frozen=True, slots=True)
class AccountReading:
    """An account as the platform shows it at ``observed_at``. ``equity`` is None when the platform has
    no trading state for it yet (MT5 keeps none for an account without positions or activity since its
    restart; a connection still synchronising) — never read that as zero."""

    login: str
    observed_at: dt.datetime
    balance: Decimal
    equity: Decimal | None
    margin: Decimal | None = None
    floating: Decimal | None = None
    trade_enabled: bool = True
    group: str | None = None


@dataclass(frozen=True, slots=True)
class PlatformPosition:
    login: str
    position: str  # the platform's position ticket
    symbol: str
    side: str  # buy | sell
    lots: Decimal
    price: Decimal
    opened_at: dt.datetime
    sl: Decimal | None = None
    tp: Decimal | None = None


@dataclass(frozen=True, slots=True)
class NewAccount:
    """What ``create_account`` needs: where (group), how (leverage), for whom, and a ``tag`` (≤ 32
    characters) written into the platform record so a repeated command finds the first one."""

    group: str
    leverage: int
    name: str
    email: str | None
    tag: str
    password: str | None = None
    investor_password: str | None = None


@dataclass(slots=True)
class Poll:
    """One step of the live stream: readings (taken first), then the events since the cursor."""

    events: list[PlatformEvent] = field(default_factory=list)
    readings: list[AccountReading] = field(default_factory=list)
    cursor: str | None = None
    platform_time: dt.datetime | None = None  # the newest platform time seen (for the lag metric)


@runtime_checkable
class PlatformGateway(Protocol):
    """One session with one platform server. Methods raise :class:`PlatformError` (or
    :class:`NotConnected`) with a message that names the platform's answer and never a secret."""

    family: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    # ---- reading
    def readings(self, logins: Sequence[str]) -> list[AccountReading]: ...

    def positions(self, logins: Sequence[str]) -> list[PlatformPosition]: ...

    def poll(self, cursor: str | None, logins: Sequence[str], *, start: dt.datetime) -> Poll:
        """Readings of ``logins`` first, then every event after ``cursor`` (``None``: since ``start``)."""
        ...

    def opening_events(self, position: PlatformPosition) -> list[PlatformEvent]:
        """The events that opened ``position`` (reconciliation of a position propcrm never saw open)."""
        ...

    def closing_events(self, login: str, position: str, since: dt.datetime) -> list[PlatformEvent]:
        """The events that closed ``position`` after ``since`` (a position propcrm holds open that the
        platform no longer has)."""
        ...

    # ---- commands (each idempotent or made so by the caller, see features.platforms.commands)
    def set_trading(self, login: str, enabled: bool) -> None: ...

    def close_positions(self, login: str) -> int: ...

    def balance_operation(self, login: str, amount: Decimal, comment: str) -> str: ...

    def find_balance_operation(self, login: str, comment: str, since: dt.datetime) -> str | None: ...

    def create_account(self, spec: NewAccount) -> str: ...

    def find_account(self, spec: NewAccount) -> str | None: ...

    def change_group(self, login: str, group: str) -> None: ...


def utc_from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, UTC)


def rfc3339(ts: dt.datetime) -> str:
    """Milliseconds, ``Z``: the form every connector writes."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    if ts.year < 1000:  # strftime's own form of such years
        return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return (f"{ts.year}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}:{ts.minute:02d}:{ts.second:02d}."
            f"{ts.microsecond // 1000:03d}Z")


__all__ = ["AccountReading", "NewAccount", "NotConnected", "PlatformError", "PlatformEvent", "PlatformGateway",
           "PlatformPosition", "Poll", "rfc3339", "utc_from_ms"]
