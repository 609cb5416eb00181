"""propcrm's side of a connection, on the service's database (the runner's ``ConnectionStore``).

Events enter through :func:`propcrm.services.ingest.ingest` — the same validation, quarantine and
idempotency as the signed HTTP API — with the connection's name as their ``source``; the cursor moves
in that same transaction, so a crash between the two is impossible: after a restart the connector
reads again from the cursor of the last committed batch, and what it reads twice is a duplicate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ...adapters.db import models as m
from ...adapters.db.models_platforms import PlatformConnection
from ...adapters.db.session import readonly_sessions
from ...adapters.platforms.runner import AccountView, CommitReport
from ...adapters.settings import current as current_settings
from ...services import audit
from ...services.evaluation import STATE_DECODER
from ...adapters.bus import bus_mode
from ...services.ingest import ingest, prepare_for_bus, publish_prepared
from ...services.users import suspension
from .connections import mapped_logins

log = logging.getLogger("propcrm.platforms.store")
UTC = dt.timezone.utc
_CHUNK = 500
PART_PAUSE_S = 0.1  # SQLite's busy handler looks every 100 ms once a writer has waited ~0.3 s
_KEEP = object()  # an earlier part of a step: the stored cursor is left as it is


class FirmSuspended(RuntimeError):
    """The connection's firm is suspended by the operator: its platform's events are not stored. The runner
    backs off and retries; the supervisor stops the connector at its next look (service.py)."""


def _parse_ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class DatabaseStore:
    def __init__(self, session_factory: sessionmaker[Session], *, firm_id: str, connection_id: int, name: str,
                 commit_lines: int | None = None, part_pause_s: float = PART_PAUSE_S) -> None:
        self.sessions = session_factory
        # lines per transaction (``PROPCRM_CONNECTOR_COMMIT_LINES``, see :meth:`commit`)
        self.commit_lines = max(1, commit_lines or current_settings().connector_commit_lines)
        self.part_pause_s = part_pause_s  # between two parts of a step (see commit)
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
        """Store a step's ``lines`` and move the cursor to ``cursor``. At most :attr:`commit_lines` lines
        go in one transaction, so that a commit stays short and the evaluation worker gets SQLite's write
        lock between two (a step at the issue's load carried ~8,000 lines: 1.7–2 s holding the lock);
        the thread pauses :attr:`part_pause_s` between two parts, so that a writer asleep in SQLite's
        busy handler wakes to a free lock.
        Only the last part moves the cursor: after a crash between two parts the connector reads the
        whole step again from the previous cursor, and the lines the first parts stored come back as
        duplicates of their ids (deals, fees, positions, logins: ids from the platform's tickets) —
        no gap, nothing stored twice."""
        report = CommitReport()
        if not lines and cursor == self._stored:
            return report  # nothing new: no write transaction (SQLite has one writer at a time)
        size = self.commit_lines
        parts = [lines[start:start + size] for start in range(0, len(lines), size)] or [[]]
        for number, part in enumerate(parts, start=1):
            if number > 1 and self.part_pause_s:
                # A writer that queued for the lock during the last part sleeps in SQLite's busy handler
                # (polls 1, 2, 5 … then every 100 ms): without a pause this thread would take the lock
                # again before it looks, and the cap would shorten nothing for it.
                time.sleep(self.part_pause_s)
            self._commit_part(part, cursor if number == len(parts) else _KEEP, report)
        self._stored = cursor
        return report

    def _commit_part(self, lines: list[bytes], cursor: str | None | object, report: CommitReport) -> None:
        """One transaction: ``lines`` ingested and the cursor stored with them — unless ``cursor`` is
        ``_KEEP`` (an earlier part of a step, see :meth:`commit`: the stored cursor stays as it is)."""
        with self.sessions.begin() as session:
            if lines:
                refused = suspension(session, self.firm_id)
                if refused is not None:  # nothing (more) stored, the cursor stays: after the resume it reads on from here
                    raise FirmSuspended(f"platform {self.name}: {refused}")
                result = ingest(session, firm_id=self.firm_id, source=self.name, body=b"\n".join(lines) + b"\n",
                                content_type="application/x-ndjson")
                report.accepted += result.accepted
                report.duplicates += result.duplicates
                report.rejected += result.rejected
                report.reasons += [f"{o.id}: {o.reason}" for o in result.rejections()[:10 - len(report.reasons)]]
            if cursor is not _KEEP:
                session.execute(update(PlatformConnection).where(PlatformConnection.id == self.connection_id)
                                .values(cursor=cursor)  # not updated_at: that marks a change of settings
                                .execution_options(synchronize_session=False))

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


class BusStore(DatabaseStore):
    """propcrm's side of a connection in the scale-out deployment (``PROPCRM_NATS_URL`` set): a step's
    events are checked as the ingest node checks a request (:func:`~propcrm.services.ingest.prepare_for_bus`:
    malformed lines, unknown accounts and events from the future are quarantined), published to their
    accounts' partitions (:class:`~propcrm.adapters.bus.jetstream.EventPublisher`, the ingest node's
    subjects and headers, plus :data:`~propcrm.adapters.bus.partitions.HEADER_ONCE`), and only once
    JetStream has acknowledged every message is the cursor stored.

    The two cannot be one transaction: a crash between them re-publishes the step after the restart (the
    runner reads again from the stored cursor). That is harmless because the partition workers apply a
    platform source's events at most once by id (``cluster/partition.py``), as they do for payouts.

    The NATS connection lives on a private event loop in a daemon thread, so it answers the server's
    pings between steps; :meth:`close` ends both."""

    def __init__(self, session_factory: sessionmaker[Session], *, firm_id: str, connection_id: int, name: str,
                 bus) -> None:
        super().__init__(session_factory, firm_id=firm_id, connection_id=connection_id, name=name)
        self.bus = bus  # adapters.bus.jetstream.BusConfig
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc = None
        self._publisher = None

    def _run(self, coroutine, timeout: float):
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name=f"platform-{self.name}-bus", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _publish(self, prepared):
        from ...adapters.bus.jetstream import EventPublisher, connect
        from ...adapters.bus.partitions import HEADER_ONCE

        if self._publisher is None:
            self._nc, js = await connect(self.bus, name=f"propcrm-connect-{self.name}")
            self._publisher = EventPublisher(js, self.bus, headers={HEADER_ONCE: "platform"})
        try:
            return await publish_prepared(self._publisher, prepared)
        except Exception:
            await self._drop()  # a fresh connection for the retry of the step
            raise

    async def _drop(self) -> None:
        nc, self._nc, self._publisher = self._nc, None, None
        if nc is not None:
            try:
                await nc.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                pass

    def commit(self, lines: list[bytes], cursor: str | None) -> CommitReport:
        if not lines and cursor == self._stored:
            return CommitReport()
        report = self.publish(lines) if lines else CommitReport()
        self.store_cursor(cursor)  # after JetStream's acknowledgement (a crash before it: the step is re-read)
        return report

    def publish(self, lines: list[bytes]) -> CommitReport:
        """Check ``lines`` and publish them; returns once JetStream acknowledged every message (raises
        :class:`~propcrm.adapters.bus.jetstream.BusError` else: the runner reconnects and reads again)."""
        with self.sessions.begin() as session:  # the quarantine of refused lines commits before the publish
            refused = suspension(session, self.firm_id)
            if refused is not None:  # nothing published, the cursor stays
                raise FirmSuspended(f"platform {self.name}: {refused}")
            prepared = prepare_for_bus(session, firm_id=self.firm_id, source=self.name,
                                       body=b"\n".join(lines) + b"\n", content_type="application/x-ndjson")
        result = self._run(self._publish(prepared), timeout=self.bus.publish_timeout_s + 10)
        return CommitReport(accepted=result.accepted, duplicates=result.duplicates, rejected=result.rejected,
                            reasons=[f"{o.id}: {o.reason}" for o in result.rejections()[:10]])

    def store_cursor(self, cursor: str | None) -> None:
        with self.sessions.begin() as session:
            session.execute(update(PlatformConnection).where(PlatformConnection.id == self.connection_id)
                            .values(cursor=cursor).execution_options(synchronize_session=False))
        self._stored = cursor

    def close(self) -> None:
        """End the NATS connection and its loop (the supervisor calls it when it stops the runner)."""
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._drop(), loop).result(5)
        except Exception:  # noqa: BLE001
            pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5)
        loop.close()
        self._loop = self._thread = None


def store_for(session_factory: sessionmaker[Session], *, firm_id: str, connection_id: int, name: str,
              bus=None) -> DatabaseStore:
    """The store a connection's runner writes through: :class:`BusStore` in the scale-out deployment
    (``bus``, a ``BusConfig``, or the process's settings' ``PROPCRM_NATS_URL``), :class:`DatabaseStore` else."""
    if bus is None and bus_mode():
        from ...adapters.bus.jetstream import BusConfig

        bus = BusConfig.from_env()
    if bus is not None:
        return BusStore(session_factory, firm_id=firm_id, connection_id=connection_id, name=name, bus=bus)
    return DatabaseStore(session_factory, firm_id=firm_id, connection_id=connection_id, name=name)


__all__ = ["BusStore", "DatabaseStore", "FirmSuspended", "store_for"]
