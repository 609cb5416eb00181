"""Live updates for the pages: one polling task per process, fanned out to server-sent event streams.

``GET /live?decisions=1&accounts=3,7,9`` (any logged-in user) streams:

- ``event: decision`` — a new row of ``decisions`` the user may see (``decisions=1``: every one of the
  firm, a trader only their own accounts'; ``decisions=accounts``: only those of the listed accounts);
- ``event: account`` — a listed account whose status or evaluated state changed: the row's display
  fields, already formatted as text on the server (``queries_accounts.display``), plus the raw status;
- a comment every 15 s (heartbeat), so proxies keep the connection open.

The hub (:class:`LiveHub`, one per app) starts its polling task when the first stream opens and
stops it a few seconds after the last one closes. Every second it reads, in a worker thread: the
decisions after its cursor (joined to their accounts for firm, trader and external id), and, for the
union of the accounts that open pages show, ``accounts.status`` and ``account_states.updated_at`` /
``last_seq`` — a changed mark means a changed row (this catches a status that staff set without an
evaluation, too). It reads only tables every deployment writes — the embedded worker and the
partitioned bus workers alike — so it works on SQLite and PostgreSQL, with or without a bus.

Who sees what is decided by :func:`visible` for every event and every stream: same firm, and for a
trader only their own accounts. A stream ends promptly when the client goes away, when the app shuts
down, or when the uvicorn server it runs in begins to exit (uvicorn waits for open responses before
it stops: without this, ``propcrm serve`` would hang on Ctrl-C while a page is open).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from ..adapters.db import models as m
from ..http.pages import fmt_money

log = logging.getLogger("propcrm.web.live")

INTERVAL = 1.0  # seconds between polls
HEARTBEAT = 15.0  # seconds between comments on a quiet stream
RECHECK = 0.5  # s: a stream re-reads its session before sending when its last check is older
LINGER = 5.0  # seconds the polling task waits for a new stream after the last one closed
MAX_ACCOUNTS = 500  # account ids one stream may follow
MAX_DECISIONS = 1000  # decisions read per poll (the rest follow on the next)
QUEUE = 1000  # events buffered per stream; a stream that cannot keep up loses the oldest


@dataclass(frozen=True)
class Scope:
    """Who a stream belongs to: the firm, and for a trader the only trader whose data they may see."""

    firm_id: str
    trader_id: int | None  # None: staff (the whole firm)


@dataclass(eq=False)
class Subscriber:
    scope: Scope
    decisions: str = ""  # "" (none), "all" or "accounts" (only those of ``accounts``)
    accounts: frozenset[int] = frozenset()
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=QUEUE))

    def offer(self, item: tuple[str, dict[str, Any]]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:  # a stuck client: drop its oldest, keep the newest
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(item)


@dataclass(frozen=True)
class DecisionNote:
    id: int
    firm_id: str
    trader_id: int | None
    account_id: int
    external_id: str
    kind: str
    rule: str
    message: str
    ts: str
    value: str = "—"
    threshold: str = "—"

    def data(self) -> dict[str, Any]:
        return {"id": self.id, "account_id": self.account_id, "account": self.external_id, "kind": self.kind,
                "rule": self.rule, "message": self.message, "ts": self.ts, "value": self.value,
                "threshold": self.threshold}


@dataclass(frozen=True)
class AccountNote:
    id: int
    firm_id: str
    trader_id: int | None
    row: dict[str, Any]  # display fields (text) + raw status


def visible(scope: Scope, firm_id: str, trader_id: int | None) -> bool:
    """May a stream of ``scope`` see data of an account of ``firm_id`` held by ``trader_id``?"""
    if scope.firm_id != firm_id:
        return False
    return scope.trader_id is None or scope.trader_id == trader_id


def select_for(sub: Subscriber, decisions: list[DecisionNote], accounts: list[AccountNote]) -> list[tuple[str, dict]]:
    """What one stream receives of a poll's news: only what its user may see and asked for."""
    out: list[tuple[str, dict]] = []
    if sub.decisions:
        for note in decisions:
            if not visible(sub.scope, note.firm_id, note.trader_id):
                continue
            if sub.decisions == "accounts" and note.account_id not in sub.accounts:
                continue
            out.append(("decision", note.data()))
    for note in accounts:
        if note.id in sub.accounts and visible(sub.scope, note.firm_id, note.trader_id):
            out.append(("account", note.row))
    return out


def parse_params(decisions: str | None, accounts: str | None) -> tuple[str, frozenset[int]]:
    """``decisions=1|all|accounts`` and ``accounts=1,2,3`` (at most 500 ids) → (mode, ids); ValueError."""
    mode = {"": "", "0": "", "1": "all", "all": "all", "true": "all", "accounts": "accounts"}.get(
        (decisions or "").strip().lower())
    if mode is None:
        raise ValueError("decisions must be 1 (all you may see) or accounts (those of the listed accounts)")
    ids: set[int] = set()
    for part in (accounts or "").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= 2_147_483_647:
            raise ValueError("accounts must be a comma-separated list of account ids")
        ids.add(int(part))
    if len(ids) > MAX_ACCOUNTS:
        raise ValueError(f"follow at most {MAX_ACCOUNTS} accounts per stream")
    return mode, frozenset(ids)


def server_exiting() -> bool:
    """Whether the uvicorn server running this process has been told to stop (Ctrl-C, SIGTERM).

    uvicorn installs its ``handle_exit`` as the SIGINT handler while it serves; its ``should_exit`` is
    the only sign of a shutdown an endless response can see before uvicorn waits for it to end.
    """
    try:
        handler = signal.getsignal(signal.SIGINT)
    except (ValueError, AttributeError):  # pragma: no cover - no signals here
        return False
    server = getattr(handler, "__self__", None)
    return bool(getattr(server, "should_exit", False))


def _chunks(ids: list[int], size: int = 500):
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


class LiveHub:
    """One per app: polls the database for news and hands each stream what it may see."""

    def __init__(self, sessions, *, interval: float = INTERVAL,
                 rows: Callable[..., list[dict[str, Any]]] | None = None) -> None:
        self.sessions = sessions
        self.interval = interval
        self.subscribers: set[Subscriber] = set()
        self.cursor: int | None = None  # the last decision id seen
        self.marks: dict[int, tuple] = {}  # account id -> (status, updated_at, last_seq) last seen
        self.task: asyncio.Task | None = None
        self.closed = False
        self._rows = rows

    # -------------------------------------------------------------- subscribers
    def subscribe(self, sub: Subscriber) -> None:
        self.subscribers.add(sub)
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._run(), name="propcrm-live")

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def close(self) -> None:
        self.closed = True
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -------------------------------------------------------------- polling
    async def _run(self) -> None:
        idle_since: float | None = None
        try:
            while not self.closed:
                if not self.subscribers:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > LINGER:
                        break
                else:
                    idle_since = None
                    wanted = sorted({i for sub in list(self.subscribers) for i in sub.accounts})
                    try:
                        decisions, accounts = await asyncio.to_thread(self.poll, wanted)
                    except Exception:  # noqa: BLE001 - a failed poll (a busy database) is retried
                        log.exception("live poll failed; retrying")
                        decisions, accounts = [], []
                    if decisions or accounts:
                        self.dispatch(decisions, accounts)
                await asyncio.sleep(self.interval)
        finally:
            self.cursor = None  # a later start begins at the newest decision, not with a backlog
            self.marks = {}

    def dispatch(self, decisions: list[DecisionNote], accounts: list[AccountNote]) -> None:
        for sub in list(self.subscribers):
            for item in select_for(sub, decisions, accounts):
                sub.offer(item)

    def poll(self, wanted: list[int]) -> tuple[list[DecisionNote], list[AccountNote]]:
        """One read: new decisions, and the changed rows among ``wanted`` accounts (runs in a thread)."""
        with self.sessions() as session:
            decisions = self._decisions(session)
            accounts = self._accounts(session, wanted)
        return decisions, accounts

    def _decisions(self, session) -> list[DecisionNote]:
        if self.cursor is None:
            self.cursor = session.scalar(select(func.max(m.Decision.id))) or 0
            return []
        rows = session.execute(
            select(m.Decision.id, m.Decision.firm_id, m.Decision.account_id, m.Decision.kind, m.Decision.rule,
                   m.Decision.message, m.Decision.ts, m.Decision.value, m.Decision.threshold,
                   m.Account.external_id, m.Account.trader_id)
            .join(m.Account, m.Account.id == m.Decision.account_id)
            .where(m.Decision.id > self.cursor)
            .order_by(m.Decision.id)
            .limit(MAX_DECISIONS)
        ).all()
        if rows:
            self.cursor = rows[-1].id
        return [DecisionNote(id=r.id, firm_id=r.firm_id, trader_id=r.trader_id, account_id=r.account_id,
                             external_id=r.external_id, kind=r.kind, rule=r.rule, message=r.message,
                             ts=_iso(r.ts), value=fmt_money(r.value), threshold=fmt_money(r.threshold))
                for r in rows]

    def _accounts(self, session, wanted: list[int]) -> list[AccountNote]:
        marks: dict[int, tuple] = {}
        owners: dict[int, tuple[str, int | None]] = {}
        for chunk in _chunks(wanted):
            for row in session.execute(
                select(m.Account.id, m.Account.firm_id, m.Account.trader_id, m.Account.status,
                       m.AccountState.updated_at, m.AccountState.last_seq)
                .outerjoin(m.AccountState, m.AccountState.account_id == m.Account.id)
                .where(m.Account.id.in_(chunk))
            ):
                marks[row.id] = (row.status, row.updated_at, row.last_seq)
                owners[row.id] = (row.firm_id, row.trader_id)
        # changed since the last poll, and ids polled for the first time: the page that asked for those was
        # rendered a moment ago, and a change between its rendering and this poll must not be lost (their
        # current rows go out once; a row that did not change changes nothing on the page)
        changed = [i for i, mark in marks.items() if self.marks.get(i) != mark]
        self.marks = marks
        if not changed:
            return []
        by_firm: dict[str, list[int]] = {}
        for account_id in changed:
            by_firm.setdefault(owners[account_id][0], []).append(account_id)
        notes = []
        for firm_id, ids in by_firm.items():
            for item in self.rows(session, firm_id, ids):
                row = display_row(item)
                notes.append(AccountNote(id=item["id"], firm_id=firm_id, trader_id=item.get("trader_id"), row=row))
        return notes

    def rows(self, session, firm_id: str, ids: list[int]) -> list[dict[str, Any]]:
        if self._rows is not None:
            return self._rows(session, firm_id=firm_id, trader_id=None, ids=ids)
        from .queries_accounts import rows_for

        return rows_for(session, firm_id=firm_id, trader_id=None, ids=ids)


def display_row(item: dict[str, Any]) -> dict[str, Any]:
    from .queries_accounts import display

    return display(item)


def _iso(ts: dt.datetime) -> str:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.timezone.utc)
    return ts.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def hub_for(app) -> LiveHub:
    hub = getattr(app.state, "live_hub", None)
    if hub is None:
        sessions = getattr(app.state, "read_sessions", None) or app.state.sessions
        hub = app.state.live_hub = LiveHub(sessions)
    return hub


def sse(event: str, data: dict[str, Any]) -> str:
    """One server-sent event; the JSON has no raw newlines, so one ``data:`` line carries it."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


async def stream(hub: LiveHub, sub: Subscriber, is_disconnected: Callable[[], Awaitable[bool]], *,
                 heartbeat: float = HEARTBEAT, tick: float = 1.0,
                 exiting: Callable[[], bool] = server_exiting,
                 authorized: Callable[[], Awaitable[bool]] | None = None,
                 recheck: float = RECHECK) -> AsyncIterator[str]:
    """The body of one ``/live`` response: events as they come, a heartbeat, and an end when the
    client leaves, the hub closes, the server is stopping or the session has ended (logout, revoked,
    expired, user deactivated: ``authorized`` is asked again before an event is sent when its last
    answer is older than ``recheck`` seconds, and every ``heartbeat`` when nothing happens)."""
    hub.subscribe(sub)
    checked = time.monotonic()

    async def still_allowed(older_than: float) -> bool:
        nonlocal checked
        if authorized is None or time.monotonic() - checked < older_than:
            return True
        checked = time.monotonic()
        return await authorized()

    try:
        yield "retry: 3000\n: connected\n\n"
        quiet_since = time.monotonic()
        while not hub.closed and not exiting():
            try:
                event, data = await asyncio.wait_for(sub.queue.get(), timeout=tick)
            except asyncio.TimeoutError:
                if await is_disconnected():
                    break
                if time.monotonic() - quiet_since >= heartbeat:
                    if not await still_allowed(0):
                        break
                    quiet_since = time.monotonic()
                    yield ": keepalive\n\n"
                continue
            if not await still_allowed(recheck):
                break
            quiet_since = time.monotonic()
            yield sse(event, data)
    finally:
        hub.unsubscribe(sub)


__all__ = ["AccountNote", "DecisionNote", "LiveHub", "Scope", "Subscriber", "hub_for", "parse_params",
           "select_for", "server_exiting", "sse", "stream", "visible"]
