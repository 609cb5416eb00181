"""The evaluation worker: stored events → engine → state, decisions and effects, in one transaction.

Each account's stream is its own events plus the firm's ``clock`` and ``news`` events, in stored
order (``raw_events.seq``). ``account_states.last_seq`` records how far the account has been
evaluated. One pass takes a batch of an account's next events, runs them through the same
:class:`~propcrm.engine.runner.Engine` that ``propcrm replay`` uses, and commits — in a single
transaction — the new state and ``last_seq``, the decisions, the raw events' status, the account's
status, the audit entries and the outbox messages that carry the decisions' effects. A crash at any
point therefore either loses the whole batch (it is evaluated again) or nothing: no decision is lost
or doubled.

Nothing here assumes one process: on PostgreSQL an account is claimed with ``FOR UPDATE SKIP
LOCKED``, so any number of workers can run passes side by side; a partitioned worker on a bus (a
later issue) only changes which accounts a worker asks for.

**One account never holds up another.** An event that cannot be decoded (stored by an older version
before the bounds were checked) or is dated more than the allowed skew ahead of the clock is set aside
alone; an account whose events raise while they are evaluated, or whose outcome the database refuses
to store, has all its events of the pass set aside. Setting aside means ``raw_events.status =
'rejected'`` with the reason and a quarantine entry (what a risk officer reads); the account keeps its
state, its position moves past the firm's clock/news events of the pass, and the rest of the pass
commits. The outcomes are written all at once and, only when that fails, again in halves, each in a
savepoint (:func:`write_isolated`): a bad account costs a few retries of the write, never a rollback of
the others. Failures of the database itself (a lost connection, a lock timeout) still fail the whole
pass, which is retried.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

import msgspec
from sqlalchemy import DateTime, and_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy import text as text_sql
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ..adapters.db import models as m
from ..domain.decisions import ENCODER as DECISION_ENCODER
from ..domain.decisions import Decision
from ..domain.events import DECODER, Clock, News, Price, decode_lines
from ..domain.market import Market, NewsEntry, SymbolTable, Tick, parse_symbol_table
from ..domain.program import CompiledPack, compile_pack
from ..domain.state import AccountState
from ..engine.runner import Engine, moved_by
from . import audit, near_breach
from .equity_points import Sampler
from .catalog import PackCache
from .trades import PROJECTED_EVENTS
from .outcomes import (  # noqa: F401 - the shared write path, re-exported for callers that took it from here
    HELD, MAX_REASON, RESEND, STATE_DECODER, STATE_ENCODER, STATE_LIMIT, SYSTEMIC_ERRORS, AccountOutcome, AccountRef,
    WriteReport, account_status, clean_reason, error_text, outcome_for, quarantine_rows, state_problem, upsert_states,
    write_isolated, write_outcomes,
)

log = logging.getLogger("propcrm.evaluation")

#: The firm-wide events of an account's stream (one definition: the worker, re-bind, the what-if and the
#: account's chart replay the same stream). A ``price`` tick moves only the accounts whose open positions
#: it marks (the engine's holders index), so the worker wakes those accounts only (see ``_tick_work``);
#: every other account moves past the tick lazily, with its next event.
GLOBAL_TYPES = ("clock", "news", "price")
#: A firm's tick history is pruned after this many new ticks (see ``EvaluationWorker._prune``).
PRUNE_EVERY = 50_000
#: The firm-wide events that make every account of the firm due: deadlines and the news calendar.
DEADLINE_TYPES = ("clock", "news")


def firm_wide(*columns, firm_id: str):
    """The query of a firm's stored firm-wide events of every account's stream (add the seq bounds and
    the order): what the worker feeds its accounts, and so what a replay of an account must feed."""
    return select(*columns).where(m.RawEvent.firm_id == firm_id, m.RawEvent.account_id.is_(None),
                                  m.RawEvent.type.in_(GLOBAL_TYPES), m.RawEvent.status != "rejected")


@dataclass
class PassReport:
    accounts: int = 0
    events: int = 0
    decisions: int = 0
    rejected: int = 0
    set_aside: int = 0  # accounts whose events of the pass were set aside (not evaluated or not stored)
    stale: int = 0  # accounts someone else wrote while the pass evaluated them: evaluated again next pass
    seconds: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, report: PassReport) -> None:
        """Count another pass's figures into these (a run of passes; ``stale`` is per pass, not summed)."""
        self.accounts += report.accounts
        self.events += report.events
        self.decisions += report.decisions
        self.rejected += report.rejected
        self.set_aside += report.set_aside
        self.seconds += report.seconds
        for kind, n in report.by_kind.items():
            self.by_kind[kind] = self.by_kind.get(kind, 0) + n


@dataclass
class _AccountWork:
    """One account's share of a pass: its rows, what evaluating them gave, or why it failed."""

    account: AccountRef
    mine: list  # its own pending rows in the pass
    last_seq: int  # the position the account reaches with this pass (own and firm-wide rows)
    has_state: bool
    outcome: AccountOutcome | None = None
    applied: list[int] = field(default_factory=list)
    rejected: list[tuple] = field(default_factory=list)  # (own row, reason): set aside alone
    firm_problems: list[tuple] = field(default_factory=list)  # (firm-wide row, reason) for this account
    failure: str | None = None  # set: every own row of the pass is set aside with this reason
    events: int = 0
    decisions: int = 0
    held: _Held | None = None  # what the worker keeps of the account once the pass commits
    seen: tuple[int, bytes] | None = None  # (last_seq, state) of account_states as the pass read them
    program_key: tuple[int, str] | None = None  # (pack version, phase) as the pass read them
    moved: tuple[str, ...] = ()  # the symbols whose ticks move its open positions after the pass


@dataclass
class _PassPlan:
    """What a pass evaluated, before anything is written."""

    work: list[_AccountWork]
    firm_aside: list[tuple]  # firm-wide rows set aside: (row, firm id, reason)


@dataclass
class _Held:
    """An account's engine state kept in memory between passes, with the bytes it was stored as.

    It is used only while ``account_states`` still holds exactly ``stored`` at ``last_seq`` for the
    same pack version and phase: anything else that writes the state (an override clearing a breach,
    a second worker, a restore) changes one of them, and the state is read from the row again."""

    stored: bytes
    last_seq: int
    program_key: tuple[int, str]
    state: AccountState


class EvaluationWorker:
    def __init__(self, session_factory: sessionmaker[Session], *, batch: int = 5000,
                 max_ahead: dt.timedelta | None = None, catch_up: int = 250, lazy_clock: bool = True) -> None:
        from .ingest import max_ahead_from_env

        self.sessions = session_factory
        self.batch = batch
        #: accounts with nothing of their own pending but behind their firm's clock/news, per pass: a
        #: clock tick makes every account of the firm behind, and catching them all up in the pass that
        #: also carries a breach would hold that breach's decision for the whole firm's evaluation
        self.catch_up = catch_up
        #: catch an account up after a firm clock/news event only once one can change it (its stored
        #: ``next_due`` / ``news_until``), and feed it only the clocks it is due at; False: every account
        #: behind is caught up and meets every clock (the former, eager path: the equality tests' reference)
        self.lazy_clock = lazy_clock
        self._clock_high: dict[str, tuple[int, dt.datetime | None]] = {}  # firm -> (clock seq read, latest ts)
        # firm -> {number of calendar entries: the news part of a Market holding them} (see _market_for)
        self._news_bases: dict[str, dict[int, tuple[list, list, set]]] = {}
        self.max_ahead = max_ahead_from_env() if max_ahead is None else max_ahead
        self._packs = PackCache(size=None)  # this worker's database's versions, compiled once
        self._calendars: dict[str, list[tuple[int, NewsEntry]]] = {}
        self._news_cursor: dict[str, int] = {}  # per firm, the last news row read into its calendar
        self._symbol_tables: dict[str, tuple[str, SymbolTable]] = {}
        self._pass_symbols: dict[str, SymbolTable | None] = {}  # firm -> its table, read once per pass
        self._held: dict[int, _Held] = {}  # account id -> its state between passes (see _Held)
        # Ticks (see _tick_work): each firm's accepted ticks by symbol in stored order, to give an account
        # the prices as of its position; the accounts holding each symbol; the accounts a tick made due.
        self._ticks: dict[str, dict[str, tuple[list[int], list[Price]]]] = {}
        # per firm, the last price row read into ``_ticks`` (per firm: stored order is commit order only
        # within a firm, whose ingestion holds a lock); ``_cold`` until the holders index is first built
        self._tick_cursor: dict[str, int] = {}
        self._cold = True
        self._since_prune: dict[str, int] = {}  # per firm, ticks read since its history was last pruned
        self._holders: dict[str, dict[str, set[int]]] = {}  # firm -> symbol -> account ids
        self._holding: dict[int, tuple[str, tuple[str, ...], int]] = {}  # account -> (firm, symbols, last_seq)
        self._due: dict[int, int] = {}  # account -> the latest tick seq that moves it
        self._tables_seen: dict[str, dt.datetime] = {}  # firm -> its symbol table's version the index used
        bind = session_factory.kw.get("bind")
        self._reads: sessionmaker[Session] | None = None
        if bind is not None and bind.dialect.name == "sqlite":
            self._reads = sessionmaker(bind.execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False)

    # ------------------------------------------------------------------ public
    def run_pass(self, *, firm_id: str | None = None, max_accounts: int = 2000) -> PassReport:
        """Evaluate the next batch of work — up to ``max_accounts`` accounts and ``batch`` of their
        events — in one transaction."""
        started = time.perf_counter()
        report = PassReport()
        kept: list[_AccountWork] = []
        try:
            if self._reads is not None:
                # SQLite has one writer: evaluate in a read transaction (ingestion goes on meanwhile), then
                # take the write lock only to check nothing moved underneath and write the batch
                with self._reads() as session:
                    ids = self._accounts_with_work(session, firm_id, max_accounts)
                    plan = self._evaluate(session, ids) if ids else None
                if plan is not None:
                    with self.sessions.begin() as session:
                        kept = self._commit(session, plan, report, verify=True)
            else:
                with self.sessions.begin() as session:  # claim (FOR UPDATE SKIP LOCKED), evaluate, write
                    ids = self._accounts_with_work(session, firm_id, max_accounts)
                    if ids:
                        kept = self._commit(session, self._evaluate(session, ids), report, verify=False)
        except BaseException:
            self._held.clear()  # the engines may hold what was rolled back: read every state again
            self._calendars.clear()  # (a news row the pass set aside may not be: read the calendars again)
            self._news_cursor.clear()
            self._news_bases.clear()
            raise
        for unit in kept:  # committed: these states are what the rows now hold
            if unit.held is not None:
                self._held[unit.account.id] = unit.held
                self._hold(unit.account.id, unit.account.firm_id, unit.moved, unit.last_seq)
            else:
                self._held.pop(unit.account.id, None)
            if self._due.get(unit.account.id, 0) <= unit.last_seq:
                self._due.pop(unit.account.id, None)
        report.seconds = time.perf_counter() - started
        return report

    def run_until_idle(self, *, firm_id: str | None = None, max_passes: int = 10_000) -> PassReport:
        total = PassReport()
        for _ in range(max_passes):
            report = self.run_pass(firm_id=firm_id)
            if report.events == 0 and report.accounts == 0 and report.set_aside == 0 and report.stale == 0:
                break
            total.add(report)
        return total

    # ------------------------------------------------------------------ internals
    def _program(self, session: Session, pack_version_id: int) -> CompiledPack:
        return self._packs.by_id(pack_version_id, lambda version_id: session.get(m.RulePackVersion, version_id))

    def _accounts_with_work(self, session: Session, firm_id: str | None, limit: int) -> list[int]:
        """The accounts with pending events of their own or behind their firm's latest clock/news
        event — read in the pass's own transaction (on SQLite: one write lock per pass, not two)."""
        own = select(m.RawEvent.account_id).where(m.RawEvent.status == "pending", m.RawEvent.account_id.is_not(None))
        if firm_id is not None:
            own = own.where(m.RawEvent.firm_id == firm_id)
        ids = set(session.scalars(own.distinct().limit(limit)))
        # accounts whose open positions a stored tick moves: promptly, before the deadline catch-up
        ids.update(self._tick_work(session, firm_id, limit))
        # accounts behind their firm's latest clock/news event that one of those events can change (lazy:
        # the others meet them with their next event) have deadlines to catch up on, oldest position first
        latest = (
            select(m.RawEvent.firm_id, func.max(m.RawEvent.seq).label("seq"))
            .where(m.RawEvent.account_id.is_(None), m.RawEvent.type.in_(DEADLINE_TYPES),
                   m.RawEvent.status != "rejected")
            .group_by(m.RawEvent.firm_id)
        )
        if firm_id is not None:
            latest = latest.where(m.RawEvent.firm_id == firm_id)
        room = min(limit, self.catch_up)
        behind: list = []
        states = m.AccountState
        for firm, seq in session.execute(latest).all():
            query = select(states.account_id, states.last_seq).where(states.firm_id == firm, states.last_seq < seq)
            if self.lazy_clock:
                query = query.where(self._can_change(session, firm))
            behind.extend(session.execute(query.order_by(states.last_seq).limit(room)).all())
        behind.sort(key=lambda row: row.last_seq)
        ids.update(row.account_id for row in behind[:room])
        return sorted(ids)[:limit]

    def _can_change(self, session: Session, firm_id: str):
        """The condition on ``account_states`` that a firm clock or news event stored after the account's
        position can change its state: a clock at or after its ``next_due`` (the firm's latest clock time
        stands for every clock after the position — at worst an account is caught up for nothing), a
        news entry dated at or before its ``news_until``, or due times not known (NULL: written before
        migration 0020)."""
        cursor, high = self._clock_high.get(firm_id, (0, None))
        seq, ts = session.execute(
            select(func.max(m.RawEvent.seq), func.max(m.RawEvent.ts))
            .where(m.RawEvent.firm_id == firm_id, m.RawEvent.type == "clock", m.RawEvent.account_id.is_(None),
                   m.RawEvent.seq > cursor)
        ).one()
        if seq is not None:
            high = ts if high is None or ts > high else high
            self._clock_high[firm_id] = (seq, high)
        states = m.AccountState
        news = exists().where(
            m.RawEvent.firm_id == firm_id, m.RawEvent.type == "news", m.RawEvent.account_id.is_(None),
            m.RawEvent.status != "rejected", m.RawEvent.seq > states.last_seq, m.RawEvent.ts <= states.news_until)
        terms = [states.next_due.is_(None), and_(states.news_until.is_not(None), news)]
        if high is not None:
            terms.append(states.next_due <= high)
        return or_(*terms)

    def _tick_work(self, session: Session, firm_id: str | None, limit: int) -> list[int]:
        """The accounts a stored tick moves and that have not yet met it, oldest tick first.

        New price rows are read once (``_tick_cursor``) into each firm's tick history; each tick makes
        due the accounts the holders index lists for its symbol (positions and conversion pairs). On a
        cold start (a new worker) the index is first built from the stored states, so an account that
        holds a symbol still meets every later tick after a restart."""
        tables = {firm: at for firm, at in session.execute(select(m.SymbolTable.firm_id, m.SymbolTable.updated_at))}
        if self._cold or tables != self._tables_seen:
            # a cold start, or a symbol table changed (which symbols move a position may have): re-index
            self._holders.clear()
            self._holding.clear()
            self._build_holders(session)
            self._tables_seen = tables
            self._cold = False
        self._load_ticks(session)
        for account in [a for a, seq in self._due.items() if a not in self._holding or self._holding[a][2] >= seq]:
            del self._due[account]  # closed its positions, or met the tick already
        due = sorted((seq, account) for account, seq in self._due.items()
                     if firm_id is None or self._holding[account][0] == firm_id)
        return [account for _, account in due[:limit]]

    def _load_ticks(self, session: Session) -> None:
        """Read the price rows stored since the last look into the firms' tick histories (only the ticks
        the engine would accept: not older than their symbol's last), making their holders due."""
        firms = list(session.scalars(select(m.Firm.id)))
        if not firms:
            return
        rows = session.execute(
            select(m.RawEvent.seq, m.RawEvent.firm_id, m.RawEvent.body)
            .where(m.RawEvent.type == "price", m.RawEvent.account_id.is_(None), m.RawEvent.status != "rejected",
                   or_(*(and_(m.RawEvent.firm_id == firm, m.RawEvent.seq > self._tick_cursor.get(firm, 0))
                         for firm in firms)))
            .order_by(m.RawEvent.seq)
        ).all()
        for row in rows:
            self._tick_cursor[row.firm_id] = row.seq
            try:
                event = DECODER.decode(row.body)
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue  # set aside by the pass that meets it
            if type(event) is not Price:
                continue
            seqs, kept = self._ticks.setdefault(row.firm_id, {}).setdefault(event.symbol, ([], []))
            if kept and event.ts < kept[-1].ts:
                continue  # older than the symbol's last tick: the engine ignores it too
            seqs.append(row.seq)
            kept.append(event)
            self._since_prune[row.firm_id] = self._since_prune.get(row.firm_id, 0) + 1
            for account in self._holders.get(row.firm_id, {}).get(event.symbol, ()):
                if self._holding[account][2] < row.seq:
                    self._due[account] = row.seq

        for firm, count in list(self._since_prune.items()):
            if count >= PRUNE_EVERY:
                self._prune(session, firm)

    def _prune(self, session: Session, firm_id: str) -> None:
        """Forget the firm's ticks no account can still need: an account starts from its ``last_seq`` if it
        holds positions, else from just before its first pending event; before the earliest of those,
        only each symbol's last tick is kept (the price as of then)."""
        floors = [last for firm, _, last in self._holding.values() if firm == firm_id]
        pending = session.scalar(select(func.min(m.RawEvent.seq)).where(
            m.RawEvent.firm_id == firm_id, m.RawEvent.status == "pending", m.RawEvent.account_id.is_not(None)))
        if pending is not None:
            floors.append(pending - 1)
        floor = min(floors) if floors else self._tick_cursor.get(firm_id, 0)
        for seqs, kept in self._ticks.get(firm_id, {}).values():
            at = bisect.bisect_right(seqs, floor) - 1  # the symbol's last tick at or before the floor stays
            if at > 0:
                del seqs[:at]
                del kept[:at]
        self._since_prune[firm_id] = 0

    def _build_holders(self, session: Session) -> None:
        """The holders index from the stored states (a cold start): one decode per account with state."""
        rows = session.execute(
            select(m.AccountState.account_id, m.AccountState.firm_id, m.AccountState.last_seq, m.AccountState.state,
                   m.Account.pack_version_id, m.Account.phase)
            .join(m.Account, m.Account.id == m.AccountState.account_id)
        )
        markets: dict[str, Market] = {}
        for row in rows:
            try:
                st = STATE_DECODER.decode(bytes(row.state))
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue  # a state the pass that reads it sets aside; it holds nothing it can show
            if not st.positions:
                continue
            market = markets.get(row.firm_id)
            if market is None:
                market = markets[row.firm_id] = Market()
                market.set_symbols(self._symbols(session, row.firm_id))
            try:
                currency = self._program(session, row.pack_version_id).phase(row.phase).currency
            except (KeyError, ValueError):
                continue
            self._hold(row.account_id, row.firm_id, moved_by(st, currency, market), row.last_seq)

    def _hold(self, account: int, firm_id: str, symbols: tuple[str, ...], last_seq: int) -> None:
        """Record which symbols' ticks move ``account`` now that it reached ``last_seq``; a tick already
        read that moves a symbol it now holds makes it due."""
        before = self._holding.pop(account, None)
        holders = self._holders.setdefault(firm_id, {})
        if before is not None:
            for symbol in before[1]:
                holders.get(symbol, set()).discard(account)
        if not symbols:
            return
        self._holding[account] = (firm_id, symbols, last_seq)
        ticks = self._ticks.get(firm_id, {})
        for symbol in symbols:
            holders.setdefault(symbol, set()).add(account)
            seqs = ticks.get(symbol, ((), ()))[0]
            if seqs and seqs[-1] > last_seq:
                self._due[account] = max(self._due.get(account, 0), seqs[-1])

    def _evaluate(self, session: Session, ids: list[int]) -> _PassPlan:
        """Claim the accounts (PostgreSQL), read their next events and evaluate them: nothing is written."""
        query = select(m.Account.id, m.Account.firm_id, m.Account.external_id, m.Account.platform,
                       m.Account.login, m.Account.trader_id, m.Account.pack_version_id, m.Account.phase,
                       m.Account.status).where(m.Account.id.in_(ids)).order_by(m.Account.id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)  # others' accounts are skipped, not waited for
        accounts = list(session.execute(query))
        if not accounts:
            return _PassPlan([], [])
        by_id = {a.id: a for a in accounts}
        states = {
            row.account_id: row
            for row in session.execute(select(m.AccountState.account_id, m.AccountState.last_seq,
                                              m.AccountState.state)
                                       .where(m.AccountState.account_id.in_(list(by_id))))
        }
        columns = (m.RawEvent.seq, m.RawEvent.event_id, m.RawEvent.source, m.RawEvent.body, m.RawEvent.received_at)
        read_before = dict(self._tick_cursor)
        own = session.execute(
            select(*columns, m.RawEvent.account_id)
            .where(m.RawEvent.account_id.in_(list(by_id)), m.RawEvent.status == "pending")
            .order_by(m.RawEvent.seq)
            .limit(self.batch)
        ).all()
        # Everything up to `cut` is complete for these accounts; later events wait for the next pass.
        cut = own[-1].seq if len(own) == self.batch else None
        low = min((states[i].last_seq if i in states else 0) for i in by_id)
        firms = sorted({a.firm_id for a in accounts})
        shared = select(*columns, m.RawEvent.account_id, m.RawEvent.firm_id).where(
            m.RawEvent.firm_id.in_(firms),
            m.RawEvent.account_id.is_(None),
            m.RawEvent.type.in_(DEADLINE_TYPES),  # ticks come from the worker's tick history (_run_account)
            m.RawEvent.seq > low,
            m.RawEvent.status != "rejected",
        )
        if cut is not None:
            shared = shared.where(m.RawEvent.seq <= cut)
        shared_rows = session.execute(shared.order_by(m.RawEvent.seq)).all()
        # A firm's rows are stored in commit order: every row of firm F up to ``bound[F]`` (its ticks
        # read before this pass, or its rows just read) is in this pass; ticks beyond wait for the next.
        bound = dict(read_before)
        firm_of = {a.id: a.firm_id for a in accounts}
        for row in own:
            bound[firm_of[row.account_id]] = max(bound.get(firm_of[row.account_id], 0), row.seq)
        for row in shared_rows:
            bound[row.firm_id] = max(bound.get(row.firm_id, 0), row.seq)
        self._load_ticks(session)
        horizon = dt.datetime.now(dt.timezone.utc) + self.max_ahead
        firm_events, firm_aside = self._firm_events(shared_rows, horizon)
        by_account: dict[int, list] = {}
        for row in own:
            by_account.setdefault(row.account_id, []).append(row)
        by_firm: dict[str, list] = {}
        for row in shared_rows:
            if row.seq in firm_events:
                by_firm.setdefault(row.firm_id, []).append(row)
        aside_seqs = {row.seq for row, _, _ in firm_aside}
        # The calendar takes only news rows that were judged (set aside or not): those this pass reads and
        # those an account of it has passed already. A later one waits for the pass that reads it.
        judged: dict[str, int] = {}
        for row in shared_rows:
            judged[row.firm_id] = max(judged.get(row.firm_id, 0), row.seq)
        for account in accounts:
            if account.id in states:
                judged[account.firm_id] = max(judged.get(account.firm_id, 0), states[account.id].last_seq)
        calendars = {firm: self._calendar(session, firm, aside_seqs, judged.get(firm, 0)) for firm in firms}
        self._pass_symbols = {}

        work: list[_AccountWork] = []
        for account in accounts:
            state_row = states.get(account.id)
            last_seq = state_row.last_seq if state_row is not None else 0
            mine = [r for r in by_account.get(account.id, ()) if r.seq > last_seq]
            stream = sorted(mine + [r for r in by_firm.get(account.firm_id, ()) if r.seq > last_seq], key=lambda r: r.seq)
            if not stream and account.id not in self._due:
                continue
            unit = _AccountWork(AccountRef.of(account), mine, stream[-1].seq if stream else last_seq,
                                state_row is not None,
                                seen=None if state_row is None else (state_row.last_seq, bytes(state_row.state)),
                                program_key=(account.pack_version_id, account.phase))
            try:
                upto = bound.get(account.firm_id, 0) if cut is None else min(cut, bound.get(account.firm_id, 0))
                self._run_account(session, account, state_row, stream, firm_events, calendars, horizon, unit, upto)
            except SYSTEMIC_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - this account's events are set aside; the others go on
                unit.failure = f"not applied: the events of {account.external_id} in this pass could not be " \
                               f"evaluated ({error_text(exc)}); nothing of them was applied"
            work.append(unit)
        return _PassPlan(work, firm_aside)

    def _commit(self, session: Session, plan: _PassPlan, report: PassReport, *, verify: bool) -> list[_AccountWork]:
        """Write what ``plan`` evaluated — decisions, states, statuses, outbox, audit, the events' status:
        one group commit. With ``verify`` (the plan was read in another transaction) an account whose
        state, position, pack version or phase changed meanwhile is left out, to be evaluated again.
        Returns the accounts whose outcome this transaction holds."""
        work = plan.work
        if verify and work:
            ids = [unit.account.id for unit in work]
            stored = {row.account_id: (row.last_seq, bytes(row.state)) for row in session.execute(
                select(m.AccountState.account_id, m.AccountState.last_seq, m.AccountState.state)
                .where(m.AccountState.account_id.in_(ids)))}
            programs = {row.id: (row.pack_version_id, row.phase) for row in session.execute(
                select(m.Account.id, m.Account.pack_version_id, m.Account.phase).where(m.Account.id.in_(ids)))}
            current = [unit for unit in work
                       if stored.get(unit.account.id) == unit.seen and programs.get(unit.account.id) == unit.program_key]
            report.stale += len(work) - len(current)
            kept = {id(unit) for unit in current}
            for unit in work:  # the kept engine state of a stale account moved on: read it again next pass
                if id(unit) not in kept:
                    self._held.pop(unit.account.id, None)
            work = current
        if plan.firm_aside:
            _set_rows_aside(session, plan.firm_aside)
        self._write(session, work, report)
        return work

    def _firm_events(self, rows: Sequence, horizon: dt.datetime) -> tuple[dict[int, object], list[tuple]]:
        """The firm-wide events of the pass decoded once, by seq, and those set aside — ``(row, firm id,
        reason)``, once for the whole firm: one that no longer decodes (stored by an older version) or
        lies in the future."""
        from .ingest import ahead_of_clock

        decoded: dict[int, object] = {}
        aside: list[tuple] = []
        for row in rows:
            try:
                event = DECODER.decode(row.body)
            except (msgspec.ValidationError, msgspec.DecodeError):
                aside.append((row, f"malformed: {_decode_reason(row.body)}"))
                continue
            problem = ahead_of_clock(event, horizon, self.max_ahead)
            if problem is not None:
                aside.append((row, problem))
                continue
            decoded[row.seq] = event
        return decoded, [(row, row.firm_id, reason) for row, reason in aside]

    def _run_account(self, session: Session, account, state_row, stream: list, firm_events: dict,
                     calendars: dict, horizon: dt.datetime, unit: _AccountWork, upto: int = 0) -> None:
        """Evaluate one account's stream (pure but for compiling its pack); fills ``unit``."""
        from .ingest import ahead_of_clock

        program = self._program(session, account.pack_version_id).phase(account.phase)
        engine = Engine(
            lambda external, _p=program, _a=account.external_id: _p if external == _a else None,
            dedupe=False,  # raw_events already holds each (source, id) once; ids repeat across sources
        )
        last_seq = state_row.last_seq if state_row is not None else 0
        quiet = not any(row.account_id is None and type(firm_events.get(row.seq)) is News for row in stream)
        engine.market = self._market_for(account.firm_id, calendars[account.firm_id], last_seq,
                                         self._ticks.get(account.firm_id, {}), quiet)
        if account.firm_id not in self._pass_symbols:  # read once per firm and pass, not once per account
            self._pass_symbols[account.firm_id] = self._symbols(session, account.firm_id)
        engine.set_symbols(self._pass_symbols[account.firm_id])  # positions are marked to market with it
        engine.watch_lows(near_breach.zone_of(session, account.firm_id))  # the batch's worst point, for the alerts
        program_key = (account.pack_version_id, account.phase)
        stored: bytes | None = None
        held = self._held.pop(account.id, None)  # back only when this pass commits (run_pass)
        if state_row is not None:
            stored = bytes(state_row.state)
            if held is None or held.last_seq != last_seq or held.program_key != program_key or held.stored != stored:
                held = _Held(stored, last_seq, program_key, STATE_DECODER.decode(stored))
            engine.adopt(held.state, program)
        # Ticks reach the account only for the symbols that move its positions — those it holds and
        # those its own events of the pass trade: the engine would pass over the others anyway.
        moves = engine.market.moves
        wanted = set(engine.held.get(account.external_id, ()))
        own_events: dict[int, object] = {}
        for row in stream:
            if row.account_id is not None:
                try:
                    own_events[row.seq] = event = DECODER.decode(row.body)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    continue
                symbol = getattr(event, "symbol", None)
                if symbol:
                    wanted.update(moves(symbol, program.currency))
        history = self._ticks.get(account.firm_id, {})
        start = last_seq
        if own_events and not engine.held.get(account.external_id):
            # holding nothing, the account is moved by no tick before its first own event: it starts
            # there, with the prices as of then, instead of meeting every tick since it last moved
            start = max(last_seq, min(own_events) - 1)
            _prices_at(engine.market, history, start)
        ticks: list[_TickRow] = []
        for symbol in wanted:
            seqs, kept = history.get(symbol, ((), ()))
            first = bisect.bisect_right(seqs, start)
            end = bisect.bisect_right(seqs, upto)  # the ticks this pass holds complete (see _evaluate)
            ticks.extend(_TickRow(seq, event) for seq, event in zip(seqs[first:end], kept[first:end]))
        if ticks:
            stream = sorted(stream + ticks, key=lambda r: r.seq)
            unit.last_seq = max(unit.last_seq, stream[-1].seq)
        events, fed = [], []
        for row in stream:
            if type(row) is _TickRow:
                event = row.event
            else:
                event = firm_events.get(row.seq) if row.account_id is None else own_events.get(row.seq)
            if row.account_id is not None:
                if event is None:
                    unit.rejected.append((row, f"malformed: {_decode_reason(row.body)}"))
                    continue
                problem = ahead_of_clock(event, horizon, self.max_ahead)
                if problem is not None:
                    unit.rejected.append((row, problem))
                    continue
            events.append(event)
            fed.append(row)
        seq_of = {row.event_id: row.seq for row in fed}
        sampler = Sampler(engine, account.external_id, program)  # the chart's points, as the engine goes
        if self.lazy_clock:  # "lines": positions in `fed`
            decisions = feed_due_clocks(engine, account.external_id, events, tap=sampler.watch)
        else:
            decisions = engine.feed(sampler.watch(events), lines=range(len(events)))
        refused: set[int] = set()
        for problem in engine.rejected:
            row = fed[problem.line]
            if row.account_id is not None:
                refused.add(row.seq)
                reason = f"{problem.kind}: {problem.reason}"
                unit.rejected.append((row, f"{reason}; {RESEND}" if problem.kind == "out_of_order" else reason))
            elif problem.kind == "internal" and type(row) is not _TickRow:  # a firm-wide event that failed for
                # this account only (a tick that failed for it is reported by the engine, and met again by none)
                unit.firm_problems.append((row, f"{problem.kind}: {problem.reason}"))
        st = engine.states.get(account.external_id)
        if st is None:  # only global events so far: nothing to keep yet
            st = program.new_state(account.external_id)
            st.last_ts = events[-1].ts if events else None
        problem = state_problem(st)
        if problem is not None:
            unit.failure = f"not applied: {problem}; nothing of the events of {account.external_id} in this " \
                           "pass was applied"
            return
        unit.outcome = outcome_for(
            unit.account, st, program, unit.last_seq, [(d, seq_of.get(d.event_id)) for d in decisions],
            events[-1].ts if events else (st.last_ts or dt.datetime.now(dt.timezone.utc)),
            trades=[(ev, row.seq) for ev, row in zip(events, fed)
                    if row.account_id is not None and row.seq not in refused and isinstance(ev, PROJECTED_EVENTS)],
        )
        unit.outcome.lows = engine.drain_lows().get(account.external_id, []) if engine.lows is not None else None
        unit.outcome.points = sampler.finish(decisions, (ev.id for ev, row in zip(events, fed) if row.seq in refused))
        unit.outcome.encoded = STATE_ENCODER.encode(st)
        unit.outcome.stored = stored
        unit.held = _Held(unit.outcome.encoded, unit.last_seq, program_key, st)
        unit.moved = engine.held.get(account.external_id, ())
        fed_seqs = {row.seq for row in fed}
        unit.applied = [row.seq for row in unit.mine if row.seq in fed_seqs and row.seq not in refused]
        unit.events = len(unit.mine)
        unit.decisions = len(decisions)

    def _write(self, session: Session, work: list[_AccountWork], report: PassReport) -> None:
        """Write the evaluated accounts' outcomes, isolating any that the database refuses; set aside the
        accounts that failed. Only what commits is counted in ``report``."""
        evaluated = [unit for unit in work if unit.failure is None]
        for unit, problem in write_isolated(session, evaluated, self._record, account_of=lambda u: u.account):
            unit.failure = f"not applied: the events of {unit.account.external_id} in this pass could not be " \
                           f"stored ({problem}); nothing of them was applied"
        for unit in work:
            if unit.failure is not None:
                unit.held = None  # its engine may have moved on; the row keeps the state: read it again
                log.warning("evaluation set aside %d event(s) of account %s (firm %s): %s", len(unit.mine),
                            unit.account.external_id, unit.account.firm_id, unit.failure)
                _set_account_aside(session, unit)
                report.set_aside += 1
                report.rejected += len(unit.mine)
                continue
            report.accounts += 1
            report.events += unit.events
            report.decisions += unit.decisions
            report.rejected += len(unit.rejected)
            for decision, _ in unit.outcome.decisions:
                report.by_kind[decision.kind] = report.by_kind.get(decision.kind, 0) + 1

    def _calendar(self, session: Session, firm_id: str, aside: set[int] = frozenset(),
                  up_to: int | None = None) -> list[tuple[int, NewsEntry]]:
        """The firm's news calendar in stored order (seq, entry), kept by the worker and extended with
        what the firm stored since its last read (``_news_cursor``, per firm: a firm's rows are stored
        in commit order). Only what the engine meets is in it: not a row set aside (``rejected``, or
        ``aside`` — being set aside by this pass), not a row that no longer decodes; ``up_to``: read no
        further (the rows judged so far)."""
        calendar = self._calendars.setdefault(firm_id, [])
        after = self._news_cursor.get(firm_id, 0)
        query = (select(m.RawEvent.seq, m.RawEvent.body)
                 .where(m.RawEvent.firm_id == firm_id, m.RawEvent.type == "news", m.RawEvent.account_id.is_(None),
                        m.RawEvent.seq > after, m.RawEvent.status != "rejected")
                 .order_by(m.RawEvent.seq))
        if up_to is not None:
            query = query.where(m.RawEvent.seq <= up_to)
        rows = session.execute(query).all()
        for seq, body in rows:
            self._news_cursor[firm_id] = seq
            if seq in aside:
                continue
            try:
                event = DECODER.decode(body)
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue  # set aside by the pass that meets it
            if type(event) is News:
                calendar.append((seq, NewsEntry.from_event(event)))
        return calendar

    def _market_for(self, firm_id: str, calendar: list[tuple[int, NewsEntry]], up_to_seq: int,
                    ticks: dict[str, tuple[list[int], list[Price]]], shared: bool) -> Market:
        """:func:`_market_at`, with the news part built once per firm and number of entries the account
        knows (almost every account knows them all) instead of once per account and pass. ``shared``:
        the account's stream has no news event (nothing adds to the calendar), so the lists are shared."""
        known = bisect.bisect_right(calendar, up_to_seq, key=_entry_seq)
        bases = self._news_bases.setdefault(firm_id, {})
        base = bases.get(known)
        if base is None:
            if len(bases) >= 8:
                bases.clear()
            market = _market_at(calendar[:known], up_to_seq)
            base = bases[known] = (market.news, market.news_times, market.news_keys)
        news, times, keys = base
        market = Market(news=news, news_times=times, news_keys=keys) if shared else \
            Market(news=list(news), news_times=list(times), news_keys=set(keys))
        _prices_at(market, ticks, up_to_seq)
        return market

    def _symbols(self, session: Session, firm_id: str) -> SymbolTable | None:
        """The firm's symbol table, parsed once per stored version."""
        row = session.get(m.SymbolTable, firm_id)
        if row is None:
            return None
        cached = self._symbol_tables.get(firm_id)
        if cached is None or cached[0] != row.body:
            cached = self._symbol_tables[firm_id] = (row.body, parse_symbol_table(row.body))
        return cached[1]

    def _record(self, session: Session, units: list[_AccountWork]) -> None:
        """Everything the accounts of ``units`` commit, written set-based (see :func:`write_outcomes`)."""
        _write_units(session, units)


def _decode_reason(body: bytes) -> str:
    """Why a stored line no longer decodes: the field and the problem, as ingestion would answer."""
    try:
        rejected = decode_lines(bytes(body).replace(b"\n", b" "))[2]
    except Exception as exc:  # noqa: BLE001
        return f"could not be decoded: {type(exc).__name__}"
    return clean_reason(rejected[0].reason) if rejected else "not a single JSON object"


def _write_units(session: Session, units: list[_AccountWork]) -> None:
    """Everything the accounts of ``units`` commit: outcomes, applied and refused rows, quarantine."""
    write_outcomes(session, [unit.outcome for unit in units])
    applied = [seq for unit in units for seq in unit.applied]
    for start in range(0, len(applied), 1000):
        session.execute(
            update(m.RawEvent)
            .where(m.RawEvent.seq.in_(applied[start : start + 1000]))
            .values(status="applied")
            .execution_options(synchronize_session=False)
        )
    aside = [(row, unit.account.firm_id, reason) for unit in units for row, reason in unit.rejected]
    if aside:
        _set_rows_aside(session, aside)
    problems = {(row.seq, reason): (row, unit.account.firm_id, reason)
                for unit in units for row, reason in unit.firm_problems}
    if problems:
        quarantine_rows(session, list(problems.values()))


def _set_rows_aside(session: Session, rows: list[tuple]) -> None:
    """Mark stored rows ``rejected`` with their reason and keep each line in the quarantine."""
    session.execute(
        update(m.RawEvent.__table__).where(m.RawEvent.__table__.c.seq == bindparam("row_seq"))
        .values(status="rejected", reason=bindparam("row_reason")),
        [{"row_seq": row.seq, "row_reason": clean_reason(reason)} for row, _, reason in rows],
    )
    quarantine_rows(session, rows)


def _set_account_aside(session: Session, unit: _AccountWork) -> None:
    """Set every own row of the pass aside (those refused alone keep their own reason) and move the
    account past the pass's firm-wide events, keeping its state: the next pass does not meet them again."""
    own_reason = dict((row.seq, reason) for row, reason in unit.rejected)
    rows = [(row, unit.account.firm_id, own_reason.get(row.seq, unit.failure)) for row in unit.mine]
    try:
        with session.begin_nested():
            if rows:
                _set_rows_aside(session, rows)
            if unit.has_state:
                session.execute(update(m.AccountState).where(m.AccountState.account_id == unit.account.id)
                                .values(last_seq=unit.last_seq).execution_options(synchronize_session=False))
    except SYSTEMIC_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a reason the quarantine could not hold: the short form
        log.error("could not quarantine the events of account %s: %s", unit.account.external_id, error_text(exc))
        if rows:
            session.execute(update(m.RawEvent).where(m.RawEvent.seq.in_([row.seq for row, _, _ in rows]))
                            .values(status="rejected", reason="not applied: could not be evaluated or stored")
                            .execution_options(synchronize_session=False))
        if unit.has_state:
            session.execute(update(m.AccountState).where(m.AccountState.account_id == unit.account.id)
                            .values(last_seq=unit.last_seq).execution_options(synchronize_session=False))


class _TickRow:
    """A tick of the worker's history in an account's stream, where the stored rows are."""

    __slots__ = ("seq", "event")
    account_id = None

    def __init__(self, seq: int, event: Price) -> None:
        self.seq = seq
        self.event = event

    @property
    def event_id(self) -> str:
        return self.event.id


def _entry_seq(entry: tuple[int, NewsEntry]) -> int:
    return entry[0]


def feed_due_clocks(engine: Engine, account: str, events: list,
                    tap: Callable[[list], Iterable] | None = None) -> list[Decision]:
    """``engine.feed(events)`` for one account's stream, leaving out the firm clocks that would change
    nothing: exactly the same decisions and state, without a step per clock when an account meets many.

    The engine applies a firm clock to the account only when the clock is not older than the last firm
    clock it accepted (else it refuses it as out of order) and the account is due — its
    ``next_deadline`` at or before the clock's time and its ``last_ts`` before it (``Engine._clock``).
    Within a run of consecutive firm clocks the state changes only at an applied clock, so the next
    one to apply is found by bisection among the run's in-order clocks; it is fed alone, and the search
    goes on from the state it leaves. Rejections name each event's position in ``events``. ``tap``: the
    events are fed through it (an iterator over them: :meth:`propcrm.services.equity_points.Sampler.watch`)."""
    if tap is None:
        tap = _same
    out: list[Decision] = []
    pending: list = []
    lines: list[int] = []
    latest: dt.datetime | None = None  # the latest firm clock time so far: an older one is refused
    i, n = 0, len(events)
    states = engine.states
    while i < n:
        ev = events[i]
        if type(ev) is not Clock or ev.account is not None:
            pending.append(ev)
            lines.append(i)
            i += 1
            continue
        times: list[dt.datetime] = []
        at: list[int] = []
        while i < n and type(events[i]) is Clock and events[i].account is None:
            ts = events[i].ts
            if latest is None or ts >= latest:
                latest = ts
                times.append(ts)
                at.append(i)
            i += 1
        if pending:
            out.extend(engine.feed(tap(pending), lines=lines))
            pending, lines = [], []
        k = 0
        while k < len(times):
            st = states.get(account)
            if st is None:
                break  # nothing of the account's own yet: a clock has nothing to act on
            k = bisect.bisect_left(times, st.next_deadline, k)
            if st.last_ts is not None:
                k = max(k, bisect.bisect_right(times, st.last_ts, k))
            if k >= len(times):
                break
            out.extend(engine.feed(tap([events[at[k]]]), lines=[at[k]]))
            k += 1
    if pending:
        out.extend(engine.feed(tap(pending), lines=lines))
    return out


def _same(events: list) -> list:
    return events


def _market_at(calendar: list[tuple[int, NewsEntry]], up_to_seq: int,
               ticks: dict[str, tuple[list[int], list[Price]]] | None = None) -> Market:
    """The news calendar and each symbol's last price as the account knew them after event
    ``up_to_seq`` (exactly as in replay)."""
    market = Market()
    for seq, entry in calendar:
        if seq > up_to_seq:
            break
        market.add_news(entry)
    _prices_at(market, ticks or {}, up_to_seq)
    return market


def _prices_at(market: Market, ticks: dict[str, tuple[list[int], list[Price]]], up_to_seq: int) -> None:
    """Each symbol's last accepted tick up to event ``up_to_seq`` as ``market``'s prices."""
    for symbol, (seqs, kept) in ticks.items():
        at = bisect.bisect_right(seqs, up_to_seq)
        if at:
            last = kept[at - 1]
            market.prices[symbol] = Tick(last.ts, last.bid, last.ask, last.id)
        else:
            market.prices.pop(symbol, None)


def pending_counts(session: Session, firm_id: str) -> dict[str, int]:
    rows = session.execute(
        select(m.RawEvent.status, func.count()).where(m.RawEvent.firm_id == firm_id).group_by(m.RawEvent.status)
    )
    return {status: n for status, n in rows}


__all__ = ["AccountOutcome", "AccountRef", "EvaluationWorker", "PassReport", "SYSTEMIC_ERRORS", "WriteReport",
           "firm_wide", "pending_counts", "upsert_states", "write_isolated", "write_outcomes"]
