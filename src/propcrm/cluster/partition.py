"""A partition's evaluation, without I/O of the bus: take it over from its checkpoint, apply batches of
stream messages, commit each batch in one transaction fenced on the checkpoint.

Everything here is synchronous and runs on the worker's single processing thread.

**Takeover.** The checkpoint row (``cluster_checkpoints``) gives ``seq``, the last stream sequence
whose effects are committed, and ``state_seq``, the position of the partition's last state snapshot
(the accounts' states in ``account_states`` and the engine context — news calendar, reference prices,
last clock per firm — in the row). Both are read in one snapshot of the database. The worker reads
the stream from ``state_seq`` + 1 and re-applies messages up to ``seq`` silently: the engine is
deterministic, so the states come out exactly as they were and the effects it regenerates, already
committed, are dropped.

**A batch** is a list of messages of one or more partitions. Every event goes through the same
:class:`~propcrm.engine.runner.Engine` as ``propcrm replay`` (one per firm in the partition, since
clock and news events fan out to a firm's accounts). Then one transaction writes the checkpoints
(``UPDATE … SET seq = new WHERE seq = old``: if another worker committed meanwhile — this worker's
lease ran out — nothing matches, the whole transaction is rolled back and the partition is reloaded
or given up), the decisions, audit entries, outbox rows and status changes
(:func:`propcrm.services.evaluation.write_outcomes`), the dead letters and, for at most one partition
whose snapshot is due (every ``snapshot_interval_s``), the states of its accounts that changed since
its last snapshot. A message at or below a partition's position is a redelivery and is skipped: every
event's effect happens exactly once.

**One account never holds up another.** The state of every account a batch touches is kept as it was
before the batch. When an account's events raise while evaluated, leave it beyond what it can hold
(:func:`~propcrm.services.evaluation.state_problem`), or its effects are refused by the database (the
write is retried in halves, each in a savepoint: :func:`~propcrm.services.evaluation.write_isolated`),
that account goes back to its state before the batch and its events of the batch are set aside — dead
letters and quarantine entries with the reason — while the batch commits for everyone else. A takeover
skips the events dead-lettered in the range it replays silently, so the rebuilt states are the ones
the committed effects came from. Only a failure of the database itself (or a fence) fails the batch.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import msgspec
from sqlalchemy import BigInteger, Integer, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ..adapters.bus.partitions import HEADER_FIRM, HEADER_ONCE, HEADER_PUBLISHED, HEADER_SOURCE, partition_of
from ..adapters.db import models as m
from ..adapters.db.models_cluster import DeadLetter, PartitionCheckpoint
from ..adapters.settings import current
from ..domain.decisions import Decision
from ..domain.events import DECODER, Price
from ..domain.market import Market, SymbolTable, parse_symbol_table
from ..domain.program import PhaseProgram
from ..engine.runner import Engine
from ..engine.evaluate import copy_state
from ..services.catalog import PackCache
from ..services.ingest import ahead_of_clock, max_ahead_from_env, quarantine_lines
from ..services import audit
from ..engine.lows import Zone
from ..services import near_breach
from ..services.payouts import SOURCE as PAYOUT_SOURCE, WITHDRAWAL_APPLIED
from ..services.equity_points import point_of
from ..services.trades import PROJECTED_EVENTS
from .once import RecentIds, window_from_env
from ..services.outcomes import (
    RESEND,
    STATE_DECODER,
    SYSTEMIC_ERRORS,
    AccountOutcome,
    AccountRef,
    clean_reason,
    error_text,
    outcome_for,
    state_problem,
    upsert_states,
    write_isolated,
    write_outcomes,
)

log = logging.getLogger("propcrm.cluster")

ONCE_SOURCES = frozenset({PAYOUT_SOURCE})
"""Sources whose events the partition worker applies at most once by event id (the engines run without
id de-duplication, event ids being unique per source only): a payout's withdrawal must never be taken
twice, however often it is published."""

UTC = dt.timezone.utc
_CHUNK = 1000


class FirmContext(msgspec.Struct):
    market: Market
    last_clock: dt.datetime | None = None
    # ids of the events applied once by id (payout withdrawals): kept with the snapshot, so a takeover's
    # replay rebuilds exactly the set the live run had
    once: list[str] = []
    # the recent ids of platform connectors' events per account (cluster/once.py), for the same reason
    recent: dict[str, list] = {}


class PartitionContext(msgspec.Struct):
    firms: dict[str, FirmContext] = {}


_CONTEXT_DECODER = msgspec.msgpack.Decoder(PartitionContext)
_CONTEXT_ENCODER = msgspec.msgpack.Encoder()


class Fenced(RuntimeError):
    """Another worker committed this partition since we loaded it: our lease had run out."""


@dataclass
class StreamMessage:
    """What the processing thread needs of a NATS message (no nats-py types cross the thread)."""

    partition: int
    seq: int
    headers: dict[str, str]
    body: bytes
    #: the log position of each line when the log numbers events one by one (the table log joins
    #: consecutive rows into one message whose ``seq`` is its last row's): decisions and trades link to
    #: their own line's; ``None`` (JetStream): the message's ``seq`` is the link
    seqs: list[int] | None = None


@dataclass
class PartitionRun:
    """A partition held in memory. ``seq``: effects (decisions, audit, outbox, statuses) committed up to
    here. ``applied``: the engines reflect the stream up to here (≥ ``seq`` once caught up; after a
    takeover it starts at the last state snapshot, and messages up to ``seq`` are replayed silently).
    ``dirty``: accounts whose state changed since the last snapshot. ``stale``: a batch on this run
    rolled back after its events went through the engines, which are therefore ahead of the database:
    the run must be taken over again, never committed or snapshotted."""

    partition: int
    seq: int
    applied: int
    engines: dict[str, Engine] = field(default_factory=dict)
    epoch: int = 0
    dirty: dict[tuple[str, str], AccountOutcome] = field(default_factory=dict)
    last_snapshot: float = field(default_factory=time.monotonic)
    stale: bool = False
    # (stream seq, event id) dead-lettered between the last snapshot and the committed position: a
    # takeover's silent replay skips them, as the live run did
    skip: set[tuple[int, str]] = field(default_factory=set)
    # firm -> ids of the events applied once by id (:data:`ONCE_SOURCES`): a re-publication past the
    # stream's de-duplication window is dropped here
    once: dict[str, set[str]] = field(default_factory=dict)
    # firm -> the recent ids of the events published by platform connectors (HEADER_ONCE): a re-read or
    # re-published one is dropped (cluster/once.py)
    recent: dict[str, RecentIds] = field(default_factory=dict)
    # firm -> the version of the symbol table its engine marks with (:meth:`Directory.symbols_at`):
    # a batch that finds another version stored gives the engine that one first
    symbols: dict[str, object] = field(default_factory=dict)


@dataclass
class BatchResult:
    events: int = 0
    messages: int = 0
    skipped: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    committed: dict[int, int] = field(default_factory=dict)  # partition -> new seq
    latencies: list[tuple[float, int]] = field(default_factory=list)  # (seconds since publish, events)
    failed: set[int] = field(default_factory=set)
    #: partitions left out of the commit because an account of theirs was rewritten outside the driver
    #: meanwhile (``generations``): nothing of them committed; take them over again and redo
    redo: set[int] = field(default_factory=set)
    error: str | None = None
    commit_seconds: float = 0.0
    set_aside: dict[tuple[str, str], str] = field(default_factory=dict)  # (firm, account) -> why


@dataclass
class _Touched:
    """An account a batch changed: its state before the batch (``None``: it had none) and the messages
    that carried its events, so that it can be put back and its events set aside."""

    run: PartitionRun
    before: object
    program: object
    messages: list[StreamMessage] = field(default_factory=list)
    problem: str | None = None


class Directory:
    """The accounts the worker may meet and their compiled programs (cached; new accounts are
    looked up on first sight)."""

    def __init__(self, sessions: sessionmaker[Session], partitions: int) -> None:
        self.sessions = sessions
        self.partitions = partitions
        self.by_key: dict[tuple[str, str], AccountRef] = {}
        self.members: dict[int, list[AccountRef]] = {}
        self.max_id = 0
        self._packs = PackCache(size=None)  # this stream's database's versions, compiled once
        self._missing: dict[tuple[str, str], float] = {}
        self.problems: dict[tuple[str, str], str] = {}  # accounts whose rule pack could not be compiled
        self._failed: dict[tuple[str, str], float] = {}
        self._symbol_tables: dict[str, tuple[bytes | None, SymbolTable | None]] = {}

    def refresh(self, session: Session) -> None:
        rows = session.execute(
            select(m.Account.id, m.Account.firm_id, m.Account.external_id, m.Account.platform, m.Account.login,
                   m.Account.trader_id, m.Account.pack_version_id, m.Account.phase, m.Account.status)
            .where(m.Account.id > self.max_id).order_by(m.Account.id)
        ).all()
        for row in rows:
            self._add(AccountRef(*row))

    def _add(self, ref: AccountRef) -> None:
        self.by_key[(ref.firm_id, ref.external_id)] = ref
        self.members.setdefault(partition_of(ref.firm_id, ref.external_id, self.partitions), []).append(ref)
        self.max_id = max(self.max_id, ref.id)

    def in_partition(self, partition: int) -> list[AccountRef]:
        return list(self.members.get(partition, ()))

    def get(self, firm_id: str, external_id: str) -> AccountRef | None:
        ref = self.by_key.get((firm_id, external_id))
        if ref is not None:
            return ref
        key = (firm_id, external_id)
        if time.monotonic() - self._missing.get(key, -1e9) < 5.0:
            return None
        with self.sessions() as session:
            self.refresh(session)
        ref = self.by_key.get(key)
        if ref is None:
            self._missing[key] = time.monotonic()
        return ref

    def program(self, ref: AccountRef) -> PhaseProgram:
        def load(version_id: int) -> m.RulePackVersion | None:
            with self.sessions() as session:
                row = session.get(m.RulePackVersion, version_id)
                assert row is not None, f"account {ref.external_id}: no rule pack version {version_id}"
                session.expunge(row)
                return row

        return self._packs.by_id(ref.pack_version_id, load).phase(ref.phase)

    def symbols(self, firm_id: str) -> SymbolTable | None:
        """The firm's symbol table (None: it has none, no position is marked to market), parsed once
        per stored version — what the embedded worker reads (``services.symbols``)."""
        return self.symbols_at(firm_id)[0]

    def symbols_at(self, firm_id: str) -> tuple[SymbolTable | None, object]:
        """The firm's symbol table and its version (what :meth:`symbol_versions` reports for it), read
        together so that a change between the two reads cannot be missed."""
        with self.sessions() as session:
            row = session.get(m.SymbolTable, firm_id)
            body = row.body if row is not None else None
            version = (row.updated_at, row.symbols) if row is not None else None
        cached = self._symbol_tables.get(firm_id)
        if cached is None or cached[0] != body:
            cached = self._symbol_tables[firm_id] = (body, parse_symbol_table(body) if body is not None else None)
        return cached[1], version

    def symbol_versions(self, firm_ids: list[str]) -> dict[str, object]:
        """The stored version of each firm's symbol table (``None``: it has none) — one indexed read
        of two columns, never the bodies."""
        versions: dict[str, object] = dict.fromkeys(firm_ids)
        with self.sessions() as session:
            for start in range(0, len(firm_ids), _CHUNK):
                for firm_id, updated_at, count in session.execute(
                    select(m.SymbolTable.firm_id, m.SymbolTable.updated_at, m.SymbolTable.symbols)
                    .where(m.SymbolTable.firm_id.in_(firm_ids[start : start + _CHUNK]))
                ):
                    versions[firm_id] = (updated_at, count)
        return versions

    def program_for(self, firm_id: str):
        def resolve(external_id: str) -> PhaseProgram | None:
            ref = self.get(firm_id, external_id)
            if ref is None:
                return None
            failed_at = self._failed.get((firm_id, external_id))
            if failed_at is not None and time.monotonic() - failed_at < 30.0:
                return None  # tried moments ago: not compiled again for every event
            try:
                return self.program(ref)
            except SYSTEMIC_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - its events are refused one by one, with this reason
                self._failed[(firm_id, external_id)] = time.monotonic()
                self.problems[(firm_id, external_id)] = (
                    f"rule pack version {ref.pack_version_id} of account {external_id} cannot be used "
                    f"({error_text(exc)})")
                return None

        return resolve


class PartitionStore:
    """Takeover and batch commits for the partitions of one stream."""

    def __init__(self, sessions: sessionmaker[Session], stream: str, partitions: int, worker_id: str, *,
                 snapshot_interval_s: float = 2.0, snapshot_max_dirty: int = 20_000,
                 max_ahead: dt.timedelta | None = None, vector: bool | None = None,
                 symbols_check_s: float = 1.0, commit_hook=None, generations: dict[int, int] | None = None) -> None:
        self.sessions = sessions
        # account id -> ``account_states.generation`` of the state the engines hold (a driver that shares
        # the database with staff writes: a cleared breach, a re-bind bump it). When given, ``take`` fills
        # it, and a batch commits an account's state and effects only if the stored generation is still
        # that one (checked under the account's row lock in the batch's transaction): otherwise the
        # account's partition is left out of the commit (``BatchResult.redo``) to be taken over and redone.
        self.generations = generations
        # The event log's adapter: ``commit_hook(session, ranges, dead)`` runs in every batch's transaction
        # before its dead letters are written (``ranges``: partition -> (old, new) position; ``dead``: the
        # batch's dead letters, ``account`` still in them) — the table log marks its rows evaluated there.
        self.commit_hook = commit_hook
        # a firm's symbol table changed through the API or an import reaches the running partitions:
        # at most every ``symbols_check_s``, a batch reads the tables' versions (not their bodies) and
        # gives an engine whose table is older the stored one before it applies anything
        self.symbols_check_s = symbols_check_s
        self._symbols_checked = -1e18
        # ticks screened in integers (engine.marking): the same decisions and states as the exact
        # path; the states then lag the ticks until settled, which this store does before it reads them.
        # It pays from ~20 holders per tick per partition (docs/cluster.md); PROPCRM_VECTOR_TICKS=0: off
        self.vector = current().vector_ticks if vector is None else vector
        self.snapshot_interval_s = snapshot_interval_s
        self.snapshot_max_dirty = snapshot_max_dirty
        self.stream = stream
        self.partitions = partitions
        self.worker_id = worker_id
        self.directory = Directory(sessions, partitions)
        self._home: dict[tuple[str, str], int] = {}  # (firm, account) -> partition, cached
        self.max_ahead = max_ahead_from_env() if max_ahead is None else max_ahead
        self._applied_once: list[dict] = []  # a batch's once-only events applied (audited with its commit)
        self.once_window_s = window_from_env()  # platform events' once-by-id window (cluster/once.py)
        self._zones: dict[str, tuple[float, Zone | None]] = {}  # firm → (until, its near-breach alert distance)

    # ------------------------------------------------------------------ takeover
    def take(self, partition: int, epoch: int = 0) -> PartitionRun:
        with self.sessions.begin() as session:
            make = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
            session.execute(
                make(PartitionCheckpoint.__table__)
                .values(stream=self.stream, partition=partition, seq=0, state_seq=0, updated_at=dt.datetime.now(UTC))
                .on_conflict_do_nothing(index_elements=["stream", "partition"])
            )
        with self.sessions() as session:
            if session.get_bind().dialect.name == "postgresql":  # the checkpoint and the states: one snapshot
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            checkpoint = session.get(PartitionCheckpoint, (self.stream, partition))
            assert checkpoint is not None
            run = PartitionRun(partition, checkpoint.seq, checkpoint.state_seq, epoch=epoch)
            run.skip = {(seq, event_id) for seq, event_id in session.execute(
                select(DeadLetter.stream_seq, DeadLetter.event_id).where(
                    DeadLetter.stream == self.stream, DeadLetter.partition == partition,
                    DeadLetter.stream_seq > checkpoint.state_seq, DeadLetter.stream_seq <= checkpoint.seq,
                    DeadLetter.event_id.is_not(None)))}
            context = _CONTEXT_DECODER.decode(checkpoint.context) if checkpoint.context else PartitionContext()
            self.directory.refresh(session)
            refs = {ref.id: ref for ref in self.directory.in_partition(partition)}
            ids = sorted(refs)
            loaded: list[tuple[AccountRef, bytes]] = []
            for start in range(0, len(ids), _CHUNK):
                # statuses fresh from the database: a cached one may be from a batch that rolled back
                for account_id, status in session.execute(
                    select(m.Account.id, m.Account.status).where(m.Account.id.in_(ids[start : start + _CHUNK]))
                ):
                    refs[account_id].status = status
                rows = session.execute(
                    select(m.AccountState.account_id, m.AccountState.state, m.AccountState.generation)
                    .where(m.AccountState.account_id.in_(ids[start : start + _CHUNK]))
                ).all()
                loaded.extend((refs[account_id], blob) for account_id, blob, _ in rows)
                if self.generations is not None:  # (the states' own: read in the same snapshot)
                    self.generations.update((account_id, generation or 0) for account_id, _, generation in rows)
        # programs are compiled after the read transaction: on SQLite a second session would wait
        # for the first one's lock
        for ref, blob in loaded:
            engine = self._engine(run, ref.firm_id)
            engine.states[ref.external_id] = STATE_DECODER.decode(blob)
            engine.programs[ref.external_id] = self.directory.program(ref)
        for firm_id, firm in context.firms.items():
            engine = self._engine(run, firm_id)
            engine.market = firm.market
            engine.last_clock = firm.last_clock
            if firm.once:
                run.once[firm_id] = set(firm.once)
            if firm.recent:
                run.recent[firm_id] = RecentIds.load(firm.recent, window_s=self.once_window_s)
        for firm_id, engine in run.engines.items():
            # the firm's table as stored now, and the index of the positions ticks move: the states
            # above were put in without it
            table, run.symbols[firm_id] = self.directory.symbols_at(firm_id)
            engine.set_symbols(table)
        return run

    def _engine(self, run: PartitionRun, firm_id: str) -> Engine:
        engine = run.engines.get(firm_id)
        if engine is None:
            # dedupe off: event ids are unique per source only; a retried request is dropped by
            # JetStream's de-duplication, a redelivered message by the checkpoint
            engine = run.engines[firm_id] = Engine(self.directory.program_for(firm_id), dedupe=False,
                                                   vector=self.vector)
            table, run.symbols[firm_id] = self.directory.symbols_at(firm_id)
            engine.set_symbols(table)  # positions are marked to market with it
        engine.watch_lows(self._zone(firm_id))  # the batch's worst points, for the near-breach alerts
        return engine

    def _refresh_symbols(self, batch: list[tuple[PartitionRun, list[StreamMessage]]], now: float) -> int:
        """Give every engine of the batch's runs whose firm's symbol table changed since it was read the
        stored table (re-indexing the holders; pending screened marks are settled first), before the
        batch's messages. Returns how many engines changed table. Rate-limited to ``symbols_check_s``."""
        if now - self._symbols_checked < self.symbols_check_s:
            return 0
        self._symbols_checked = now
        firms = sorted({firm_id for run, _ in batch for firm_id in run.engines})
        if not firms:
            return 0
        stored = self.directory.symbol_versions(firms)
        changed = 0
        for run, _ in batch:
            for firm_id, engine in run.engines.items():
                if run.symbols.get(firm_id) != stored[firm_id]:
                    table, run.symbols[firm_id] = self.directory.symbols_at(firm_id)
                    engine.set_symbols(table)
                    changed += 1
                    log.info("partition %d: firm %s's symbol table changed; its engine uses the new one "
                             "from stream seq > %d", run.partition, firm_id, run.applied)
        return changed

    def _zone(self, firm_id: str) -> Zone | None:
        """The firm's near-breach alert distance, read at most every ``near_breach.SETTINGS_TTL`` seconds."""
        now = time.monotonic()
        cached = self._zones.get(firm_id)
        if cached is None or cached[0] <= now:
            with self.sessions() as session:
                cached = self._zones[firm_id] = (now + near_breach.SETTINGS_TTL,
                                                 near_breach.zone_of(session, firm_id))
        return cached[1]

    def _lows(self, run: PartitionRun, outcomes: dict) -> None:
        """Hand each account's worst points of the batch to its outcome (an account only a tick moved gets
        an outcome of its own: it has no decision, but it may have dipped)."""
        for firm_id, engine in run.engines.items():
            if engine.lows is None:
                continue
            for (firm, _), outcome in outcomes.items():  # watched: no point is no alert (not the end state)
                if firm == firm_id and outcome.lows is None:
                    outcome.lows = []
            for external_id, points in engine.drain_lows().items():
                key = (firm_id, external_id)
                outcome = outcomes.get(key)
                if outcome is None:
                    ref, st, dirty = self.directory.get(firm_id, external_id), engine.state(external_id), \
                        run.dirty.get(key)
                    if ref is None or st is None or dirty is None:
                        continue
                    outcome = outcomes[key] = outcome_for(ref, st, engine.programs[external_id], dirty.last_seq, [],
                                                          dirty.status_ts)
                outcome.lows = [*(outcome.lows or ()), *points]

    # ------------------------------------------------------------------ batches
    def apply(self, batch: list[tuple[PartitionRun, list[StreamMessage]]], *, snapshot: bool = False) -> BatchResult:
        """Apply and commit a batch. On a failure of the database (or a fence) nothing is committed and
        the batch's partitions are listed in ``failed``: their in-memory engines are ahead of the
        database and must be taken over again. An account whose events cannot be evaluated or stored
        is set aside (``set_aside``) and the rest commits. ``snapshot`` forces a state snapshot of
        every partition in the batch."""
        result = BatchResult()
        outcomes: dict[tuple[str, str], AccountOutcome] = {}
        dead: list[dict] = []
        plans: list[_Plan] = []
        published: list[tuple[int, int]] = []
        touched: dict[tuple[str, str], _Touched] = {}
        self._applied_once: list[dict] = []
        now = time.monotonic()
        stale = sorted(run.partition for run, _ in batch if run.stale)
        if stale:  # its engines are ahead of its checkpoint: committing it would apply events twice
            result.failed = {run.partition for run, _ in batch}
            result.error = f"partitions {stale}: a batch rolled back on this run; take the partition over again"
            return result
        try:
            self._refresh_symbols(batch, now)
            for run, messages in batch:
                plan = _Plan(run, run.seq, run.seq, run.applied)
                for message in messages:
                    if message.seq <= plan.applied:
                        result.skipped += 1  # a redelivery: already reflected
                        continue
                    silent = message.seq <= run.seq  # replay after a takeover: effects committed already
                    events = self._apply_message(run, message, outcomes, dead, touched, silent=silent)
                    plan.applied = message.seq
                    if silent:
                        for engine in run.engines.values():
                            engine.drain_lows()  # the replayed past alerted when it was live
                        continue
                    plan.new = message.seq
                    result.messages += 1
                    result.events += events
                    stamp = message.headers.get(HEADER_PUBLISHED, "")
                    if stamp.isdigit():
                        published.append((int(stamp), events))
                plan.snapshot = snapshot
                if plan.new != plan.old or plan.snapshot:
                    plans.append(plan)
                self._lows(run, outcomes)
            for run, _ in batch:  # the states as the exact path has them: checked, stored, snapshotted
                for engine in run.engines.values():
                    engine.settle()
            for key, mark in touched.items():  # what no account can hold is set aside before any write
                if mark.problem is None:
                    state = mark.run.engines[key[0]].states.get(key[1])
                    problem = state_problem(state) if state is not None else None
                    if problem is not None:
                        mark.problem = f"not applied: {problem}; nothing of the events of {key[1]} in this " \
                                       "batch was applied"
            for key in [key for key, mark in touched.items() if mark.problem is not None]:
                self._put_back(key, touched[key], outcomes, dead, result)
            if not snapshot:
                # At most one partition's snapshot per batch, the most overdue: snapshots are spread over
                # the batches instead of all landing in one long transaction.
                due = [plan for plan in plans if plan.run.dirty and (
                    now - plan.run.last_snapshot >= self.snapshot_interval_s
                    or len(plan.run.dirty) >= self.snapshot_max_dirty)]
                if due:
                    min(due, key=lambda plan: plan.run.last_snapshot).snapshot = True
            if not plans:
                self._settle(batch, [], result)
                return result
            started = time.perf_counter()
            with self.sessions.begin() as session:
                if self.generations is not None:
                    plans = self._hold_generations(session, batch, plans, outcomes, dead, touched, result)
                effects = list(outcomes.values())
                for outcome, problem in write_isolated(session, effects, _write_effects, account_of=lambda o: o.account):
                    key = (outcome.account.firm_id, outcome.account.external_id)
                    touched[key].problem = f"not applied: the events of {key[1]} in this batch could not be " \
                                           f"stored ({problem}); nothing of them was applied"
                    self._put_back(key, touched[key], outcomes, dead, result)
                applied = [entry for entry in self._applied_once
                           if (entry["firm_id"], entry["after"]["account"]) not in result.set_aside]
                if applied:  # in the batch's transaction: recorded exactly when the withdrawal is committed
                    audit.append_many(session, applied)
                self._snapshot(session, plans)
                self._advance(session, plans)
                if self.commit_hook is not None:
                    self.commit_hook(session, {plan.run.partition: (plan.old, plan.new) for plan in plans}, dead)
                if dead:
                    quarantined = [row for row in map(self._quarantine_row, dead) if row is not None]
                    session.execute(insert(DeadLetter.__table__), dead)
                    if quarantined:
                        quarantine_lines(session, quarantined)
            result.commit_seconds = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 - a failed batch is retried from the checkpoint
            for run, _ in batch:
                run.stale = True
            result.failed = {run.partition for run, _ in batch}
            result.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return result
        self._settle(batch, plans, result)
        committed_ns = time.time_ns()
        result.latencies = [((committed_ns - stamp) / 1e9, events) for stamp, events in published]
        result.dead_letters = len(dead)
        for outcome in outcomes.values():
            for decision, _ in outcome.decisions:
                result.decisions[decision.kind] = result.decisions.get(decision.kind, 0) + 1
        return result

    def _hold_generations(self, session: Session, batch, plans: list[_Plan], outcomes: dict, dead: list[dict],
                          touched: dict, result: BatchResult) -> list[_Plan]:
        """First thing in a batch's transaction: lock the rows of the accounts whose state or effects it
        writes (``accounts``, ``FOR UPDATE`` in id order on PostgreSQL — the order staff writes lock them
        in; SQLite's transaction holds the database's write lock already) and compare their stored
        ``generation`` with the one the engines hold. A partition with an account rewritten meanwhile is
        left out of this commit whole — its outcomes, dead letters, once-only audit entries, checkpoint
        and rows' statuses — and marked stale: it is taken over again (the rewritten state read) and its
        messages redone, so the account's events are decided once, from the rewritten state. Returns the
        plans that commit."""
        keys = {key: mark.run.partition for key, mark in touched.items()}
        for plan in plans:
            keys.update((key, plan.run.partition) for key in plan.run.dirty if plan.snapshot or key in outcomes)
        for key in outcomes:
            keys.setdefault(key, partition_of(key[0], key[1], self.partitions))
        ids: dict[int, int] = {}
        for key, partition in keys.items():
            ref = self.directory.by_key.get(key)  # (no lookup inside the transaction)
            if ref is not None:
                ids[ref.id] = partition
        ordered = sorted(ids)
        postgres = session.get_bind().dialect.name == "postgresql"
        stale: set[int] = set()
        for start in range(0, len(ordered), _CHUNK):
            chunk = ordered[start : start + _CHUNK]
            if postgres:
                session.execute(select(m.Account.id).where(m.Account.id.in_(chunk)).order_by(m.Account.id)
                                .with_for_update()).all()
            for account_id, generation in session.execute(
                    select(m.AccountState.account_id, m.AccountState.generation)
                    .where(m.AccountState.account_id.in_(chunk))):
                if (generation or 0) != self.generations.get(account_id, 0):
                    stale.add(ids[account_id])
        if not stale:
            return plans
        log.info("partition store: partitions %s hold an account rewritten outside the driver since it was "
                 "read; they are left out of this commit and redone from the stored state", sorted(stale))
        result.redo = stale
        for run, _ in batch:
            if run.partition in stale:
                run.stale = True
        for key in [key for key, partition in keys.items() if partition in stale]:
            outcomes.pop(key, None)
        dead[:] = [letter for letter in dead if letter["partition"] not in stale]
        self._applied_once = [entry for entry in self._applied_once if entry["after"]["partition"] not in stale]
        return [plan for plan in plans if plan.run.partition not in stale]

    def _snapshot(self, session: Session, plans: list[_Plan]) -> None:
        """The states of the partitions whose snapshot is due, all or none per batch: a snapshot is only
        right whole (its position is the partition's). The states were checked before (every account a
        batch changes is: :func:`~propcrm.services.evaluation.state_problem`); should the database still
        refuse one, the snapshot waits for the next batch — effects commit all the same — and says so."""
        states = [outcome for plan in plans if plan.snapshot for outcome in plan.run.dirty.values()]
        if not states:
            return
        try:
            with session.begin_nested():
                upsert_states(session, states, dt.datetime.now(UTC))
        except SYSTEMIC_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - the partitions keep going; their snapshot is retried
            for plan in plans:
                plan.snapshot = False
            log.error("partition store: a snapshot of partitions %s could not be written (%s); it is retried "
                      "with a later batch", sorted(plan.run.partition for plan in plans), error_text(exc))

    def _put_back(self, key: tuple[str, str], mark: _Touched, outcomes: dict, dead: list[dict],
                  result: BatchResult) -> None:
        """Set an account's events of the batch aside: its state and effects go back to before the
        batch, and each of its events becomes a dead letter (and a quarantine entry) with the reason."""
        firm_id, external_id = key
        run = mark.run
        engine = run.engines[firm_id]
        # through the engine: its index of holders (and the vector screen's rows) follow the state put back
        if mark.before is None:
            engine.drop(external_id)
            run.dirty.pop(key, None)
        else:
            engine.adopt(mark.before, mark.program)
            ref = self.directory.get(firm_id, external_id)
            if ref is not None:
                run.dirty[key] = AccountOutcome(ref, mark.before, run.seq, [], None, mark.before.last_ts)
        outcomes.pop(key, None)
        reason = clean_reason(mark.problem or "not applied")
        result.set_aside[key] = reason
        log.warning("partition %d: set aside the events of account %s (firm %s): %s", run.partition, external_id,
                    firm_id, reason)
        for message in mark.messages:
            if message.seq <= run.seq:
                continue  # replayed silently: its effects (or its dead letters) are committed already
            source = message.headers.get(HEADER_SOURCE)
            for number, raw in enumerate(message.body.split(b"\n"), start=1):
                try:
                    event = DECODER.decode(raw)
                except Exception:  # noqa: BLE001 - dead-lettered when the message was read
                    continue
                if getattr(event, "account", None) != external_id:
                    continue
                dead.append({"stream": self.stream, "partition": run.partition, "stream_seq": message.seq,
                             "line": number, "firm_id": firm_id[:64], "source": (source or None) and source[:64],
                             "event_id": event.id[:200], "reason": reason, "body": raw,
                             "created_at": dt.datetime.now(UTC), "account": external_id})

    def _quarantine_row(self, letter: dict) -> dict | None:
        """A dead letter as the firm's risk officers see it: only for an account the firm has (a
        message can name any firm; the quarantine belongs to one that exists)."""
        account = letter.pop("account", None)
        if account is None or not letter["firm_id"] or not letter["source"]:
            return None
        if (letter["firm_id"], account) not in self.directory.by_key:  # (no lookup inside the transaction)
            return None
        return {"firm_id": letter["firm_id"], "source": letter["source"], "line": letter["line"],
                "body": letter["body"], "reason": letter["reason"], "received_at": letter["created_at"],
                "resolved_at": None}

    def _settle(self, batch, plans: list[_Plan], result: BatchResult) -> None:
        """After the commit: the runs' positions move; snapshotted runs start a clean slate."""
        planned = {id(plan.run): plan for plan in plans}
        for run, messages in batch:
            plan = planned.get(id(run))
            if plan is None:
                run.applied = max([run.applied] + [m.seq for m in messages if m.seq <= run.seq])
                continue
            run.seq, run.applied = plan.new, plan.applied
            result.committed[run.partition] = plan.new
            if plan.snapshot:
                run.dirty = {}
                run.last_snapshot = time.monotonic()

    def _advance(self, session: Session, plans: list[_Plan]) -> None:
        """Move the checkpoints from the sequence each run started at to the new one — all or nothing:
        a checkpoint that moved meanwhile (another worker committed) fences the whole batch off. A
        snapshot also records the position of the states and the engines' context."""
        now = dt.datetime.now(UTC)
        table = PartitionCheckpoint.__table__
        state_seqs = [plan.applied if plan.snapshot else None for plan in plans]
        contexts = [self._context(plan.run) if plan.snapshot else None for plan in plans]
        if session.get_bind().dialect.name == "postgresql":  # one statement for all partitions
            rows = func.unnest(
                bindparam("partitions", [plan.run.partition for plan in plans], type_=postgresql.ARRAY(Integer)),
                bindparam("olds", [plan.old for plan in plans], type_=postgresql.ARRAY(BigInteger)),
                bindparam("news", [plan.new for plan in plans], type_=postgresql.ARRAY(BigInteger)),
                bindparam("state_seqs", state_seqs, type_=postgresql.ARRAY(BigInteger)),
                bindparam("contexts", contexts, type_=postgresql.ARRAY(postgresql.BYTEA)),
            ).table_valued("partition", "old", "new", "state_seq", "context").render_derived(name="batch")
            moved = session.execute(
                update(table)
                .where(table.c.stream == self.stream, table.c.partition == rows.c.partition, table.c.seq == rows.c.old)
                .values(seq=rows.c.new, owner=self.worker_id, updated_at=now,
                        state_seq=func.coalesce(rows.c.state_seq, table.c.state_seq),
                        context=func.coalesce(rows.c.context, table.c.context))
                .returning(table.c.partition)
            ).scalars().all()
            if len(moved) != len(plans):
                lost = sorted({plan.run.partition for plan in plans} - set(moved))
                raise Fenced(f"partitions {lost}: another worker committed past this worker's position")
            return
        for plan, state_seq, context in zip(plans, state_seqs, contexts):
            values: dict = {"seq": plan.new, "owner": self.worker_id, "updated_at": now}
            if state_seq is not None:
                values["state_seq"] = state_seq
                values["context"] = context
            done = session.execute(
                update(table)
                .where(table.c.stream == self.stream, table.c.partition == plan.run.partition, table.c.seq == plan.old)
                .values(**values)
            )
            if done.rowcount != 1:
                raise Fenced(f"partition {plan.run.partition}: another worker committed past {plan.old}")

    @staticmethod
    def _context(run: PartitionRun) -> bytes:
        return _CONTEXT_ENCODER.encode(PartitionContext(firms={
            firm_id: FirmContext(engine.market.canonical(), engine.last_clock, sorted(run.once.get(firm_id, ())),
                                 run.recent[firm_id].dump() if firm_id in run.recent else {})
            for firm_id, engine in sorted(run.engines.items())
        }))

    def _apply_message(self, run: PartitionRun, message: StreamMessage, outcomes: dict, dead: list[dict],
                       touched_accounts: dict, *, silent: bool) -> int:
        """Feed one message's events to its firm's engine. Effects (decisions, status changes, dead
        letters) are collected unless ``silent``; changed states are always marked for the next
        snapshot, and the state each changed account had before the batch is kept in
        ``touched_accounts``. Returns the number of events fed."""
        firm_id = message.headers.get(HEADER_FIRM)
        source = message.headers.get(HEADER_SOURCE)

        def letter(reason: str, body: bytes, line: int | None = None, event_id: str | None = None,
                   account: str | None = None) -> None:
            if silent:
                return
            dead.append({"stream": self.stream, "partition": run.partition, "stream_seq": message.seq, "line": line,
                         "firm_id": (firm_id or None) and firm_id[:64], "source": (source or None) and source[:64],
                         "event_id": event_id and event_id[:200], "reason": clean_reason(reason), "body": body,
                         "created_at": dt.datetime.now(UTC), "account": account})

        if not firm_id or not source:
            letter("message without the Propcrm-Firm and Propcrm-Source headers", message.body)
            return 0
        engine = self._engine(run, firm_id)
        events = []
        lines_of: list[int] = []
        accounts: set[str] = set()
        ticked: set[str] = set()  # the symbols of the message's ticks
        global_events = False
        decode = DECODER.decode
        home = self._home
        skip = run.skip
        horizon = None if silent else dt.datetime.now(UTC) + self.max_ahead
        recent = None  # a platform connector's message: its events are applied once by id (cluster/once.py)
        if HEADER_ONCE in message.headers:
            recent = run.recent.get(firm_id)
            if recent is None:
                recent = run.recent[firm_id] = RecentIds(window_s=self.once_window_s)
        lines = message.body.split(b"\n")
        for number, raw in enumerate(lines, start=1):
            try:
                event = decode(raw)
            except Exception as exc:  # noqa: BLE001 - a bad line is dead-lettered whole, never half-applied
                if raw and not raw.isspace() and not silent:
                    letter(f"line {number}: not a valid event: {str(exc)[:300]}", raw, number, *_named(raw))
                continue
            if silent and (message.seq, event.id) in skip:
                continue  # dead-lettered when it was live: the replay skips it too
            account = getattr(event, "account", None)
            if horizon is not None:
                problem = ahead_of_clock(event, horizon, self.max_ahead)
                if problem is not None:
                    letter(f"line {number}: {problem}", raw, number, event.id, account)
                    continue
            if account is None:
                global_events = True
                if type(event) is Price:
                    ticked.add(event.symbol)
            else:
                p = home.get((firm_id, account))
                if p is None:
                    p = home[(firm_id, account)] = partition_of(firm_id, account, self.partitions)
                if p != run.partition:
                    letter(f"line {number}: account {account!r} belongs to partition {p}, not {run.partition}",
                           raw, number, event.id)
                    continue
            if source in ONCE_SOURCES and not self._first_time(run, firm_id, source, event, account, message, silent):
                continue
            if recent is not None and account is not None and not recent.first(account, event):
                if not silent:
                    log.debug("partition %d: event %s of platform source %s (firm %s) was applied already; the "
                             "repeat at stream sequence %d is dropped", run.partition, event.id, source, firm_id,
                             message.seq)
                continue
            if account is not None:
                accounts.add(account)
            events.append(event)
            lines_of.append(number)
        if not events:
            return 0
        states = engine.states
        if silent:  # replayed after a takeover: what it rebuilds is the committed past, never put back
            touched_accounts = {}
        # A tick moves its holders' states in place (inside their band) or in the vector screen's
        # integers: they are kept before it as an account's own events are, and marked for the snapshot.
        holders = sorted({a for symbol in ticked for a in engine.holders.get(symbol, ())})
        # each kept before an in-place update (the hot paths) can change it
        for account in (*accounts, *holders) if not silent else accounts:
            key = (firm_id, account)
            if key not in touched_accounts:
                st = engine.state(account)  # settled: the vector screen may hold it behind
                touched_accounts[key] = _Touched(run, None if st is None else copy_state(st), engine.programs.get(account))
        # a clock or news event replaces what it changes (nothing the screen holds behind is missing
        # here: a batch starts settled, and what a tick leaves pending is a holder kept above)
        before = dict(states) if global_events else None
        try:
            decisions = engine.feed(events, lines_of)
        except SYSTEMIC_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - the accounts of this message are set aside, the rest goes on
            error = error_text(exc)
            del engine.rejected[:]
            changed = set(accounts)
            if before is not None:
                changed.update(a for a, st in states.items() if before.get(a) is not st)
            for account in changed:
                self._touch(run, touched_accounts, (firm_id, account), before, message).problem = (
                    f"not applied: the events of {account} in this batch could not be evaluated ({error}); "
                    "nothing of them was applied")
            return len(events)
        refused = {problem.line for problem in engine.rejected}
        if engine.rejected:
            refused_ids = {problem.id for problem in engine.rejected}
            self._applied_once = [entry for entry in self._applied_once
                                  if not (entry["after"]["stream_seq"] == message.seq
                                          and entry["after"]["event"] in refused_ids)]
            if not silent:
                for problem in engine.rejected:
                    number = problem.line
                    raw = lines[number - 1] if number else b""
                    reason = f"{problem.kind}: {problem.reason}"
                    if problem.kind == "unknown_account" and (firm_id, problem.account) in self.directory.problems:
                        reason = f"not applied: {self.directory.problems[(firm_id, problem.account)]}"
                    elif problem.kind == "out_of_order":
                        reason += f"; {RESEND}"
                    letter(reason, raw, number, problem.id, problem.account)
            del engine.rejected[:]
        changed = set(accounts)
        if before is not None:
            changed.update(a for a, st in states.items() if before.get(a) is not st)
        trades: dict[str, list] = {}  # the accepted trade and login events per account (the projections)
        if not silent:
            for ev, number in zip(events, lines_of):
                if isinstance(ev, PROJECTED_EVENTS) and number not in refused:
                    trades.setdefault(ev.account, []).append((ev, message.seqs[number - 1] if message.seqs else None))
        seq_of = {} if message.seqs is None or not decisions else \
            {ev.id: message.seqs[number - 1] for ev, number in zip(events, lines_of)}
        by_account: dict[str, list[Decision]] = {}
        for decision in decisions:
            by_account.setdefault(decision.account, []).append(decision)
            changed.add(decision.account)
        for external_id in holders:  # moved by ticks in place: the snapshot must have them
            if external_id not in changed and external_id in states:
                ref = self.directory.get(firm_id, external_id)
                if ref is not None:
                    key = (firm_id, external_id)
                    self._touch(run, touched_accounts, key, before, message)
                    st = states[external_id]  # (settled with the batch, before anything reads it)
                    run.dirty[key] = AccountOutcome(ref, st, message.seq, [], None, st.last_ts or events[-1].ts)
        for external_id in changed:
            st = states.get(external_id)
            if st is None:
                continue  # unknown account: dead-lettered above
            ref = self.directory.get(firm_id, external_id)
            if ref is None:
                continue
            key = (firm_id, external_id)
            self._touch(run, touched_accounts, key, before, message)
            when = st.last_ts or events[-1].ts
            run.dirty[key] = AccountOutcome(ref, st, message.seq, [], None, when)
            if silent:
                continue
            fresh = outcome_for(ref, st, engine.programs[external_id], message.seq, [], when)
            outcome = outcomes.get(key)
            if outcome is None:
                outcome = outcomes[key] = fresh
            else:
                outcome.state, outcome.last_seq, outcome.status, outcome.status_ts = st, message.seq, fresh.status, when
            # each decision links to its event: the stream sequence of the message that carried it (one
            # stream holds every partition, so the sequence is unique) beside the decision's event id
            if message.seqs is None:
                outcome.decisions.extend((d, message.seq) for d in by_account.get(external_id, ()))
            else:  # each decision links to its own event's position in the log
                outcome.decisions.extend((d, seq_of.get(d.event_id, message.seq))
                                         for d in by_account.get(external_id, ()))
            outcome.trades.extend(trades.get(external_id, ()))
            if external_id in accounts or external_id in by_account:  # the chart's points (as the replay's)
                outcome.points.append(point_of(st, engine.programs[external_id], when, by_account.get(external_id, ())))
        return len(events)

    def _first_time(self, run: PartitionRun, firm_id: str, source: str, event, account: str | None,
                    message: StreamMessage, silent: bool) -> bool:
        """Whether an event of a once-only source is new (then it is remembered, and — when live — its
        application is audited in the batch's transaction); a repeat is dropped and logged, never
        dead-lettered (a quarantined copy could be re-submitted)."""
        seen = run.once.setdefault(firm_id, set())
        if event.id in seen:
            if not silent:
                log.warning("partition %d: event %s of source %s (firm %s) is applied already; the repeat at "
                            "stream sequence %d is dropped", run.partition, event.id, source, firm_id, message.seq)
            return False
        seen.add(event.id)
        if not silent and event.id.startswith("payout-") and event.id[7:].isdigit():
            self._applied_once.append(dict(
                actor="engine", action=WITHDRAWAL_APPLIED, entity="payout", entity_id=event.id[7:], firm_id=firm_id,
                ts=event.ts, after={"event": event.id, "account": account, "stream_seq": message.seq,
                                    "partition": run.partition}))
        return True

    @staticmethod
    def _touch(run: PartitionRun, touched_accounts: dict, key: tuple[str, str], before: dict | None,
               message: StreamMessage) -> _Touched:
        """The batch's mark of an account its events (or a firm-wide event) changed, with this message."""
        mark = touched_accounts.get(key)
        if mark is None:  # first changed by a firm-wide event: the state it replaced is the one before
            engine = run.engines[key[0]]
            mark = touched_accounts[key] = _Touched(run, (before or {}).get(key[1]), engine.programs.get(key[1]))
        if not mark.messages or mark.messages[-1] is not message:
            mark.messages.append(message)
        return mark


def _named(raw: bytes) -> tuple[str | None, str | None]:
    """The id and account a line names, if it is a JSON object with them (it may fail the event's
    checks): for a dead letter's quarantine entry."""
    try:
        fields = msgspec.json.decode(raw)
    except Exception:  # noqa: BLE001
        return None, None
    if not isinstance(fields, dict):
        return None, None
    event_id, account = fields.get("id"), fields.get("account")
    return (event_id if isinstance(event_id, str) else None), (account if isinstance(account, str) else None)


def _write_effects(session: Session, outcomes: list[AccountOutcome]) -> None:
    write_outcomes(session, outcomes, states=False)


@dataclass
class _Plan:
    run: PartitionRun
    old: int
    new: int
    applied: int
    snapshot: bool = False


__all__ = ["BatchResult", "Directory", "Fenced", "PartitionRun", "PartitionStore", "StreamMessage"]
