"""One account's outcome of an evaluation and the set-based write path — shared by both evaluation drivers.

The database-polling worker (:mod:`propcrm.services.evaluation`) and the partitioned NATS workers
(:mod:`propcrm.cluster.partition`) both turn what the engine gives an account into an
:class:`AccountOutcome` with :func:`outcome_for` (the status rule: staff statuses are never overridden, an
active account without a target is funded) and write the outcomes with :func:`write_outcomes` inside
:func:`write_isolated`. What differs between them (where events come from, what happens to a refused
event) stays in the drivers; merging them (one real-time pipeline) is a change to the drivers only.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

from sqlalchemy import DateTime, bindparam, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy import text as text_sql
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..domain.decisions import ENCODER as DECISION_ENCODER
from ..domain.decisions import Decision
from ..domain.state import AccountState
from . import audit, equity_points
from . import trades as trade_history
from . import near_breach
from .accounts import FIGURE_COLUMNS, figures_for_states
from .catalog import create_account
from .ingest import quarantine_lines
from .state_codec import STATE_DECODER, STATE_ENCODER  # noqa: F401 - re-exported

log = logging.getLogger("propcrm.evaluation")

#: statuses set by staff, which evaluation never overrides (it still evaluates the account: its state and
#: decisions move on; ``halted`` is a firm-wide kill switch, services/halts.py)
HELD = ("suspended", "halted", "closed")
#: Failures of the database itself, not of one account's data: the whole pass (batch) fails and is
#: retried, rather than setting anything aside.
SYSTEMIC_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.ProgrammingError, sa_exc.InternalError,
                   sa_exc.DisconnectionError, sa_exc.PendingRollbackError, sa_exc.TimeoutError)
MAX_REASON = 2000
RESEND = "a corrected event may be sent again with the same id"


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


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return clean_reason(text)[:500]


def clean_reason(text: str) -> str:
    return text.replace("\x00", "\\u0000")[:MAX_REASON]


def quarantine_rows(session: Session, rows: list[tuple]) -> None:
    """Keep stored rows ``(row, firm id, reason)`` in the quarantine (what a risk officer reads)."""
    quarantine_lines(session, [
        {"firm_id": firm_id, "source": row.source, "line": None, "body": bytes(row.body),
         "reason": clean_reason(reason), "received_at": row.received_at, "resolved_at": None}
        for row, firm_id, reason in rows])


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
                failed.append((part[0], error_text(exc)))
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
    stored event it came from, when there is one), the status the engine gives it (``None``:
    leave the status alone), and the trade events the engine accepted, in order, each with its stored
    seq when there is one (for the trade-history projection, :mod:`propcrm.services.trades`)."""

    account: AccountRef
    state: AccountState
    last_seq: int
    decisions: list[tuple[Decision, int | None]]
    status: str | None
    status_ts: dt.datetime
    #: ``state`` encoded (set by a driver that has it already) and the bytes the row held before the
    #: batch (``None``: unknown). When the two are equal only the position (``last_seq``) is written.
    encoded: bytes | None = None
    stored: bytes | None = None
    trades: list[tuple[object, int | None]] = field(default_factory=list)
    #: the chart's points of the batch, in time order (:mod:`propcrm.services.equity_points`)
    points: list = field(default_factory=list)
    #: the batch's worst points within the firm's alert distance (``engine.lows.LowPoint``, one per limit and
    #: trading day) when the driver's engine watched the account; None: not watched (near_breach.check then
    #: measures ``state``)
    lows: list | None = None


@dataclass
class WriteReport:
    states: int = 0
    decisions: int = 0
    outbox: int = 0
    audit: int = 0
    status_changes: int = 0
    trades: int = 0
    points: int = 0


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
    # near-breach alerts with every batch (not with the snapshots): once per account, limit and trading day
    near_breach.check(session, outcomes, now)

    decision_rows = []
    owners: list[tuple[AccountRef, Decision]] = []
    for outcome in outcomes:
        account = outcome.account
        for decision, event_seq in outcome.decisions:
            decision_rows.append(decision_row(account, decision, event_seq, now))
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
        for kind, payload, not_before in decision_effects(account, decision, decision_id):
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
    report.trades = trade_history.record(
        session, [(o.account.firm_id, o.account.id, o.trades) for o in outcomes if o.trades])
    report.points = equity_points.record(
        session, [(o.account.firm_id, o.account.id, o.points) for o in outcomes if o.points])
    return report


def decision_row(account: AccountRef, decision: Decision, event_seq: int | None, now: dt.datetime) -> dict:
    """The ``decisions`` row of one of an account's decisions (the event it came from, when stored)."""
    return {
        "firm_id": account.firm_id, "account_id": account.id, "event_seq": event_seq,
        "event_id": decision.event_id, "ts": decision.ts, "kind": decision.kind, "rule": decision.rule,
        "phase": decision.phase, "message": decision.message, "value": decision.value,
        "threshold": decision.threshold, "body": DECISION_ENCODER.encode(decision), "created_at": now,
    }


_UPSERT_STATES_PG = text_sql("""
INSERT INTO account_states (account_id, firm_id, state, last_seq, balance, equity, updated_at,
    daily_floor, daily_distance, daily_distance_cents, max_loss_level, max_loss_distance, max_loss_distance_cents,
    nearest_bp, target_bp, trading_days, next_due, news_until)
SELECT CAST(b.account_id AS INTEGER), b.firm_id, decode(b.state, 'hex'), CAST(b.last_seq AS BIGINT),
       CAST(b.balance AS NUMERIC(24, 8)), CAST(b.equity AS NUMERIC(24, 8)), :now,
       CAST(b.daily_floor AS NUMERIC(24, 8)), CAST(b.daily_distance AS NUMERIC(24, 8)),
       CAST(b.daily_distance_cents AS BIGINT), CAST(b.max_loss_level AS NUMERIC(24, 8)),
       CAST(b.max_loss_distance AS NUMERIC(24, 8)), CAST(b.max_loss_distance_cents AS BIGINT),
       CAST(b.nearest_bp AS INTEGER), CAST(b.target_bp AS INTEGER), CAST(b.trading_days AS INTEGER),
       CAST(b.next_due AS TIMESTAMP WITH TIME ZONE), CAST(b.news_until AS TIMESTAMP WITH TIME ZONE)
FROM unnest(string_to_array(:ids, ','), string_to_array(:firms, chr(31)), string_to_array(:states, ','),
            string_to_array(:seqs, ','), string_to_array(:balances, ','), string_to_array(:equities, ','),
            string_to_array(:daily_floor, ',', ''), string_to_array(:daily_distance, ',', ''),
            string_to_array(:daily_distance_cents, ',', ''), string_to_array(:max_loss_level, ',', ''),
            string_to_array(:max_loss_distance, ',', ''), string_to_array(:max_loss_distance_cents, ',', ''),
            string_to_array(:nearest_bp, ',', ''), string_to_array(:target_bp, ',', ''),
            string_to_array(:trading_days, ',', ''), string_to_array(:next_due, ',', ''),
            string_to_array(:news_until, ',', ''))
     AS b(account_id, firm_id, state, last_seq, balance, equity, daily_floor, daily_distance, daily_distance_cents,
          max_loss_level, max_loss_distance, max_loss_distance_cents, nearest_bp, target_bp, trading_days,
          next_due, news_until)
ON CONFLICT (account_id) DO UPDATE SET state = excluded.state, last_seq = excluded.last_seq,
    balance = excluded.balance, equity = excluded.equity, updated_at = excluded.updated_at,
    daily_floor = excluded.daily_floor, daily_distance = excluded.daily_distance,
    daily_distance_cents = excluded.daily_distance_cents, max_loss_level = excluded.max_loss_level,
    max_loss_distance = excluded.max_loss_distance, max_loss_distance_cents = excluded.max_loss_distance_cents,
    nearest_bp = excluded.nearest_bp, target_bp = excluded.target_bp, trading_days = excluded.trading_days,
    next_due = excluded.next_due, news_until = excluded.news_until
""").bindparams(bindparam("now", type_=DateTime(timezone=True)))

_STATE_COLUMNS = ("state", "last_seq", "balance", "equity", "updated_at")


def upsert_states(session: Session, outcomes: list[AccountOutcome], now: dt.datetime) -> None:
    """Insert or update the accounts' states and positions: one statement on either backend.

    With each state go the figures the accounts list sorts and filters on (distances to the daily
    floor and the max-loss level, target progress, trading days: :func:`propcrm.services.accounts.stored_figures`),
    computed from the state with the account's compiled phase — the numbers the account page shows."""
    table = m.AccountState.__table__
    dialect = session.get_bind().dialect.name
    moved = [o for o in outcomes if o.stored is not None and o.encoded == o.stored]
    if moved:  # the state is as stored (a clock tick that changed nothing): only the position moves
        session.execute(
            update(table).where(table.c.account_id == bindparam("moved_id")).values(last_seq=bindparam("moved_seq")),
            [{"moved_id": o.account.id, "moved_seq": o.last_seq} for o in moved])
        outcomes = [o for o in outcomes if not (o.stored is not None and o.encoded == o.stored)]
        if not outcomes:
            return
    figures = figures_for_states(session, ((o.account.pack_version_id, o.account.phase, o.state) for o in outcomes))
    if dialect == "postgresql" and not any("\x1f" in o.account.firm_id for o in outcomes):
        # One statement for the whole batch. Each column travels as one delimited text parameter that the
        # server splits (string_to_array) and casts: psycopg's array dumper escapes element by element
        # in Python, which cost more than the rest of the write. An empty element is NULL (a figure only).
        encode = STATE_ENCODER.encode
        params = {
            "ids": ",".join(str(o.account.id) for o in outcomes),
            "firms": "\x1f".join(o.account.firm_id for o in outcomes),
            "states": ",".join((o.encoded or encode(o.state)).hex() for o in outcomes),
            "seqs": ",".join(str(o.last_seq) for o in outcomes),
            "balances": ",".join(format(o.state.balance, "f") for o in outcomes),
            "equities": ",".join(format(o.state.equity, "f") for o in outcomes),
            "now": now,
        }
        for name in FIGURE_COLUMNS:
            params[name] = ",".join("" if f[name] is None else format(f[name], "f") if isinstance(f[name], Decimal)
                                    else f[name].isoformat() if isinstance(f[name], dt.datetime)
                                    else str(f[name]) for f in figures)
        session.execute(_UPSERT_STATES_PG, params)
        return
    rows = [{"account_id": o.account.id, "firm_id": o.account.firm_id, "state": o.encoded or STATE_ENCODER.encode(o.state),
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
    create_account(session, firm_id=account.firm_id, external_id=external_id, platform=account.platform,
                   login=external_id, trader_id=account.trader_id, product_id=product_id,
                   pack_version_id=account.pack_version_id, phase=next_phase)  # (active: the default status)
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


def outcome_for(account: AccountRef, state: AccountState, program, last_seq: int,
                decisions: list[tuple[Decision, int | None]], status_ts: dt.datetime, *,
                trades: list[tuple[object, int | None]] | None = None) -> AccountOutcome:
    """An account's outcome: the engine's status for it unless staff hold it (:data:`HELD`). ``trades``:
    the accepted trade events (with their stored seq) for the trade-history projection."""
    status = None if account.status in HELD else account_status(state.status, program)
    return AccountOutcome(account, state, last_seq, decisions, status, status_ts, trades=trades or [])


def account_status(engine_status: str, program) -> str:
    """The account status the engine's status means: an active account of a phase without a target is funded."""
    if engine_status == "active" and program.target is None:
        return "funded"
    return engine_status


def decision_effects(account: AccountRef, decision: Decision, decision_id: int) -> list[tuple[str, dict, dt.datetime | None]]:
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
