"""An in-memory platform gateway and connection store for the connector framework's unit tests."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from decimal import Decimal

from propcrm.adapters.platforms.port import (AccountReading, NewAccount, NotConnected, PlatformEvent, PlatformPosition,
                                             Poll)
from propcrm.adapters.platforms.runner import AccountView, CommitReport

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


class FakePlatform:
    """Deals are kept in order; the cursor is the index of the next deal. ``fail_next`` makes the next
    call raise as a dropped connection would."""

    family = "fake"

    def __init__(self) -> None:
        self.deals: list[PlatformEvent] = []
        self.accounts: dict[str, AccountReading] = {}
        self.open_positions: dict[str, PlatformPosition] = {}
        self.trading: dict[str, bool] = {}
        self.fail_next: int = 0
        self.opened = 0
        self.calls: list[str] = []
        self.history: dict[str, list[PlatformEvent]] = {}  # position -> its deals (for reconciliation)

    def _maybe_fail(self) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise NotConnected("connection reset by the fake")

    def open(self) -> None:
        self._maybe_fail()
        self.opened += 1

    def close(self) -> None:
        pass

    def deal(self, login: str, ts: dt.datetime, body: dict) -> None:
        event = PlatformEvent(login, ts, body)
        self.deals.append(event)
        if "position" in body:
            self.history.setdefault(str(body["position"]), []).append(event)

    def readings(self, logins: Sequence[str]) -> list[AccountReading]:
        return [self.accounts[login] for login in logins if login in self.accounts]

    def positions(self, logins: Sequence[str]) -> list[PlatformPosition]:
        return [p for p in self.open_positions.values() if p.login in logins]

    def poll(self, cursor: str | None, logins: Sequence[str], *, start: dt.datetime) -> Poll:
        self._maybe_fail()
        index = int(cursor or 0)
        readings = self.readings(logins)
        events = [e for e in self.deals[index:] if e.login in logins]
        return Poll(events=events, readings=readings, cursor=str(len(self.deals)),
                    platform_time=events[-1].ts if events else None)

    def opening_events(self, position: PlatformPosition) -> list[PlatformEvent]:
        self.calls.append(f"opening {position.position}")
        return [e for e in self.history.get(position.position, []) if e.body["type"] == "trade_opened"]

    def closing_events(self, login: str, position: str, since: dt.datetime) -> list[PlatformEvent]:
        self.calls.append(f"closing {position}")
        return [e for e in self.history.get(position, []) if e.body["type"] == "trade_closed"]

    def set_trading(self, login: str, enabled: bool) -> None:
        self.trading[login] = enabled

    def close_positions(self, login: str) -> int:
        return 0

    def balance_operation(self, login: str, amount: Decimal, comment: str) -> str:
        return "1"

    def find_balance_operation(self, login: str, comment: str, since: dt.datetime) -> str | None:
        return None

    def create_account(self, spec: NewAccount) -> str:
        return "9000"

    def find_account(self, spec: NewAccount) -> str | None:
        return None

    def change_group(self, login: str, group: str) -> None:
        pass


class FakeStore:
    """Stores lines by event id (as ingestion would: a repeated id is a duplicate) and the cursor with them."""

    def __init__(self, mapping: dict[str, str], name: str = "fake") -> None:
        self.name = name
        self.mapping = dict(mapping)
        self.events: dict[str, dict] = {}
        self.order: list[str] = []
        self.stored_cursor: str | None = None
        self.view: dict[str, AccountView] = {}
        self.enforced: list[tuple[str, str]] = []
        self.fail_commit = 0

    def mapped(self) -> dict[str, str]:
        return dict(self.mapping)

    def cursor(self) -> str | None:
        return self.stored_cursor

    def views(self, accounts: Sequence[str]) -> dict[str, AccountView]:
        return {a: self.view[a] for a in accounts if a in self.view}

    def commit(self, lines: list[bytes], cursor: str | None) -> CommitReport:
        if self.fail_commit:
            self.fail_commit -= 1
            raise RuntimeError("database is locked")
        report = CommitReport()
        for line in lines:
            event = json.loads(line)
            if event["id"] in self.events:
                report.duplicates += 1
                continue
            self.events[event["id"]] = event
            self.order.append(event["id"])
            report.accepted += 1
        self.stored_cursor = cursor
        return report

    def enforce(self, account: str, command: str, reason: str) -> bool:
        self.enforced.append((account, command))
        return True

    def of_type(self, kind: str) -> list[dict]:
        return [self.events[i] for i in self.order if self.events[i]["type"] == kind]


def reading(login: str, balance: str, equity: str | None, at: dt.datetime = T0, **extra) -> AccountReading:
    return AccountReading(login, at, Decimal(balance), None if equity is None else Decimal(equity), **extra)


def opened(position: str, lots: str = "1", symbol: str = "EURUSD", side: str = "buy") -> dict:
    return {"id": f"deal-{position}-in", "type": "trade_opened", "position": position, "symbol": symbol, "side": side,
            "lots": Decimal(lots), "price": Decimal("1.1")}


def closed(position: str, profit: str, lots: str = "1") -> dict:
    return {"id": f"deal-{position}-out", "type": "trade_closed", "position": position, "lots": Decimal(lots),
            "price": Decimal("1.1"), "profit": Decimal(profit)}
