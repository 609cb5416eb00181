"""The connector framework: one platform connection kept in sync with propcrm.

:class:`ConnectorRunner` drives a :class:`~propcrm.adapters.platforms.port.PlatformGateway`:

1. **connect** — open the session (retried with exponential backoff and jitter, capped);
2. **sync** (snapshot and reconciliation) — every event since the stored cursor (or, the first time,
   since ``start_lookback_s`` ago), the accounts' readings, and the open positions on both sides: a
   position open on the platform that propcrm never saw opened gets its opening events, a position
   propcrm holds open that the platform no longer has gets its closing events; an account that
   propcrm has failed, suspended, closed or paused but that can still trade on the platform gets its
   ``disable``/``pause`` command again (through the outbox, like every command);
3. **stream** — poll after poll, the events since the cursor and fresh readings, until the session
   fails; then back to 1. Nothing is lost in between: the cursor moves only in the same transaction
   as the events it covers (``ConnectionStore.commit``), and event ids come from platform tickets, so
   what is read twice is stored once.

Order per account. The engine refuses an account event older than the account's last one (and a
reading that ran ahead of a deal would count that deal twice), so a step takes the readings *before*
the events, sorts each account's events by time, and stamps an event older than what the account
already has with that time (``platform_ts`` keeps its own). Readings pass the glitch guard
(:mod:`.guard`).

The store is the propcrm side (:mod:`propcrm.features.platforms.store` on the database; a fake in
the unit tests); the runner itself does no I/O of its own besides the gateway's and the store's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import msgspec

from .guard import EquityGuard, GuardSettings
from .metrics import ConnectorMetrics, default_metrics
from .port import AccountReading, NotConnected, PlatformError, PlatformEvent, PlatformGateway, Poll, rfc3339

log = logging.getLogger("propcrm.platforms.runner")
UTC = dt.timezone.utc
_ENCODER = msgspec.json.Encoder(decimal_format="string")
HELD_STATUSES = {"breached": "disable", "suspended": "disable", "halted": "disable", "closed": "disable",
                 "paused": "pause"}


@dataclass(frozen=True)
class AccountView:
    """What propcrm holds of an account: its status, the time of its last event and its open positions
    (position id → opening time), pending events included."""

    status: str
    last_ts: dt.datetime | None
    positions: dict[str, dt.datetime] = field(default_factory=dict)
    equity: Decimal | None = None
    balance: Decimal | None = None


@dataclass
class CommitReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)


class ConnectionStore(Protocol):
    """propcrm's side of one connection."""

    name: str

    def mapped(self) -> dict[str, str]:
        """Platform login → account external id, for the accounts on this connection."""
        ...

    def cursor(self) -> str | None: ...

    def views(self, accounts: Sequence[str]) -> dict[str, AccountView]: ...

    def commit(self, lines: list[bytes], cursor: str | None) -> CommitReport:
        """Ingest ``lines`` (NDJSON events) and store ``cursor``, in one transaction."""
        ...

    def enforce(self, account: str, command: str, reason: str) -> bool:
        """Queue ``command`` for ``account`` in the outbox (once per day and reason); True if queued."""
        ...


@dataclass(frozen=True)
class RunnerSettings:
    poll_interval_s: float = 0.05
    refresh_logins_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    start_lookback_s: float = 7 * 86400
    guard: GuardSettings = field(default_factory=GuardSettings)


@dataclass
class Health:
    connected: bool = False
    last_ok_at: float | None = None
    last_error: str | None = None
    lag_s: float | None = None
    synced_at: float | None = None
    steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"connected": self.connected, "last_ok_at": self.last_ok_at, "last_error": self.last_error,
                "lag_s": None if self.lag_s is None else round(self.lag_s, 3), "synced_at": self.synced_at,
                "steps": self.steps}


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


class ConnectorRunner:
    def __init__(self, gateway: PlatformGateway, store: ConnectionStore, *,
                 settings: RunnerSettings | None = None, metrics: ConnectorMetrics | None = None,
                 now: Callable[[], dt.datetime] | None = None, sleep: Callable[[float], bool] | None = None) -> None:
        self.gateway = gateway
        self.store = store
        self.settings = settings or RunnerSettings()
        self.metrics = metrics or default_metrics()
        self.name = store.name
        self._now = now or (lambda: dt.datetime.now(UTC))
        self._sleep = sleep
        self.guard = EquityGuard(self.settings.guard)
        self.health = Health()
        self._mapped: dict[str, str] = {}
        self._mapped_at = 0.0
        self._last_ts: dict[str, dt.datetime] = {}
        self._eq_ms: dict[str, int] = {}
        self._digests: dict[str, str] = {}  # account → the digest in its equity ids
        self._open: dict[str, set[str]] = {}  # account -> open positions as propcrm will hold them
        self._cursor: str | None = None
        self._connected = False
        self.wake: threading.Event | None = None  # set after every commit (the embedded worker waits on it)

    # ------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event) -> None:
        """Connect, sync, stream; on any failure back off and start again; until ``stop`` is set."""
        delay = self.settings.backoff_initial_s
        while not stop.is_set():
            try:
                self.connect()
                self.sync()
                delay = self.settings.backoff_initial_s
                while not stop.is_set():
                    started = time.monotonic()
                    self.step()
                    rest = self.settings.poll_interval_s - (time.monotonic() - started)
                    if rest > 0 and stop.wait(rest):
                        break
            except Exception as exc:  # noqa: BLE001 - a connector never dies; it reconnects
                stage = "platform" if isinstance(exc, PlatformError) else "store"
                self.metrics.errors.labels(self.name, stage).inc()
                self.health.last_error = _short(exc)
                log.warning("platform %s: %s (%s); reconnecting in %.1f s", self.name, _short(exc), stage, delay)
                self.disconnect()
                if stop.wait(delay * (1 + random.random() * 0.25)):
                    break
                delay = min(delay * 2, self.settings.backoff_max_s)
        self.disconnect()

    def connect(self) -> None:
        self.gateway.open()
        self._connected = True
        self.health.connected = True
        self.metrics.connected.labels(self.name).set(1)
        self.metrics.reconnects.labels(self.name).inc()
        self.guard.reconnected(self._now())

    def disconnect(self) -> None:
        if self._connected:
            try:
                self.gateway.close()
            except Exception:  # noqa: BLE001 - closing a broken session may fail too
                pass
        self._connected = False
        self.health.connected = False
        self.metrics.connected.labels(self.name).set(0)

    # ------------------------------------------------------------------ sync (snapshot + reconciliation)
    def sync(self) -> CommitReport:
        now = self._now()
        mapped = self._refresh(force=True)
        logins = sorted(mapped)
        views = self.store.views(list(mapped.values()))
        self._adopt(views)
        self._cursor = self.store.cursor()
        start = now - dt.timedelta(seconds=self.settings.start_lookback_s)
        with self.metrics.poll_seconds.labels(self.name).time():
            poll = self.gateway.poll(self._cursor, logins, start=start)
            positions = self.gateway.positions(logins)
        events = list(poll.events)
        opened, closed = self._trades_in(events, mapped)
        platform_open: dict[str, set[str]] = {}
        for position in positions:
            account = mapped.get(position.login)
            if account is None:
                continue
            platform_open.setdefault(account, set()).add(position.position)
            known = views.get(account).positions if account in views else {}
            if position.position not in known and position.position not in opened.get(account, set()):
                found = self.gateway.opening_events(position)
                self.metrics.reconciled.labels(self.name, "opened_unseen").inc()
                events.extend(found)
        for login, account in mapped.items():
            view = views.get(account)
            if view is None:
                continue
            for position, opened_at in view.positions.items():
                if position in platform_open.get(account, set()) or position in closed.get(account, set()):
                    continue
                found = self.gateway.closing_events(login, position, opened_at)
                self.metrics.reconciled.labels(self.name, "closed_unseen" if found else "close_not_found").inc()
                if not found:
                    log.warning("platform %s: %s holds position %s open but the platform has neither it nor "
                                "its closing deal", self.name, account, position)
                events.extend(found)
        report = self._commit(Poll(events=events, readings=poll.readings, cursor=poll.cursor,
                                   platform_time=poll.platform_time))
        for position in positions:
            account = mapped.get(position.login)
            if account is not None:
                self._open.setdefault(account, set()).add(position.position)
        for account, live in platform_open.items():
            self._open[account] = set(live)
        self._enforce(poll.readings, views, mapped)
        self.health.synced_at = time.time()
        return report

    def _enforce(self, readings: Iterable[AccountReading], views: dict[str, AccountView],
                 mapped: dict[str, str]) -> None:
        for reading in readings:
            account = mapped.get(reading.login)
            view = views.get(account) if account else None
            if view is None or not reading.trade_enabled:
                continue
            command = HELD_STATUSES.get(view.status)
            if command and self.store.enforce(account, command, f"account is {view.status} in propcrm but can trade "
                                                                 "on the platform"):
                self.metrics.reconciled.labels(self.name, "enforced_again").inc()

    # ------------------------------------------------------------------ stream
    def step(self) -> CommitReport:
        mapped = self._refresh()
        with self.metrics.poll_seconds.labels(self.name).time():
            poll = self.gateway.poll(self._cursor, sorted(mapped), start=self._now())
        self.metrics.polls.labels(self.name).inc()
        return self._commit(poll)

    # ------------------------------------------------------------------ internals
    def _refresh(self, force: bool = False) -> dict[str, str]:
        if force or time.monotonic() - self._mapped_at >= self.settings.refresh_logins_s:
            fresh = self.store.mapped()
            new = [a for a in fresh.values() if a not in self._last_ts and a not in self._open]
            self._mapped, self._mapped_at = fresh, time.monotonic()
            if new and not force:
                self._adopt(self.store.views(new))
        return self._mapped

    def refresh_now(self) -> None:
        """A login was mapped (an account was created on the platform): read the mapping next step."""
        self._mapped_at = 0.0

    def _adopt(self, views: dict[str, AccountView]) -> None:
        inverse = {a: l for l, a in self._mapped.items()} if self._mapped else {}
        for account, view in views.items():
            if view.last_ts is not None:
                previous = self._last_ts.get(account)
                self._last_ts[account] = view.last_ts if previous is None else max(previous, view.last_ts)
            self._open[account] = set(view.positions)
            login = inverse.get(account)
            if login and view.equity is not None and view.balance is not None:
                self.guard.remember(login, view.equity, view.balance)

    @staticmethod
    def _trades_in(events: Iterable[PlatformEvent], mapped: dict[str, str]) -> tuple[dict[str, set], dict[str, set]]:
        opened: dict[str, set] = {}
        closed: dict[str, set] = {}
        for event in events:
            account = mapped.get(event.login or "")
            if account is None:
                continue
            kind = event.body.get("type")
            if kind == "trade_opened":
                opened.setdefault(account, set()).add(str(event.body["position"]))
            elif kind == "trade_closed":
                closed.setdefault(account, set()).add(str(event.body["position"]))
        return opened, closed

    def _lines(self, poll: Poll) -> tuple[list[bytes], list[tuple[str, dt.datetime]]]:
        mapped = self._mapped
        by_account: dict[str, list[tuple[dt.datetime, int, dict]]] = {}
        unmapped = 0
        kinds: dict[str, int] = {}  # counted here, added to the metrics once per step (a label lookup per event cost more)
        for event in poll.events:
            if event.login is None:  # firm-wide (news, prices): no order to keep
                by_account.setdefault("", []).append((event.ts, 0, dict(event.body)))
                continue
            account = mapped.get(event.login)
            if account is None:
                unmapped += 1
                continue
            body = dict(event.body)  # a copy: the gateway's event stays as it was
            body["account"] = account
            by_account.setdefault(account, []).append((event.ts, 0, body))
            kinds[event.kind] = kinds.get(event.kind, 0) + 1
        if unmapped:
            self.metrics.unmapped.labels(self.name).inc(unmapped)
        for reading in poll.readings:
            account = mapped.get(reading.login)
            if account is None:
                continue
            positions_open = bool(self._open.get(account))
            verdict = self.guard.judge(reading, positions_open=positions_open)
            if verdict.why:
                self.metrics.held.labels(self.name, verdict.why).inc()
            if verdict.equity is None:
                continue
            body: dict[str, Any] = {"type": "equity", "account": account, "equity": verdict.equity,
                                    "balance": reading.balance}
            if reading.margin is not None:
                body["margin"] = reading.margin
            if reading.floating is not None:
                body["floating"] = reading.floating
            by_account.setdefault(account, []).append((reading.observed_at, 1, body))
            kinds["equity"] = kinds.get("equity", 0) + 1
        for kind, count in kinds.items():
            self.metrics.events.labels(self.name, kind).inc(count)
        lines: list[bytes] = []
        stamps: list[tuple[str, dt.datetime]] = []
        for account, items in by_account.items():
            items.sort(key=lambda item: (item[0], item[1]))
            last = self._last_ts.get(account) if account else None
            for ts, _, body in items:
                # ``body`` is this step's own dict (made above): fields are added in place, in the order
                # (and with the effect on an existing key) of the copies ``{**body, key: value}`` they were
                if last is not None and ts < last:
                    body["platform_ts"] = rfc3339(ts)
                    ts = last
                    self.metrics.clamped.labels(self.name).inc()
                if body.get("type") == "equity":
                    body["id"] = self._equity_id(account, ts)
                body["ts"] = rfc3339(ts)
                lines.append(_ENCODER.encode(body))
                if account:
                    last = ts
            if account and last is not None:
                stamps.append((account, last))
        return lines, stamps

    def _equity_id(self, account: str, ts: dt.datetime) -> str:
        ms = int(ts.timestamp() * 1000)
        previous = self._eq_ms.get(account, 0)
        if ms <= previous:
            ms = previous + 1
        self._eq_ms[account] = ms
        digest = self._digests.get(account)
        if digest is None:
            digest = self._digests[account] = hashlib.blake2b(account.encode(), digest_size=4).hexdigest()
        return f"eq-{digest}-{ms}"

    def _commit(self, poll: Poll) -> CommitReport:
        lines, stamps = self._lines(poll)
        if not lines and poll.cursor == self._cursor:
            self._ok(poll)
            return CommitReport()
        with self.metrics.commit_seconds.labels(self.name).time():
            report = self.store.commit(lines, poll.cursor)
        self._cursor = poll.cursor
        for account, ts in stamps:
            self._last_ts[account] = ts
        opened, closed = self._trades_in(poll.events, self._mapped)
        for account, positions in opened.items():
            self._open.setdefault(account, set()).update(positions)
        for account, positions in closed.items():
            self._open.setdefault(account, set()).difference_update(positions)
        for status, count in (("accepted", report.accepted), ("duplicate", report.duplicates),
                              ("rejected", report.rejected)):
            if count:
                self.metrics.outcomes.labels(self.name, status).inc(count)
        if report.rejected:
            log.warning("platform %s: %d event(s) rejected by ingestion (kept in quarantine): %s", self.name,
                        report.rejected, "; ".join(report.reasons[:3]))
        if self.wake is not None and report.accepted:
            self.wake.set()
        self._ok(poll)
        return report

    def _ok(self, poll: Poll) -> None:
        now = time.time()
        self.health.last_ok_at = now
        self.health.steps += 1
        self.health.last_error = None
        self.metrics.last_ok.labels(self.name).set(now)
        if poll.platform_time is not None:
            lag = max(0.0, (self._now() - poll.platform_time).total_seconds())
            self.health.lag_s = lag
            self.metrics.lag.labels(self.name).set(lag)


def fresh_reading(login: str, balance: Decimal, equity: Decimal | None, at: dt.datetime, **extra: Any) -> AccountReading:
    return AccountReading(login=login, observed_at=at, balance=balance, equity=equity, **extra)


__all__ = ["AccountView", "CommitReport", "ConnectionStore", "ConnectorRunner", "Health", "NotConnected",
           "RunnerSettings"]
