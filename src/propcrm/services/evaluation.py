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

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

import msgspec
from sqlalchemy import DateTime, bindparam, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy import text as text_sql
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ..adapters.db import models as m
from ..domain.decisions import ENCODER as DECISION_ENCODER
from ..domain.decisions import Decision
from ..domain.events import DECODER, decode_lines
from ..domain.market import Market, NewsEntry
from ..domain.program import CompiledPack, compile_pack
from ..domain.state import AccountState
from ..engine.runner import Engine
from . import audit
from .catalog import pack_of

log = logging.getLogger("propcrm.evaluation")

GLOBAL_TYPES = ("clock", "news")
HELD = ("suspended", "closed")  # statuses set by staff, which evaluation never overrides
STATE_DECODER = msgspec.msgpack.Decoder(AccountState)
STATE_ENCODER = msgspec.msgpack.Encoder()
#: Failures of the database itself, not of one account's data: the whole pass (batch) fails and is
#: retried, rather than setting anything aside.
SYSTEMIC_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.ProgrammingError, sa_exc.InternalError,
                   sa_exc.DisconnectionError, sa_exc.PendingRollbackError, sa_exc.TimeoutError)
MAX_REASON = 2000
RESEND = "a corrected event may be sent again with the same id"


@dataclass
class PassReport:
    accounts: int = 0
    events: int = 0
    decisions: int = 0
    rejected: int = 0
    set_aside: int = 0  # accounts whose events of the pass were set aside (not evaluated or not stored)
    seconds: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)


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


class EvaluationWorker:
    def __init__(self, session_factory: sessionmaker[Session], *, batch: int = 5000,
                 max_ahead: dt.timedelta | None = None) -> None:
        from .ingest import max_ahead_from_env

        self.sessions = session_factory
        self.batch = batch
        self.max_ahead = max_ahead_from_env() if max_ahead is None else max_ahead
        self._packs: dict[int, CompiledPack] = {}
        self._calendars: dict[str, list[tuple[int, NewsEntry]]] = {}

    # ------------------------------------------------------------------ public
    def run_pass(self, *, firm_id: str | None = None, max_accounts: int = 2000) -> PassReport:
        """Evaluate the next batch of work — up to ``max_accounts`` accounts and ``batch`` of their
        events — in one transaction."""
        started = time.perf_counter()
        report = PassReport()
        ids = self._accounts_with_work(firm_id, max_accounts)
        if ids:
            with self.sessions.begin() as session:
                self._evaluate(session, ids, report)
        report.seconds = time.perf_counter() - started
        return report

    def run_until_idle(self, *, firm_id: str | None = None, max_passes: int = 10_000) -> PassReport:
        total = PassReport()
        for _ in range(max_passes):
            report = self.run_pass(firm_id=firm_id)
            if report.events == 0 and report.accounts == 0 and report.set_aside == 0:
                break
            total.accounts += report.accounts
            total.events += report.events
            total.decisions += report.decisions
            total.rejected += report.rejected
            total.set_aside += report.set_aside
            total.seconds += report.seconds
            for kind, n in report.by_kind.items():
                total.by_kind[kind] = total.by_kind.get(kind, 0) + n
        return total

    # ------------------------------------------------------------------ internals
    def _program(self, session: Session, pack_version_id: int) -> CompiledPack:
        compiled = self._packs.get(pack_version_id)
        if compiled is None:
            row = session.get(m.RulePackVersion, pack_version_id)
            assert row is not None
            compiled = self._packs[pack_version_id] = compile_pack(pack_of(row))
        return compiled

    def _accounts_with_work(self, firm_id: str | None, limit: int) -> list[int]:
        with self.sessions() as session:
            own = select(m.RawEvent.account_id).where(
                m.RawEvent.status == "pending", m.RawEvent.account_id.is_not(None)
            )
            if firm_id is not None:
                own = own.where(m.RawEvent.firm_id == firm_id)
            ids = set(session.scalars(own.distinct().limit(limit)))
            # accounts behind their firm's latest clock/news event have deadlines to catch up on
            latest = (
                select(m.RawEvent.firm_id, func.max(m.RawEvent.seq).label("seq"))
                .where(m.RawEvent.account_id.is_(None), m.RawEvent.type.in_(GLOBAL_TYPES),
                       m.RawEvent.status != "rejected")
                .group_by(m.RawEvent.firm_id)
                .subquery()
            )
            behind = (
                select(m.AccountState.account_id)
                .join(latest, latest.c.firm_id == m.AccountState.firm_id)
                .where(m.AccountState.last_seq < latest.c.seq)
            )
            if firm_id is not None:
                behind = behind.where(m.AccountState.firm_id == firm_id)
            ids.update(session.scalars(behind.limit(limit)))
            return sorted(ids)[:limit]

    def _evaluate(self, session: Session, ids: list[int], report: PassReport) -> None:
        """One transaction: claim the accounts, read their next events, evaluate, write everything."""
        query = select(m.Account).where(m.Account.id.in_(ids)).order_by(m.Account.id)
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)  # others' accounts are skipped, not waited for
        accounts = list(session.scalars(query))
        if not accounts:
            return
        by_id = {a.id: a for a in accounts}
        states = {
            row.account_id: row
            for row in session.scalars(select(m.AccountState).where(m.AccountState.account_id.in_(list(by_id))))
        }
        columns = (m.RawEvent.seq, m.RawEvent.event_id, m.RawEvent.source, m.RawEvent.body, m.RawEvent.received_at)
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
            m.RawEvent.type.in_(GLOBAL_TYPES),
            m.RawEvent.seq > low,
            m.RawEvent.status != "rejected",
        )
        if cut is not None:
            shared = shared.where(m.RawEvent.seq <= cut)
        shared_rows = session.execute(shared.order_by(m.RawEvent.seq)).all()
        horizon = dt.datetime.now(dt.timezone.utc) + self.max_ahead
        firm_events = self._firm_events(session, shared_rows, horizon)
        by_account: dict[int, list] = {}
        for row in own:
            by_account.setdefault(row.account_id, []).append(row)
        by_firm: dict[str, list] = {}
        for row in shared_rows:
            if row.seq in firm_events:
                by_firm.setdefault(row.firm_id, []).append(row)
        calendars = {firm: self._calendar(session, firm) for firm in firms}

        work: list[_AccountWork] = []
        for account in accounts:
            state_row = states.get(account.id)
            last_seq = state_row.last_seq if state_row is not None else 0
            mine = [r for r in by_account.get(account.id, ()) if r.seq > last_seq]
            stream = sorted(mine + [r for r in by_firm.get(account.firm_id, ()) if r.seq > last_seq], key=lambda r: r.seq)
            if not stream:
                continue
            unit = _AccountWork(AccountRef.of(account), mine, stream[-1].seq, state_row is not None)
            try:
                self._run_account(session, account, state_row, stream, firm_events, calendars, horizon, unit)
            except SYSTEMIC_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - this account's events are set aside; the others go on
                unit.failure = f"not applied: the events of {account.external_id} in this pass could not be " \
                               f"evaluated ({_error_text(exc)}); nothing of them was applied"
            work.append(unit)
        self._write(session, work, report)

    def _firm_events(self, session: Session, rows: Sequence, horizon: dt.datetime) -> dict[int, object]:
        """The firm-wide events of the pass decoded once, by seq. One that no longer decodes (stored by
        an older version) or lies in the future is set aside here, once for the whole firm."""
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
        if aside:
            _set_rows_aside(session, [(row, row.firm_id, reason) for row, reason in aside])
        return decoded

    def _run_account(self, session: Session, account: m.Account, state_row, stream: list, firm_events: dict,
                     calendars: dict, horizon: dt.datetime, unit: _AccountWork) -> None:
        """Evaluate one account's stream (pure but for compiling its pack); fills ``unit``."""
        from .ingest import ahead_of_clock

        program = self._program(session, account.pack_version_id).phase(account.phase)
        engine = Engine(
            lambda external, _p=program, _a=account.external_id: _p if external == _a else None,
            dedupe=False,  # raw_events already holds each (source, id) once; ids repeat across sources
        )
        last_seq = state_row.last_seq if state_row is not None else 0
        engine.market = _market_at(calendars[account.firm_id], last_seq)
        if state_row is not None:
            engine.states[account.external_id] = STATE_DECODER.decode(state_row.state)
            engine.programs[account.external_id] = program
        events, fed = [], []
        for row in stream:
            event = firm_events.get(row.seq) if row.account_id is None else None
            if row.account_id is not None:
                try:
                    event = DECODER.decode(row.body)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    unit.rejected.append((row, f"malformed: {_decode_reason(row.body)}"))
                    continue
                problem = ahead_of_clock(event, horizon, self.max_ahead)
                if problem is not None:
                    unit.rejected.append((row, problem))
                    continue
            events.append(event)
            fed.append(row)
        seq_of = {row.event_id: row.seq for row in fed}
        decisions = engine.feed(events, lines=range(len(events)))  # "lines": positions in `fed`
        refused: set[int] = set()
        for problem in engine.rejected:
            row = fed[problem.line]
            if row.account_id is not None:
                refused.add(row.seq)
                reason = f"{problem.kind}: {problem.reason}"
                unit.rejected.append((row, f"{reason}; {RESEND}" if problem.kind == "out_of_order" else reason))
            elif problem.kind == "internal":  # a firm-wide event that failed for this account only
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
        unit.outcome = AccountOutcome(
            account=unit.account, state=st, last_seq=unit.last_seq,
            decisions=[(d, seq_of.get(d.event_id)) for d in decisions],
            status=None if account.status in HELD else _account_status(st.status, program),
            status_ts=events[-1].ts if events else (st.last_ts or dt.datetime.now(dt.timezone.utc)),
        )
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

    def _calendar(self, session: Session, firm_id: str) -> list[tuple[int, NewsEntry]]:
        """The firm's news calendar in stored order (seq, entry), kept by the worker and extended with
        what was stored since (news is append-only, in seq order)."""
        calendar = self._calendars.setdefault(firm_id, [])
        after = calendar[-1][0] if calendar else 0
        rows = session.execute(
            select(m.RawEvent.seq, m.RawEvent.body)
            .where(m.RawEvent.firm_id == firm_id, m.RawEvent.type == "news", m.RawEvent.seq > after)
            .order_by(m.RawEvent.seq)
        )
        calendar.extend((seq, NewsEntry.from_event(DECODER.decode(body))) for seq, body in rows)
        return calendar

    def _record(self, session: Session, units: list[_AccountWork]) -> None:
        """Everything the accounts of ``units`` commit, written set-based (see :func:`write_outcomes`)."""
        _write_units(session, units)


#: An account's balance, equity and levels stay below 10^15 in magnitude: every figure stored beside the
#: state (distances, cents, percentages) then fits its column. Events are bounded at 10^12 each, but a
#: long enough run of them could add up past any bound; the events that would take an account there
#: are set aside instead of making its state unstorable.
STATE_LIMIT = Decimal(10) ** 15


def state_problem(st: AccountState) -> str | None:
    """Why ``st`` may not be stored (a figure at or beyond :data:`STATE_LIMIT`), or ``None``."""
    limit = STATE_LIMIT
    if -limit < st.balance < limit and -limit < st.equity < limit and all(
            -limit < level < limit for level in st.levels if level.is_finite()):
        return None
    for name, value in (("balance", st.balance), ("equity", st.equity), *(("a level", v) for v in st.levels)):
        if value.is_finite() and not -limit < value < limit:
            return f"the account's {name} would reach {value:.2E}, beyond what an account can hold (10^15)"
    return None  # pragma: no cover - one of them is out of bounds


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return _clean_reason(text)[:500]


def _clean_reason(text: str) -> str:
    return text.replace("\x00", "\\u0000")[:MAX_REASON]


def _decode_reason(body: bytes) -> str:
    """Why a stored line no longer decodes: the field and the problem, as ingestion would answer."""
    try:
        rejected = decode_lines(bytes(body).replace(b"\n", b" "))[2]
    except Exception as exc:  # noqa: BLE001
        return f"could not be decoded: {type(exc).__name__}"
    return _clean_reason(rejected[0].reason) if rejected else "not a single JSON object"


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
        _quarantine(session, list(problems.values()))


def _set_rows_aside(session: Session, rows: list[tuple]) -> None:
    """Mark stored rows ``rejected`` with their reason and keep each line in the quarantine."""
    session.execute(
        update(m.RawEvent.__table__).where(m.RawEvent.__table__.c.seq == bindparam("row_seq"))
        .values(status="rejected", reason=bindparam("row_reason")),
        [{"row_seq": row.seq, "row_reason": _clean_reason(reason)} for row, _, reason in rows],
    )
    _quarantine(session, rows)


def _quarantine(session: Session, rows: list[tuple]) -> None:
    session.execute(insert(m.Quarantine.__table__), [
        {"firm_id": firm_id, "source": row.source, "line": None, "body": bytes(row.body),
         "reason": _clean_reason(reason), "received_at": row.received_at, "resolved_at": None}
        for row, firm_id, reason in rows])


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
        log.error("could not quarantine the events of account %s: %s", unit.account.external_id, _error_text(exc))
        if rows:
            session.execute(update(m.RawEvent).where(m.RawEvent.seq.in_([row.seq for row, _, _ in rows]))
                            .values(status="rejected", reason="not applied: could not be evaluated or stored")
                            .execution_options(synchronize_session=False))
        if unit.has_state:
            session.execute(update(m.AccountState).where(m.AccountState.account_id == unit.account.id)
                            .values(last_seq=unit.last_seq).execution_options(synchronize_session=False))


Unit = TypeVar("Unit")


def write_isolated(session: Session, units: list[Unit], write: Callable[[Session, list[Unit]], None], *,
                   account_of: Callable[[Unit], AccountRef]) -> list[tuple[Unit, str]]:
    """Write ``units`` (one account each) with ``write`` inside the caller's transaction, isolating the
    ones the write fails for: all at once in a savepoint; if that fails with anything but a
    :data:`SYSTEMIC_ERRORS` failure, each half again in its own savepoint, down to single units.
    Returns the units that could not be written, with the error; every other unit is written.

    A bad unit therefore costs about 2·log2(n) extra writes of shrinking batches, and n good units still
    cost one write. The in-memory account statuses a failed write changed are put back."""
    failed: list[tuple[Unit, str]] = []

    def attempt(part: list[Unit]) -> None:
        statuses = [(ref, ref.status) for ref in map(account_of, part)]
        try:
            with session.begin_nested():
                write(session, part)
            return
        except SYSTEMIC_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - narrowed down below
            for ref, status in statuses:
                ref.status = status
            if len(part) == 1:
                failed.append((part[0], _error_text(exc)))
                return
        middle = len(part) // 2
        attempt(part[:middle])
        attempt(part[middle:])

    if units:
        attempt(list(units))
    return failed


# ---------------------------------------------------------------------------------------------------
# The set-based write path, shared by this worker and the partitioned NATS workers (propcrm.cluster)


@dataclass
class AccountRef:
    """What the write path needs to know about an account (an ORM row or a worker's cached copy)."""

    id: int
    firm_id: str
    external_id: str
    platform: str
    login: str
    trader_id: int | None
    pack_version_id: int
    phase: str
    status: str

    @classmethod
    def of(cls, row) -> AccountRef:
        return cls(row.id, row.firm_id, row.external_id, row.platform, row.login, row.trader_id,
                   row.pack_version_id, row.phase, row.status)


@dataclass
class AccountOutcome:
    """One account's result of a batch: its new state and position, its decisions (each with the
    stored event it came from, when there is one), and the status the engine gives it (``None``:
    leave the status alone)."""

    account: AccountRef
    state: AccountState
    last_seq: int
    decisions: list[tuple[Decision, int | None]]
    status: str | None
    status_ts: dt.datetime


@dataclass
class WriteReport:
    states: int = 0
    decisions: int = 0
    outbox: int = 0
    audit: int = 0
    status_changes: int = 0


def write_outcomes(session: Session, outcomes: list[AccountOutcome], *, states: bool = True) -> WriteReport:
    """Write a batch's outcomes inside the caller's transaction, a statement per table, not per row.

    States are upserted (``INSERT … ON CONFLICT (account_id) DO UPDATE``); decisions are inserted in
    one multi-row statement that returns their ids (the outbox dedupe keys and audit entries name
    them); outbox rows in one more; accounts whose status the engine changes are re-read (locked on
    PostgreSQL) so that a status staff set meanwhile (``suspended``, ``closed``) is never overwritten;
    and every audit entry of the batch — one per decision, status change and opened account, in
    that order per account — is appended with one lock and one tail read
    (:func:`propcrm.services.audit.append_many`), so the chain verifies exactly as before.
    """
    report = WriteReport()
    if not outcomes:
        return report
    now = dt.datetime.now(dt.timezone.utc)
    if states:  # (the partitioned workers write states in periodic snapshots: upsert_states)
        upsert_states(session, outcomes, now)
        report.states = len(outcomes)

    decision_rows = []
    owners: list[tuple[AccountRef, Decision]] = []
    for outcome in outcomes:
        account = outcome.account
        for decision, event_seq in outcome.decisions:
            decision_rows.append({
                "firm_id": account.firm_id, "account_id": account.id, "event_seq": event_seq,
                "event_id": decision.event_id, "ts": decision.ts, "kind": decision.kind, "rule": decision.rule,
                "phase": decision.phase, "message": decision.message, "value": decision.value,
                "threshold": decision.threshold, "body": DECISION_ENCODER.encode(decision), "created_at": now,
            })
            owners.append((account, decision))
    ids: list[int] = []
    if decision_rows:
        table = m.Decision.__table__
        ids = list(session.execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True), decision_rows
        ).scalars())
    report.decisions = len(ids)

    entries: list[dict] = []
    outbox_rows: list[dict] = []
    decision_ids = iter(ids)
    by_account: dict[int, list[dict]] = {}
    for (account, decision), decision_id in zip(owners, decision_ids):
        mine = by_account.setdefault(account.id, [])
        mine.append(dict(actor="engine", action=f"decision.{decision.kind}", entity="account",
                         entity_id=account.external_id, firm_id=account.firm_id, ts=decision.ts,
                         after={"decision": decision_id, "rule": decision.rule, "message": decision.message}))
        for kind, payload, not_before in _effects(account, decision, decision_id):
            outbox_rows.append({"firm_id": account.firm_id, "kind": kind.split(":")[0], "payload": payload,
                                "dedupe_key": f"decision:{decision_id}:{kind}", "status": "pending", "attempts": 0,
                                "next_attempt_at": not_before or now, "created_at": now})
        if decision.kind == "phase_passed" and decision.details.get("next_phase"):
            opened = _open_next_phase(session, account, decision, decision_id, now)
            if opened is not None:
                entry, command = opened
                mine.append(entry)
                outbox_rows.append(command)

    changed = _status_changes(session, outcomes)
    for outcome, before in changed:
        account = outcome.account
        by_account.setdefault(account.id, []).append(dict(
            actor="engine", action="account.status", entity="account", entity_id=account.external_id,
            before={"status": before}, after={"status": outcome.status}, firm_id=account.firm_id,
            ts=outcome.status_ts))
    report.status_changes = len(changed)
    for outcome in outcomes:  # the chain in account order, as the worker always wrote it
        entries.extend(by_account.pop(outcome.account.id, ()))
    if outbox_rows:
        session.execute(insert(m.OutboxMessage.__table__), outbox_rows)
    report.outbox = len(outbox_rows)
    report.audit = len(audit.append_many(session, entries))
    return report


_UPSERT_STATES_PG = text_sql("""
INSERT INTO account_states (account_id, firm_id, state, last_seq, balance, equity, updated_at,
    daily_floor, daily_distance, daily_distance_cents, max_loss_level, max_loss_distance, max_loss_distance_cents,
    nearest_bp, target_bp, trading_days)
SELECT CAST(b.account_id AS INTEGER), b.firm_id, decode(b.state, 'hex'), CAST(b.last_seq AS BIGINT),
       CAST(b.balance AS NUMERIC(24, 8)), CAST(b.equity AS NUMERIC(24, 8)), :now,
       CAST(b.daily_floor AS NUMERIC(24, 8)), CAST(b.daily_distance AS NUMERIC(24, 8)),
       CAST(b.daily_distance_cents AS BIGINT), CAST(b.max_loss_level AS NUMERIC(24, 8)),
       CAST(b.max_loss_distance AS NUMERIC(24, 8)), CAST(b.max_loss_distance_cents AS BIGINT),
       CAST(b.nearest_bp AS INTEGER), CAST(b.target_bp AS INTEGER), CAST(b.trading_days AS INTEGER)
FROM unnest(string_to_array(:ids, ','), string_to_array(:firms, chr(31)), string_to_array(:states, ','),
            string_to_array(:seqs, ','), string_to_array(:balances, ','), string_to_array(:equities, ','),
            string_to_array(:daily_floor, ',', ''), string_to_array(:daily_distance, ',', ''),
            string_to_array(:daily_distance_cents, ',', ''), string_to_array(:max_loss_level, ',', ''),
            string_to_array(:max_loss_distance, ',', ''), string_to_array(:max_loss_distance_cents, ',', ''),
            string_to_array(:nearest_bp, ',', ''), string_to_array(:target_bp, ',', ''),
            string_to_array(:trading_days, ',', ''))
     AS b(account_id, firm_id, state, last_seq, balance, equity, daily_floor, daily_distance, daily_distance_cents,
          max_loss_level, max_loss_distance, max_loss_distance_cents, nearest_bp, target_bp, trading_days)
ON CONFLICT (account_id) DO UPDATE SET state = excluded.state, last_seq = excluded.last_seq,
    balance = excluded.balance, equity = excluded.equity, updated_at = excluded.updated_at,
    daily_floor = excluded.daily_floor, daily_distance = excluded.daily_distance,
    daily_distance_cents = excluded.daily_distance_cents, max_loss_level = excluded.max_loss_level,
    max_loss_distance = excluded.max_loss_distance, max_loss_distance_cents = excluded.max_loss_distance_cents,
    nearest_bp = excluded.nearest_bp, target_bp = excluded.target_bp, trading_days = excluded.trading_days
""").bindparams(bindparam("now", type_=DateTime(timezone=True)))

_STATE_COLUMNS = ("state", "last_seq", "balance", "equity", "updated_at")


def upsert_states(session: Session, outcomes: list[AccountOutcome], now: dt.datetime) -> None:
    """Insert or update the accounts' states and positions: one statement on either backend.

    With each state go the figures the accounts list sorts and filters on (distances to the daily
    floor and the max-loss level, target progress, trading days: :func:`propcrm.services.accounts.stored_figures`),
    computed from the state with the account's compiled phase — the numbers the account page shows."""
    from .accounts import FIGURE_COLUMNS, figures_for_states  # (accounts imports this module)

    table = m.AccountState.__table__
    dialect = session.get_bind().dialect.name
    figures = figures_for_states(session, ((o.account.pack_version_id, o.account.phase, o.state) for o in outcomes))
    if dialect == "postgresql" and not any("\x1f" in o.account.firm_id for o in outcomes):
        # One statement for the whole batch. Each column travels as one delimited text parameter that the
        # server splits (string_to_array) and casts: psycopg's array dumper escapes element by element
        # in Python, which cost more than the rest of the write. An empty element is NULL (a figure only).
        encode = STATE_ENCODER.encode
        params = {
            "ids": ",".join(str(o.account.id) for o in outcomes),
            "firms": "\x1f".join(o.account.firm_id for o in outcomes),
            "states": ",".join(encode(o.state).hex() for o in outcomes),
            "seqs": ",".join(str(o.last_seq) for o in outcomes),
            "balances": ",".join(format(o.state.balance, "f") for o in outcomes),
            "equities": ",".join(format(o.state.equity, "f") for o in outcomes),
            "now": now,
        }
        for name in FIGURE_COLUMNS:
            params[name] = ",".join("" if f[name] is None else format(f[name], "f") if isinstance(f[name], Decimal)
                                    else str(f[name]) for f in figures)
        session.execute(_UPSERT_STATES_PG, params)
        return
    rows = [{"account_id": o.account.id, "firm_id": o.account.firm_id, "state": STATE_ENCODER.encode(o.state),
             "last_seq": o.last_seq, "balance": o.state.balance, "equity": o.state.equity, "updated_at": now, **f}
            for o, f in zip(outcomes, figures)]
    statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.account_id],
        set_={name: statement.excluded[name] for name in (*_STATE_COLUMNS, *FIGURE_COLUMNS)},
    )
    session.execute(statement, rows)


def _status_changes(session: Session, outcomes: list[AccountOutcome]) -> list[tuple[AccountOutcome, str]]:
    """Apply the statuses the engine gives; staff statuses win. Returns (outcome, status before)."""
    wanted = {o.account.id: o for o in outcomes if o.status is not None and o.status != o.account.status}
    if not wanted:
        return []
    query = select(m.Account.id, m.Account.status).where(m.Account.id.in_(sorted(wanted)))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    current = dict(session.execute(query).all())
    changes = []
    for account_id in sorted(wanted):
        outcome = wanted[account_id]
        before = current.get(account_id, outcome.account.status)
        if before in HELD or before == outcome.status:  # a person's stop is lifted by a person
            outcome.account.status = before
            continue
        changes.append((outcome, before))
        outcome.account.status = outcome.status
    if changes:
        session.execute(
            update(m.Account.__table__).where(m.Account.__table__.c.id == bindparam("account_id"))
            .values(status=bindparam("new_status")),
            [{"account_id": o.account.id, "new_status": o.status} for o, _ in changes],
        )
    return changes


def _open_next_phase(
    session: Session, account: AccountRef, decision: Decision, decision_id: int, now: dt.datetime
) -> tuple[dict, dict] | None:
    """Passing a phase creates the next phase's account (same pack version) and asks the platform for
    it; returns the audit entry and the outbox row (``None`` when the account exists already)."""
    next_phase = decision.details["next_phase"]
    external_id = f"{account.external_id}.{next_phase}"
    exists = session.scalars(
        select(m.Account.id).where(m.Account.firm_id == account.firm_id, m.Account.external_id == external_id)
    ).one_or_none()
    if exists is not None:
        return None
    product_id = session.scalar(select(m.Account.product_id).where(m.Account.id == account.id))
    successor = m.Account(
        firm_id=account.firm_id,
        external_id=external_id,
        platform=account.platform,
        login=external_id,
        trader_id=account.trader_id,
        product_id=product_id,
        pack_version_id=account.pack_version_id,
        phase=next_phase,
        status="active",
    )
    session.add(successor)
    session.flush()
    entry = dict(actor="engine", action="account.create", entity="account", entity_id=external_id,
                 after={"phase": next_phase, "after_passing": account.external_id, "decision": decision_id},
                 firm_id=account.firm_id, ts=decision.ts)
    command = {"firm_id": account.firm_id, "kind": "platform_command",
               "payload": {"command": "create_account", "account": external_id, "platform": account.platform,
                           "phase": next_phase, "previous": account.external_id, "trader_id": account.trader_id,
                           "decision": decision_id},
               "dedupe_key": f"decision:{decision_id}:create_account", "status": "pending", "attempts": 0,
               "next_attempt_at": now, "created_at": now}
    return entry, command


def _market_at(calendar: list[tuple[int, NewsEntry]], up_to_seq: int) -> Market:
    """The news calendar as the account knew it after event ``up_to_seq`` (exactly as in replay)."""
    market = Market()
    for seq, entry in calendar:
        if seq > up_to_seq:
            break
        market.add_news(entry)
    return market


def _account_status(engine_status: str, program) -> str:
    if engine_status == "active" and program.target is None:
        return "funded"
    return engine_status


def _effects(account: AccountRef, decision: Decision, decision_id: int) -> list[tuple[str, dict, dt.datetime | None]]:
    """What must happen in the world because of a decision: (outbox kind, payload, not before).

    Payload fields are plain JSON. Platform commands: ``disable``, ``pause`` (with ``until``),
    ``resume`` (delivered no earlier than the pause's end), ``create_account`` (the next phase).
    """
    base = {"account": account.external_id, "platform": account.platform, "login": account.login,
            "decision": decision_id, "kind": decision.kind, "rule": decision.rule, "message": decision.message,
            "trader_id": account.trader_id}
    if decision.kind == "breach":
        return [("platform_command", {**base, "command": "disable"}, None), ("notify", base, None)]
    if decision.kind == "pause":
        until = decision.details.get("until")
        return [
            ("platform_command", {**base, "command": "pause", "until": until.isoformat() if until else None}, None),
            ("platform_command:resume", {**base, "command": "resume"}, until),
            ("notify", base, None),
        ]
    if decision.kind == "phase_passed":
        return [("notify", base, None)]
    if decision.kind in ("warning", "violation", "blocked"):
        return [("notify", base, None)]
    return []


def pending_counts(session: Session, firm_id: str) -> dict[str, int]:
    rows = session.execute(
        select(m.RawEvent.status, func.count()).where(m.RawEvent.firm_id == firm_id).group_by(m.RawEvent.status)
    )
    return {status: n for status, n in rows}


__all__ = ["AccountOutcome", "AccountRef", "EvaluationWorker", "PassReport", "SYSTEMIC_ERRORS", "WriteReport",
           "pending_counts", "upsert_states", "write_isolated", "write_outcomes"]
