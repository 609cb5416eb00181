"""propcrm's side of a connection, on the service's database (the runner's ``ConnectionStore``).

Events enter through :func:`propcrm.services.ingest.ingest` — the same validation, quarantine and
idempotency as the signed HTTP API — with the connection's name as their ``source``; the cursor moves
in that same transaction, so a crash between the two is impossible: after a restart the connector
reads again from the cursor of the last committed batch, and what it reads twice is a duplicate.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ...adapters.db import models as m
from ...adapters.db.models_platforms import PlatformConnection
from ...adapters.db.session import readonly_sessions
from ...adapters.platforms.runner import AccountView, CommitReport
from ...services import audit
from ...services.evaluation import STATE_DECODER
from ...services.ingest import ingest
from ...services.users import suspension
from .connections import mapped_logins

log = logging.getLogger("propcrm.platforms.store")
UTC = dt.timezone.utc
_CHUNK = 500


class FirmSuspended(RuntimeError):
    """The connection's firm is suspended by the operator: its platform's events are not stored. The runner
    backs off and retries; the supervisor stops the connector at its next look (service.py)."""


def _parse_ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class DatabaseStore:
    def __init__(self, session_factory: sessionmaker[Session], *, firm_id: str, connection_id: int, name: str) -> None:
        self.sessions = session_factory
        self._reads = readonly_sessions(session_factory)  # reads never queue for SQLite's write lock
        self.firm_id = firm_id
        self.connection_id = connection_id
        self.name = name
        self._stored: str | None = None  # the cursor as last read or written

    def mapped(self) -> dict[str, str]:
        with self._reads() as session:
            return mapped_logins(session, connection_id=self.connection_id)

    def cursor(self) -> str | None:
        with self._reads() as session:
            self._stored = session.scalar(select(PlatformConnection.cursor)
                                          .where(PlatformConnection.id == self.connection_id))
            return self._stored

    def views(self, accounts: Sequence[str]) -> dict[str, AccountView]:
        views: dict[str, AccountView] = {}
        with self._reads() as session:
            for start in range(0, len(accounts), _CHUNK):
                views.update(self._views(session, list(accounts[start:start + _CHUNK])))
        return views

    def _views(self, session: Session, externals: list[str]) -> dict[str, AccountView]:
        rows = session.execute(select(m.Account.id, m.Account.external_id, m.Account.status)
                               .where(m.Account.firm_id == self.firm_id, m.Account.external_id.in_(externals))).all()
        by_id = {r.id: r for r in rows}
        states = {r.account_id: r for r in session.execute(
            select(m.AccountState.account_id, m.AccountState.state, m.AccountState.equity, m.AccountState.balance)
            .where(m.AccountState.account_id.in_(list(by_id))))}
        pending: dict[int, list[tuple[str, bytes, dt.datetime]]] = {}
        for account_id, kind, body, ts in session.execute(
                select(m.RawEvent.account_id, m.RawEvent.type, m.RawEvent.body, m.RawEvent.ts)
                .where(m.RawEvent.status == "pending", m.RawEvent.account_id.in_(list(by_id)))
                .order_by(m.RawEvent.seq)):
            pending.setdefault(account_id, []).append((kind, body, ts))
        views = {}
        for account_id, row in by_id.items():
            positions: dict[str, dt.datetime] = {}
            lots: dict[str, Decimal] = {}
            last_ts = None
            equity = balance = None
            state_row = states.get(account_id)
            if state_row is not None:
                state = STATE_DECODER.decode(state_row.state)
                for key, position in state.positions.items():
                    positions[key] = position.opened_at
                    lots[key] = position.lots
                last_ts = state.last_ts
                equity, balance = state_row.equity, state_row.balance
            for kind, body, ts in pending.get(account_id, []):
                last_ts = ts if last_ts is None else max(last_ts, ts)
                if kind not in ("trade_opened", "trade_closed"):
                    continue
                try:
                    event = json.loads(body)
                    key = str(event["position"])
                    amount = Decimal(str(event["lots"]))
                except (ValueError, KeyError, ArithmeticError):
                    continue
                if kind == "trade_opened":
                    positions[key] = ts
                    lots[key] = amount
                elif key in lots:
                    lots[key] -= amount
                    if lots[key] <= 0:
                        positions.pop(key, None)
                        lots.pop(key, None)
            views[row.external_id] = AccountView(status=row.status, last_ts=last_ts, positions=positions,
                                                 equity=equity, balance=balance)
        return views

    def commit(self, lines: list[bytes], cursor: str | None) -> CommitReport:
        report = CommitReport()
        if not lines and cursor == self._stored:
            return report  # nothing new: no write transaction (SQLite has one writer at a time)
        with self.sessions.begin() as session:
            if lines:
                refused = suspension(session, self.firm_id)
                if refused is not None:  # nothing stored, the cursor stays: after the resume it reads on from here
                    raise FirmSuspended(f"platform {self.name}: {refused}")
                result = ingest(session, firm_id=self.firm_id, source=self.name, body=b"\n".join(lines) + b"\n",
                                content_type="application/x-ndjson")
                report.accepted, report.duplicates, report.rejected = result.accepted, result.duplicates, result.rejected
                report.reasons = [f"{o.id}: {o.reason}" for o in result.rejections()[:10]]
            session.execute(update(PlatformConnection).where(PlatformConnection.id == self.connection_id)
                            .values(cursor=cursor)  # not updated_at: that marks a change of settings
                            .execution_options(synchronize_session=False))
        self._stored = cursor
        return report

    def enforce(self, account: str, command: str, reason: str) -> bool:
        day = dt.datetime.now(UTC).date().isoformat()
        key = f"reconcile:{self.connection_id}:{account}:{command}:{day}"[:200]
        with self.sessions.begin() as session:
            if session.scalar(select(m.OutboxMessage.id).where(m.OutboxMessage.dedupe_key == key)) is not None:
                return False
            row = session.scalar(select(m.Account).where(m.Account.firm_id == self.firm_id,
                                                         m.Account.external_id == account))
            if row is None:
                return False
            session.add(m.OutboxMessage(firm_id=self.firm_id, kind="platform_command", dedupe_key=key,
                                        payload={"command": command, "account": account, "platform": self.name,
                                                 "login": row.login, "trader_id": row.trader_id,
                                                 "reconciliation": reason}))
            audit.append(session, actor=f"connector:{self.name}", action="platform.reconcile", entity="account",
                         entity_id=account, after={"command": command, "reason": reason}, firm_id=self.firm_id)
        log.warning("platform %s: %s — %s queued again", self.name, reason, command)
        return True


__all__ = ["DatabaseStore"]
