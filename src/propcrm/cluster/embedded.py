"""The embedded service's log driver: the scale-out workers' partition driver
(:class:`~propcrm.cluster.partition.PartitionStore`) over the ``raw_events`` table
(:class:`~propcrm.cluster.eventlog.TableLog`), in the ``propcrm serve`` process
(``PROPCRM_EMBEDDED_DRIVER=log``).

Engines stay in memory per partition between batches (the pass worker, ``services/evaluation.py``,
reads each account's events and state back and builds an engine per account per pass). A batch is
every row stored after the driver's position, up to ``batch`` rows, applied and committed in one
transaction with, besides what a partition batch commits (decisions with their ``event_seq``,
statuses, outbox, audit, trade and equity-point projections, near-breach alerts, dead letters and
quarantine, the checkpoint), the rows' own statuses: an account's row moves from ``pending`` to
``applied``, or to ``rejected`` with the reason when it is set aside (a firm-wide row stays ``stored``
unless it is refused for everyone). Payouts' "all events evaluated" check therefore reads the same
columns as with the pass worker.

**States.** ``PROPCRM_EMBEDDED_STATES=batch`` (default): every batch is also a state snapshot — the
states of the accounts it changed and the engines' context are written with it, so ``account_states``
(what the back office lists) is as fresh as the decisions, and a restart replays nothing.
``interval``: a snapshot every ``PROPCRM_SNAPSHOT_INTERVAL`` seconds as the scale-out workers do
(cheaper batches; the stored figures lag by up to the interval; docs/benchmarks.md has both).

**Restart.** The checkpoint (``cluster_checkpoints``, stream ``raw_events``) says how far effects are
committed; the states are those of the last snapshot; the rows in between are replayed silently
(:meth:`PartitionStore.take`). On the first start over a database the pass worker evaluated (states
stored, no checkpoint), that worker first catches every account up to the head of the log, and the
driver goes on from there with the stored states (see ``_bootstrap``).

**Staff writes.** A state rewritten outside the driver (a cleared breach, a re-bind: its
``account_states.generation`` moves) is taken over before the next batch (``_reload_changed``). One
rewritten after that check is caught by the batch itself: its transaction locks the rows of the accounts
it writes and compares their generation with the one held (``PartitionStore(generations=…)``); the
partitions holding such an account are left out of the commit, taken over again and redone at once, the
batch's other partitions committing (nothing half-applied, every event decided once).

One driver per database: the checkpoint fences a second one off (it would be taken over again and again).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time

import msgspec
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ..adapters.bus.partitions import HEADER_FIRM, HEADER_SOURCE, partition_of
from ..adapters.db import models as m
from ..adapters.db.models_cluster import PartitionCheckpoint
from ..adapters.settings import current
from ..domain.events import DECODER
from ..engine.runner import Engine
from ..services.evaluation import EvaluationWorker, PassReport
from ..services.ingest import quarantine_lines
from ..services.outcomes import STATE_DECODER, clean_reason
from .eventlog import TABLE_STREAM, TableLog
from .partition import FirmContext, PartitionContext, PartitionRun, PartitionStore, StreamMessage

log = logging.getLogger("propcrm.evaluation")
UTC = dt.timezone.utc
_CHUNK = 1000
#: rows joined into one message at most (the bus's messages hold up to 2,000 lines)
MESSAGE_ROWS = 2000
_LINE = re.compile(r"^line \d+: ")
_REDO = 5  # batches redone in a row within one pass at most (each needs a staff write to land in its window)


class LogDriver:
    """The partition driver over ``raw_events``; ``run_pass`` / ``run_until_idle`` as the pass worker's."""

    def __init__(self, sessions: sessionmaker[Session], *, partitions: int | None = None, batch: int = 5000,
                 states: str | None = None, snapshot_interval_s: float | None = None,
                 worker_id: str = "embedded") -> None:
        settings = current()
        self.sessions = sessions
        self.partitions = settings.embedded_partitions if partitions is None else partitions
        self.batch = batch
        self.with_batch = (settings.embedded_states if states is None else states) == "batch"
        self.log = TableLog(sessions, self.partitions)
        # account id -> account_states.generation of the state held; filled by the store's takeovers, checked
        # by its batches under the accounts' row locks (see the module's text: "Staff writes")
        self._generations: dict[int, int] = {}
        self.store = PartitionStore(
            sessions, TABLE_STREAM, self.partitions, worker_id,
            snapshot_interval_s=settings.snapshot_interval if snapshot_interval_s is None else snapshot_interval_s,
            commit_hook=self._mark, generations=self._generations)
        self.runs: dict[int, PartitionRun] = {}
        self.cursor = 0  # the log position read up to (every partition's messages up to here are applied)
        self._read = None  # the batch being applied: its LogRead (for the commit hook)
        self._lines: dict[tuple[int, int], list[int] | None] = {}  # (partition, message seq) -> its rows' seqs
        self.at_hole = False  # the last read stopped at a hole in seq that may still fill (PostgreSQL)

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        """Take every partition over (after a first start's bootstrap, see the module's text)."""
        self._bootstrap()
        self.runs = {p: self.store.take(p) for p in range(self.partitions)}
        self.cursor = min(run.applied for run in self.runs.values())

    def _reload_changed(self) -> int:
        """Take over again the states someone else rewrote since they were read (a cleared breach, a
        re-bind: ``account_states.generation`` moves, services/rebind.py's invalidation point) with the
        account's pack version, phase and status, before the next batch meets them — else the batch
        would go on from the engine's copy and write it back over theirs. Returns how many."""
        states = m.AccountState
        with self.sessions() as session:
            rows = session.execute(select(states.account_id, states.generation).where(states.generation > 0)).all()
            changed = [account_id for account_id, generation in rows if self._generations.get(account_id) != generation]
            if not changed:
                return 0
            found = session.execute(
                select(m.Account.id, m.Account.firm_id, m.Account.external_id, m.Account.pack_version_id,
                       m.Account.phase, m.Account.status, states.state, states.generation)
                .join(states, states.account_id == m.Account.id).where(m.Account.id.in_(changed[:_CHUNK]))).all()
        for row in found:
            ref = self.store.directory.get(row.firm_id, row.external_id)
            if ref is not None:
                ref.pack_version_id, ref.phase, ref.status = row.pack_version_id, row.phase, row.status
                run = self.runs[partition_of(row.firm_id, row.external_id, self.partitions)]
                engine = run.engines.get(row.firm_id)
                if engine is not None:
                    engine.settle()
                    engine.adopt(STATE_DECODER.decode(bytes(row.state)), self.store.directory.program(ref))
                    run.dirty.pop((row.firm_id, row.external_id), None)
                log.info("log driver: account %s (firm %s) was rewritten outside the driver; its stored state "
                         "is taken over", row.external_id, row.firm_id)
            self._generations[row.id] = row.generation
        return len(found)

    def _bootstrap(self) -> None:
        """The first start over a database the pass worker evaluated (states stored, no checkpoint): the
        pass worker catches every account up to the head of the log (eagerly: every firm clock and news
        event met), then the checkpoints start there, their states being the stored ones, with the
        engines' context — each firm's news calendar, last prices and last clock — rebuilt from its
        firm-wide rows alone (no account in the engines, so nothing is applied twice)."""
        with self.sessions() as session:
            known = session.scalar(select(PartitionCheckpoint.partition)
                                   .where(PartitionCheckpoint.stream == TABLE_STREAM).limit(1))
            evaluated = session.scalar(select(m.AccountState.account_id).limit(1))
        if known is not None or evaluated is None:
            return  # taken over before, or nothing evaluated yet: the log is read from its start
        pending = EvaluationWorker(self.sessions, lazy_clock=False).run_until_idle()
        head = self.log.head()
        firms: dict[str, Engine] = {}
        raw = m.RawEvent
        with self.sessions() as session:
            rows = session.execute(select(raw.firm_id, raw.body).where(
                raw.account_id.is_(None), raw.status != "rejected", raw.seq <= head).order_by(raw.seq))
            for firm_id, body in rows:
                try:
                    event = DECODER.decode(body)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    continue  # set aside when it was met
                engine = firms.get(firm_id)
                if engine is None:
                    engine = firms[firm_id] = Engine(_nobody, dedupe=False)
                engine.feed([event])
                del engine.rejected[:]
        context = msgspec.msgpack.encode(PartitionContext(firms={
            firm_id: FirmContext(engine.market.canonical(), engine.last_clock) for firm_id, engine in sorted(firms.items())}))
        log.info("log driver: first start over %d stored events (%d evaluated now by the pass worker); it goes on "
                 "from there with the stored states", head, pending.events)
        now = dt.datetime.now(UTC)
        with self.sessions.begin() as session:
            make = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
            session.execute(make(PartitionCheckpoint.__table__).values([
                {"stream": TABLE_STREAM, "partition": p, "seq": head, "state_seq": head, "context": context,
                 "updated_at": now}
                for p in range(self.partitions)]).on_conflict_do_nothing(index_elements=["stream", "partition"]))

    # ------------------------------------------------------------------ batches
    def run_pass(self) -> PassReport:
        report = PassReport()
        for _ in range(_REDO):  # a batch left a partition out (an account rewritten meanwhile): redo it now
            redo = self._pass(report)
            if not redo:
                break
        return report

    def _pass(self, report: PassReport) -> bool:
        """One batch, counted into ``report``; whether partitions were left out of it to be redone."""
        started = time.perf_counter()
        if not self.runs:
            self.start()
        self._reload_changed()
        read = self.log.read(self.cursor, self.batch)
        self.at_hole = read.hole
        if read.reached == self.cursor:
            return False
        if not read.messages:  # only rows set aside or holes: nothing to apply
            self.cursor = read.reached
            return False
        by_partition = self._join(read.messages)
        batch = [(self.runs[p], messages) for p, messages in sorted(by_partition.items())]
        self._lines = {(p, message.seq): message.seqs for p, messages in by_partition.items() for message in messages}
        self._read = read
        try:
            result = self.store.apply(batch, snapshot=self.with_batch)
        finally:
            self._read = None
        if result.failed:
            for p in result.failed:  # its engines are ahead of the database: take it over again
                self.runs[p] = self.store.take(p)
            self.cursor = min(run.applied for run in self.runs.values())
            raise RuntimeError(f"log driver: a batch failed and is retried ({result.error})")
        self.cursor = read.reached
        if result.redo:  # nothing of them committed: taken over (the rewritten states read) and read again
            for p in result.redo:
                self.runs[p] = self.store.take(p)
            self.cursor = min(run.applied for run in self.runs.values())
        report.events += result.events
        report.accounts += result.messages
        report.decisions += sum(result.decisions.values())
        for kind, n in result.decisions.items():
            report.by_kind[kind] = report.by_kind.get(kind, 0) + n
        report.rejected += result.dead_letters
        report.set_aside += len(result.set_aside)
        report.seconds += time.perf_counter() - started
        self.last_result = result
        return bool(result.redo)

    def _join(self, rows: list[StreamMessage]) -> dict[int, list[StreamMessage]]:
        """A partition's consecutive rows of one firm and source as one message (as ingestion batches a
        request's lines on the bus), its ``seq`` its last row's, each line's own in ``seqs``: the engines
        take a message's events together. A message never spans a partition's committed position or its
        snapshot's (what is replayed silently and what is applied stay apart however a restart reads)."""
        parts: dict[int, list[tuple[StreamMessage, list[int], list[bytes]]]] = {}
        for row in rows:
            run = self.runs[row.partition]
            joined = parts.setdefault(row.partition, [])
            if joined:
                last, seqs, bodies = joined[-1]
                if (len(seqs) < MESSAGE_ROWS and last.headers[HEADER_FIRM] == row.headers[HEADER_FIRM]
                        and last.headers[HEADER_SOURCE] == row.headers[HEADER_SOURCE]
                        and (seqs[-1] <= run.seq) == (row.seq <= run.seq)
                        and (seqs[-1] <= run.applied) == (row.seq <= run.applied)):
                    seqs.append(row.seq)
                    bodies.append(row.body)
                    continue
            joined.append((row, [row.seq], [row.body]))
        return {p: [StreamMessage(p, seqs[-1], first.headers, b"\n".join(bodies), seqs)
                    for first, seqs, bodies in joined] for p, joined in parts.items()}

    def run_until_idle(self, *, max_passes: int = 10_000) -> PassReport:
        total = PassReport()
        waited = 0
        for _ in range(max_passes):
            before = self.cursor if self.runs else -1
            report = self.run_pass()
            if self.cursor == before:
                if self.at_hole and waited < 200:  # a transaction that may fill it is still running
                    waited += 1
                    time.sleep(0.01)
                    continue
                break
            total.add(report)
        return total

    def _mark(self, session: Session, ranges: dict[int, tuple[int, int]], dead: list[dict]) -> None:
        """In the batch's transaction: the stored rows' statuses (see the module's text)."""
        read = self._read
        if read is None:
            return
        own = read.own
        rejected: dict[int, str] = {}
        quarantine: dict[int, dict] = {}
        for letter in dead:
            seqs, line = self._lines.get((letter["partition"], letter["stream_seq"])), letter.get("line")
            seq = seqs[line - 1] if seqs and line and line <= len(seqs) else letter["stream_seq"]
            letter["reason"] = row_reason(letter["reason"])  # (its quarantine entry's too)
            if seq in own:
                rejected.setdefault(seq, letter["reason"])
                if letter.get("account") is None and seq not in quarantine:  # (one with an account is already)
                    quarantine[seq] = letter
            elif letter.get("account") is None:  # a firm-wide row refused for everyone (it is in every partition)
                rejected.setdefault(seq, letter["reason"])
                quarantine.setdefault(seq, letter)
        applied = sorted({message.seq for message in read.messages
                          if message.seq in own and message.seq not in rejected
                          and _within(ranges.get(message.partition), message.seq)})
        table = m.RawEvent.__table__
        for start in range(0, len(applied), _CHUNK):
            session.execute(update(table).where(table.c.seq.in_(applied[start : start + _CHUNK]))
                            .values(status="applied"))
        if rejected:
            session.execute(update(table).where(table.c.seq == bindparam("row_seq"))
                            .values(status="rejected", reason=bindparam("row_reason")),
                            [{"row_seq": seq, "row_reason": row_reason(reason)} for seq, reason in rejected.items()])
        rows = [{"firm_id": letter["firm_id"], "source": letter["source"], "line": None, "body": letter["body"],
                 "reason": letter["reason"], "received_at": letter["created_at"], "resolved_at": None}
                for letter in quarantine.values() if letter["firm_id"] and letter["source"]]
        if rows:
            quarantine_lines(session, rows)


def row_reason(reason: str) -> str:
    """A dead letter's reason as a stored row's (one event: no line number within a message), worded as
    the pass worker words it."""
    reason = _LINE.sub("", reason, count=1)
    if reason.startswith("not a valid event: "):
        reason = "malformed: " + reason[len("not a valid event: "):]
    return clean_reason(reason)


def _nobody(account: str) -> None:
    """The program of an account the bootstrap's engines never hold (they see firm-wide events only)."""
    return None


def _within(span: tuple[int, int] | None, seq: int) -> bool:
    """Whether ``seq`` is one of the positions a batch committed for its partition (not a replay)."""
    return span is not None and span[0] < seq <= span[1]


def driver_loop(sessions: sessionmaker[Session], stop: threading.Event, *, fallback: float = 1.0,
                driver: LogDriver | None = None) -> None:
    """Batches while there is work; when idle, wait until ingestion commits events in this process
    (services/wakeup.py) or ``fallback`` seconds pass (events another process stored)."""
    from ..services.wakeup import EVENTS

    driver = driver or LogDriver(sessions)
    while not stop.is_set():
        seen = EVENTS.generation  # read before the batch: a commit during it wakes the next wait
        before = driver.cursor if driver.runs else -1
        try:
            driver.run_pass()
        except Exception:  # noqa: BLE001 - a failed batch is retried from the checkpoint
            log.exception("log driver: batch failed; retrying")
            stop.wait(1.0)
            continue
        if driver.at_hole:
            stop.wait(0.005)  # a transaction that may fill a hole in seq is still running: look again soon
        elif driver.cursor == before:
            EVENTS.wait(seen, fallback)


__all__ = ["LogDriver", "driver_loop"]
