"""The event-log port of the partition driver, and its adapter over the database table ``raw_events``.

What :class:`~propcrm.cluster.partition.PartitionStore` needs of a log is one thing: the messages of
its partitions after a position, in the log's order, each a :class:`~propcrm.cluster.partition.StreamMessage`
(partition, sequence, the ``Propcrm-Firm`` / ``Propcrm-Source`` headers, NDJSON lines). Two adapters
give it that:

* **JetStream** (scale-out, ``cluster/worker.py``): a pull consumer per worker; the sequence is the
  stream's, a message carries up to 2,000 lines, and ingestion already routed each line to its
  partition (firm-wide lines copied into every partition).
* **The table** (embedded, :class:`TableLog`): ``raw_events`` is the log. The sequence is
  ``raw_events.seq``, a message is one stored row (so every decision links to its stored event, as the
  embedded mode always did), the partition of an account's row is the bus's
  :func:`~propcrm.adapters.bus.partitions.partition_of` of its firm and account, and a firm-wide row
  (``clock``, ``news``, ``price``: no account) is a message in *every* partition, as ingestion copies it
  into every partition on the bus — each partition's stream is then the firm's stream ``propcrm replay``
  reads, for its accounts.

**Reading in commit order.** A reader that moves a position over ``seq`` must never pass a row that is
not committed yet and will be later with a lower ``seq``. On SQLite there is one writer at a time and
rows are numbered inside its transaction: commit order is ``seq`` order. On PostgreSQL ``seq`` comes
from a sequence, numbers are handed out before commit and a rolled-back (or later deleted) row leaves
a hole for good. Every transaction that inserts into ``raw_events`` takes the advisory lock
:data:`~propcrm.adapters.db.models_cluster.LOG_WRITERS_LOCK` (shared, transaction-level) before it
draws numbers (services/ingest.py). The reader stops at a hole until the writers that could hold its
number have ended: a hole seen below a visible row was numbered before the read, so by a transaction
that held the lock when the read was over — one of the holders ``pg_locks`` lists right after the
read (by virtual transaction id, never reused soon). Once none of those still holds it the hole is
final (a committed row would have shown by then; it is read again to be sure) and the reader moves
over it. Only this database's ingest transactions count: a long transaction of another database of the
server, or one of this database that writes no events (a report, a migration, a back-office edit),
never holds the reader back.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from ..adapters.bus.partitions import HEADER_FIRM, HEADER_PUBLISHED, HEADER_SOURCE, partition_of
from ..adapters.db import models as m
from ..adapters.db.models_cluster import LOG_WRITERS_LOCK, TABLE_STREAM
from .partition import StreamMessage

log = logging.getLogger("propcrm.cluster")



@dataclass
class LogRead:
    """A read of the log: its messages in order, the position it reached (past holes and rows set aside
    it moved over) and the positions of the rows that belong to one account (the others are firm-wide)."""

    messages: list[StreamMessage] = field(default_factory=list)
    reached: int = 0
    own: set[int] = field(default_factory=set)
    #: stopped at a hole that may still fill (PostgreSQL): read again shortly, not after the idle wait
    hole: bool = False


class EventLog(Protocol):
    """What the partition driver reads: messages after ``after`` (a position common to the partitions
    asked for), in the log's order, at most about ``limit`` rows, each message tagged with its partition."""

    def read(self, after: int, limit: int) -> LogRead: ...

    def head(self) -> int:
        """The position of the last message in the log (0: empty)."""
        ...


class TableLog:
    """``raw_events`` as the partition driver's log (see the module's text)."""

    def __init__(self, sessions: sessionmaker[Session], partitions: int) -> None:
        self.sessions = sessions
        self.partitions = partitions
        self._home: dict[int, int] = {}  # account id -> partition
        self._holes: dict[int, frozenset] = {}  # PostgreSQL: a hole's seq -> the log's writers when it was seen
        self._hole_seen: dict[int, float] = {}
        self.postgres = sessions.kw["bind"].dialect.name == "postgresql"

    def head(self) -> int:
        with self.sessions() as session:
            return session.scalar(select(m.RawEvent.seq).order_by(m.RawEvent.seq.desc()).limit(1)) or 0

    def read(self, after: int, limit: int) -> LogRead:
        raw = m.RawEvent
        with self.sessions() as session:
            # the writers still running before the rows are read (a hole is final once its writers are gone)
            writers = self._writers(session) if self.postgres and self._holes else None
            rows = session.execute(
                select(raw.seq, raw.firm_id, raw.source, raw.account_id, raw.body, raw.received_at, raw.status)
                .where(raw.seq > after).order_by(raw.seq).limit(limit)
            ).all()
            home = self._home
            if self.partitions > 1:  # the partition of accounts met for the first time
                new = sorted({row.account_id for row in rows if row.account_id is not None} - home.keys())
                for start in range(0, len(new), 1000):
                    for account_id, firm_id, external_id in session.execute(
                        select(m.Account.id, m.Account.firm_id, m.Account.external_id)
                        .where(m.Account.id.in_(new[start : start + 1000]))
                    ):
                        home[account_id] = partition_of(firm_id, external_id, self.partitions)
            # the writers running once the rows are read: a hole seen now was numbered by one of them
            after_read = self._writers(session) if self.postgres and rows else None
        out = LogRead(reached=after)
        messages = out.messages
        expected = after + 1
        everyone = range(self.partitions)
        single = self.partitions == 1
        headers_of: dict[tuple, dict[str, str]] = {}  # a request's rows share firm, source and time
        for row in rows:
            if row.seq != expected and self.postgres:
                if not self._hole_final(expected, row.seq, writers, after_read):
                    out.hole = True
                    break
            expected = row.seq + 1
            out.reached = row.seq
            if row.status == "rejected":
                continue  # set aside: what the engines met is the log without it (as a takeover's replay)
            key = (row.firm_id, row.source, row.received_at)
            headers = headers_of.get(key)
            if headers is None:
                headers = headers_of[key] = {HEADER_FIRM: row.firm_id, HEADER_SOURCE: row.source,
                                             HEADER_PUBLISHED: str(int(row.received_at.timestamp() * 1e9))}
            body = row.body if type(row.body) is bytes else bytes(row.body)
            if row.account_id is None:
                messages.extend(StreamMessage(p, row.seq, headers, body) for p in everyone)
                continue
            messages.append(StreamMessage(0 if single else home[row.account_id], row.seq, headers, body))
            out.own.add(row.seq)
        return out

    def _hole_final(self, start: int, end: int, writers: frozenset | None, after_read: frozenset | None) -> bool:
        """Whether the numbers ``start`` … ``end - 1`` (below a visible row) are missing for good: once
        none of the log's writers running when the hole was first seen (``after_read`` of that read) is
        among those running before this read (``writers``). A hole is known by its first number: a row
        committed inside it leaves a smaller hole of its own."""
        seen = self._holes.get(start)
        if seen is None:
            self._holes[start] = after_read or frozenset()
            self._hole_seen[start] = time.monotonic()
            return False
        if writers is None or seen & writers:
            if time.monotonic() - self._hole_seen[start] > 30:
                log.warning("event log: raw_events seq %d is still missing after 30 s: an ingest transaction "
                            "that may hold it is still running", start)
                self._hole_seen[start] = time.monotonic()
            return False
        del self._holes[start]
        del self._hole_seen[start]
        return True

    @staticmethod
    def _writers(session: Session) -> frozenset:
        """The transactions of this database holding (or waiting for) the log's writers' lock, by
        process id and virtual transaction id."""
        rows = session.execute(_WRITERS, {"k1": LOG_WRITERS_LOCK[0], "k2": LOG_WRITERS_LOCK[1]}).all()
        return frozenset((pid, vxid) for pid, vxid in rows)


_WRITERS = text(
    "SELECT pid, virtualtransaction FROM pg_locks WHERE locktype = 'advisory' AND classid = :k1 AND objid = :k2"
    " AND objsubid = 2 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


__all__ = ["EventLog", "LogRead", "TABLE_STREAM", "TableLog"]
