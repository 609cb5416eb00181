"""The audited re-bind: move chosen accounts to another version of their rule pack, history replayed.

An account keeps the pack version it was sold for its whole life, so its decisions replay byte for byte;
a firm that fixes a wrong rule moves chosen accounts to the fixed version here, explicitly. Two steps:

1. :func:`preview` — the what-if of the move, changing nothing. Each account's stored history (its
   applied events and the firm's clock and news events, in stored order, up to where it has been
   evaluated: ``account_states.last_seq``) is replayed under the target version with the same
   :class:`~propcrm.engine.runner.Engine` as ``propcrm replay`` and the evaluation worker. Beside the
   account's status now: its status after, the decisions it has that the new version would not make
   (``lost``) and the ones the new version adds (``gained``) — :func:`propcrm.engine.replay.compare_decisions`.
2. :func:`apply` — the same replay again, in one transaction with the accounts locked, and written: the
   account's version, its state (``last_seq`` unchanged: later events are evaluated by the worker under the
   new version), the lost decisions marked ``superseded_at`` (kept), the gained ones appended, the status
   the new history gives (a staff status — suspended, halted, closed — stays), and one ``account.rebind``
   audit entry per account naming the old and new version, the actor and the reason.

   Effects, through the outbox: a breach the new version would not have made re-enables the account
   (``enable``); a new breach disables it (its ``disable`` and notice, as any breach); a new pass opens the
   next phase, as in evaluation. Historic warnings and pauses are appended quietly (no notices for the past).

**Deployments.** The history is read from ``raw_events``, which the embedded deployment's worker evaluates;
the scaled-out NATS workers keep histories on the bus and states in memory, so a re-bind is refused there
(a database with partition checkpoints) until they can reload a re-bound account.

**Invalidation point.** Every re-bound state row gets ``account_states.generation`` bumped (so does a
cleared breach). Anything that keeps an account's state or compiled pack in memory between passes (an
evaluation worker's cache) must treat its copy as stale when the row's ``generation`` or ``last_seq``, or the
account's ``pack_version_id``, differ from what it holds, and read them again. The accounts are locked
(``FOR UPDATE`` on PostgreSQL, which the worker's ``SKIP LOCKED`` claim respects), so no pass interleaves.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_cluster import TABLE_STREAM, PartitionCheckpoint
from ..domain.decisions import Decision
from ..domain.events import DECODER
from ..domain.program import PhaseProgram
from ..domain.state import AccountState
from ..engine.replay import compare_decisions
from ..engine.runner import Engine
from . import audit, equity_replay
from .catalog import compiled_pack
from .errors import Conflict, Invalid
from .evaluation import firm_wide
from .symbols import table_for
from .halts import TRADING, reason_text
from .outcomes import HELD, AccountRef, account_status, decision_row, outcome_for, write_outcomes
from .rulepacks import get_version

UTC = dt.timezone.utc
MAX_ACCOUNTS = 500
TERMINAL = ("breach", "phase_passed")  # gained decisions whose effects are due now (see the module's text)


@dataclass(frozen=True)
class Selection:
    """Which accounts to move: listed ones (ids or external ids), or every account of the target's pack
    matching all filters given (bound to ``from_version_id``, sold as ``product_id``, in ``phase``)."""

    account_ids: tuple[int, ...] = ()
    external_ids: tuple[str, ...] = ()
    from_version_id: int | None = None
    product_id: int | None = None
    phase: str | None = None

    @property
    def listed(self) -> bool:
        return bool(self.account_ids or self.external_ids)

    def check(self) -> None:
        filtered = self.from_version_id is not None or self.product_id is not None or self.phase is not None
        if not self.listed and not filtered:
            raise Invalid("accounts: list the accounts to move (account_ids or external_ids) or filter them "
                          "(from_version_id, product_id, phase)")
        if len(self.account_ids) + len(self.external_ids) > MAX_ACCOUNTS:
            raise Invalid(f"accounts: at most {MAX_ACCOUNTS} accounts in one re-bind")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.account_ids:
            out["account_ids"] = list(self.account_ids)
        if self.external_ids:
            out["external_ids"] = list(self.external_ids)
        for name in ("from_version_id", "product_id", "phase"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass
class Move:
    """One account's move: as it is, and as its history replays under the target version."""

    account: m.Account
    from_version: m.RulePackVersion
    status_now: str
    status_after: str
    events: int
    last_seq: int
    lost: list[m.Decision] = field(default_factory=list)  # decided now; the new version would not
    gained: list[tuple[Decision, int | None]] = field(default_factory=list)  # (decision, event seq)
    state: AccountState | None = None
    problem: str | None = None  # why this account cannot be moved (nothing is moved then)

    @property
    def changed(self) -> bool:
        return self.status_now != self.status_after or bool(self.lost or self.gained)

    def fingerprint(self) -> list:
        return [self.account.id, self.from_version.id, self.last_seq, self.status_after,
                sorted(d.id for d in self.lost), [_key_text(d) for d, _ in self.gained], self.problem]


@dataclass
class Plan:
    target: m.RulePackVersion
    moves: list[Move]

    @property
    def digest(self) -> str:
        """What the person saw: confirming with it fails if the outcome of the move changed meanwhile."""
        text = json.dumps([self.target.id, [mv.fingerprint() for mv in self.moves]], default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def problems(self) -> list[Move]:
        return [mv for mv in self.moves if mv.problem]


def _key_text(d: Decision) -> str:
    return f"{d.event_id}|{d.kind}|{d.rule}|{d.message}"


def target_version(session: Session, *, firm_id: str, version_id: int) -> m.RulePackVersion:
    """The version to move to: any version of the firm's that is not retired."""
    target = get_version(session, firm_id=firm_id, version_id=version_id)
    if target.status == "retired":
        raise Conflict(f"rule pack {target.pack_id} v{target.version} is retired: accounts cannot be moved to a "
                       "retired version (activate it again, or choose another version)")
    return target


def _accounts(session: Session, *, firm_id: str, target: m.RulePackVersion, selection: Selection,
              lock: bool) -> list[m.Account]:
    selection.check()
    same_pack = select(m.RulePackVersion.id).where(m.RulePackVersion.firm_id == firm_id,
                                                   m.RulePackVersion.pack_id == target.pack_id)
    query = select(m.Account).where(m.Account.firm_id == firm_id)
    if selection.listed:
        query = query.where((m.Account.id.in_(selection.account_ids)) | (m.Account.external_id.in_(selection.external_ids)))
    else:
        query = query.where(m.Account.pack_version_id.in_(same_pack), m.Account.pack_version_id != target.id)
    if selection.from_version_id is not None:
        query = query.where(m.Account.pack_version_id == selection.from_version_id)
    if selection.product_id is not None:
        query = query.where(m.Account.product_id == selection.product_id)
    if selection.phase is not None:
        query = query.where(m.Account.phase == selection.phase)
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    accounts = list(session.scalars(query.order_by(m.Account.id).limit(MAX_ACCOUNTS + 1)))
    if len(accounts) > MAX_ACCOUNTS:
        raise Invalid(f"accounts: more than {MAX_ACCOUNTS} accounts match; narrow the selection")
    if selection.listed:
        found_ids = {a.id for a in accounts} | {a.external_id for a in accounts}
        missing = [str(x) for x in (*selection.account_ids, *selection.external_ids) if x not in found_ids]
        if missing:
            raise Invalid(f"accounts: no account {', '.join(missing[:10])} in this firm (or not matching the filters)")
    if not accounts:
        raise Invalid("accounts: no account of this pack matches the selection")
    versions = {v.id: v for v in session.scalars(select(m.RulePackVersion).where(
        m.RulePackVersion.id.in_({a.pack_version_id for a in accounts})))}
    for account in accounts:
        bound = versions[account.pack_version_id]
        if bound.pack_id != target.pack_id:
            raise Conflict(f"account {account.external_id} is bound to rule pack {bound.pack_id} v{bound.version}: a "
                           f"re-bind moves an account to another version of its own pack, not to {target.pack_id}")
        if bound.id == target.id:
            raise Conflict(f"account {account.external_id} is already bound to {target.pack_id} v{target.version}")
    return accounts


def replay_history(session: Session, account: m.Account, program: PhaseProgram,
                   up_to_seq: int) -> tuple[AccountState | None, list[tuple[Decision, int | None]], int]:
    """The account's stored history up to ``up_to_seq`` replayed under ``program``, exactly as the
    evaluation worker met it: its applied events and the firm's clock and news events in stored order.
    Returns the state (``None`` without own events), the decisions with their event's seq, and the events."""
    own = session.execute(
        select(m.RawEvent.seq, m.RawEvent.body).where(
            m.RawEvent.firm_id == account.firm_id, m.RawEvent.account_id == account.id,
            m.RawEvent.status == "applied", m.RawEvent.seq <= up_to_seq).order_by(m.RawEvent.seq)).all()
    if not own:
        return None, [], 0
    shared = session.execute(firm_wide(m.RawEvent.seq, m.RawEvent.body, firm_id=account.firm_id)
                             .where(m.RawEvent.seq <= up_to_seq).order_by(m.RawEvent.seq)).all()
    external = account.external_id
    engine = Engine(lambda name: program if name == external else None, dedupe=False)
    engine.set_symbols(table_for(session, account.firm_id))  # ticks mark its positions, as in the worker
    decisions: list[tuple[Decision, int | None]] = []
    batch: list[Any] = []
    seqs: list[int] = []
    count = 0

    def flush() -> None:
        seq_of = dict(zip((e.id for e in batch), seqs))
        for d in engine.feed(batch):
            decisions.append((d, seq_of.get(d.event_id)))
        batch.clear()
        seqs.clear()

    for seq, body in heapq.merge(own, shared, key=lambda r: r[0]):
        batch.append(DECODER.decode(body))
        seqs.append(seq)
        count += 1
        if len(batch) >= 5000:
            flush()
    flush()
    return engine.states.get(external), decisions, count


def _move(session: Session, account: m.Account, versions: dict[int, m.RulePackVersion],
          target: m.RulePackVersion) -> Move:
    bound = versions[account.pack_version_id]
    state_row = session.get(m.AccountState, account.id)
    last_seq = state_row.last_seq if state_row is not None else 0
    move = Move(account=account, from_version=bound, status_now=account.status, status_after=account.status,
                events=0, last_seq=last_seq)
    try:
        program = compiled_pack(target).phase(account.phase)
    except KeyError:
        move.problem = f"phase {account.phase!r} is not in {target.pack_id} v{target.version}"
        return move
    if account.status == "closed":
        move.problem = "the account is closed"
        return move
    if account.status == "passed":
        following = session.scalar(select(m.Account.id).where(
            m.Account.firm_id == account.firm_id, m.Account.external_id.like(f"{account.external_id}.%")).limit(1))
        if following is not None:
            move.problem = "the account passed and its next phase was opened: move that account instead"
            return move
    if state_row is None:  # nothing evaluated yet: only the binding changes
        return move
    state, decisions, events = replay_history(session, account, program, last_seq)
    move.events = events
    move.state = state if state is not None else program.new_state(account.external_id)  # only firm-wide events
    old = list(session.scalars(select(m.Decision).where(
        m.Decision.firm_id == account.firm_id, m.Decision.account_id == account.id,
        m.Decision.superseded_at.is_(None)).order_by(m.Decision.id)))
    lost, gained = compare_decisions(old, [d for d, _ in decisions])
    gained_ids = {id(d) for d in gained}
    move.lost = lost
    move.gained = [(d, seq) for d, seq in decisions if id(d) in gained_ids]
    if account.status not in HELD:
        move.status_after = account_status(move.state.status, program)
    return move


def preview(session: Session, *, firm_id: str, version_id: int, selection: Selection, lock: bool = False) -> Plan:
    """The what-if of moving the selected accounts to version ``version_id``; changes nothing."""
    if session.scalar(select(PartitionCheckpoint.stream).where(PartitionCheckpoint.stream != TABLE_STREAM)
                      .limit(1)) is not None:  # (the embedded log driver's checkpoints are the table's)
        raise Conflict("a re-bind works in the embedded deployment only: the scaled-out workers keep each account's "
                       "history on the bus and its state in memory (docs/cluster.md), which a re-bind cannot replay "
                       "or replace yet")
    target = target_version(session, firm_id=firm_id, version_id=version_id)
    accounts = _accounts(session, firm_id=firm_id, target=target, selection=selection, lock=lock)
    versions = {v.id: v for v in session.scalars(select(m.RulePackVersion).where(
        m.RulePackVersion.id.in_({a.pack_version_id for a in accounts})))}
    return Plan(target=target, moves=[_move(session, a, versions, target) for a in accounts])


def apply(session: Session, *, firm_id: str, version_id: int, selection: Selection, reason: str, actor: str,
          expect: str | None = None) -> Plan:
    """Move the selected accounts (see the module's text), all or none. ``expect`` is the preview's
    :attr:`Plan.digest`: when given and the outcome differs now (new events, another change), nothing moves."""
    text = reason_text(reason)
    plan = preview(session, firm_id=firm_id, version_id=version_id, selection=selection, lock=True)
    if plan.problems:
        raise Conflict("; ".join(f"account {mv.account.external_id}: {mv.problem}" for mv in plan.problems[:10])
                       + " — nothing was moved")
    if expect is not None and expect != plan.digest:
        raise Conflict("expect: the outcome of the move changed since the preview (new events or another change); "
                       "preview it again")
    now = dt.datetime.now(UTC)
    for move in plan.moves:
        _write_move(session, move, plan.target, text, actor, now)
    return plan


def _write_move(session: Session, move: Move, target: m.RulePackVersion, reason: str, actor: str,
                now: dt.datetime) -> None:
    account = move.account
    before_status = account.status
    account.pack_version_id = target.id
    session.flush()
    if move.lost:
        session.execute(update(m.Decision).where(m.Decision.id.in_([d.id for d in move.lost]))
                        .values(superseded_at=now).execution_options(synchronize_session=False))
    gained_ids: list[int] = []
    if move.state is not None:
        program = compiled_pack(target).phase(account.phase)
        ref = AccountRef.of(account)
        terminal = [(d, seq) for d, seq in move.gained if d.kind in TERMINAL]
        quiet = [(d, seq) for d, seq in move.gained if d.kind not in TERMINAL]
        outcome = outcome_for(ref, move.state, program, move.last_seq, terminal, now)
        write_outcomes(session, [outcome])  # state, the new breach or pass with its effects, the status
        if quiet:
            table = m.Decision.__table__
            gained_ids = list(session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True),
                                              [decision_row(ref, d, seq, now) for d, seq in quiet]).scalars())
        session.execute(update(m.AccountState).where(m.AccountState.account_id == account.id)
                        .values(generation=m.AccountState.generation + 1)
                        .execution_options(synchronize_session=False))
        account.status = ref.status
        # the chart's floors and decision marks follow the new version: its points are replayed under it
        equity_replay.backfill_points(session, firm_id=account.firm_id, account_ids=[account.id])
    if before_status == "breached" and account.status in TRADING:
        session.add(m.OutboxMessage(
            firm_id=account.firm_id, kind="platform_command",
            payload={"command": "enable", "account": account.external_id, "platform": account.platform,
                     "login": account.login, "trader_id": account.trader_id, "action": "rebind",
                     "pack_version": target.id},
            dedupe_key=f"rebind:{account.id}:{target.id}:{now.timestamp():.6f}:enable", status="pending", attempts=0,
            next_attempt_at=now, created_at=now))
    audit.append(session, actor=actor, action="account.rebind", entity="account", entity_id=account.external_id,
                 before={"pack_version": move.from_version.id,
                         "version": f"{move.from_version.pack_id} v{move.from_version.version}",
                         "status": before_status},
                 after={"pack_version": target.id, "version": f"{target.pack_id} v{target.version}",
                        "status": account.status, "reason": reason, "events_replayed": move.events,
                        "decisions_superseded": [d.id for d in move.lost],
                        "decisions_added": len(move.gained), "quiet_decisions": gained_ids},
                 firm_id=account.firm_id, ts=now)


def plan_view(plan: Plan) -> dict[str, Any]:
    """The plan as plain JSON (the API's answer, the CLI's ``--json``)."""
    def old(d: m.Decision) -> dict:
        return {"id": d.id, "ts": d.ts, "kind": d.kind, "rule": d.rule, "message": d.message}

    def new(d: Decision) -> dict:
        return {"ts": d.ts, "kind": d.kind, "rule": d.rule, "message": d.message}

    return {
        "target": {"id": plan.target.id, "pack_id": plan.target.pack_id, "version": plan.target.version,
                   "status": plan.target.status},
        "digest": plan.digest,
        "accounts": [{
            "id": mv.account.id, "external_id": mv.account.external_id, "phase": mv.account.phase,
            "from_version": {"id": mv.from_version.id, "version": mv.from_version.version},
            "status_now": mv.status_now, "status_after": mv.status_after, "events_replayed": mv.events,
            "decisions_lost": [old(d) for d in mv.lost], "decisions_gained": [new(d) for d, _ in mv.gained],
            "problem": mv.problem,
        } for mv in plan.moves],
        "changed": sum(1 for mv in plan.moves if mv.changed),
        "problems": len(plan.problems),
    }


__all__ = ["MAX_ACCOUNTS", "Move", "Plan", "Selection", "apply", "plan_view", "preview", "replay_history",
           "target_version"]
