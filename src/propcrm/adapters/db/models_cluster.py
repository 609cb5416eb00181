"""Tables of the scale-out deployment (NATS JetStream workers).

``cluster_checkpoints`` is a partition's position: ``seq``, the last stream sequence whose effects
(decisions, audit entries, outbox rows, status changes) are committed — a worker moves it in the same
transaction as those effects, and only if it still holds the sequence the worker started from (a
compare-and-set that fences off a worker whose lease has run out) — and ``state_seq``, the position of
the last snapshot of the partition's account states (in ``account_states``, ``last_seq`` then being a
stream sequence) and of its engine context (news calendar, reference prices, last clock per firm).
``state_seq`` ≤ ``seq``; a worker taking the partition over loads the snapshot and replays from
``state_seq`` + 1, silently (no effects) up to ``seq``.

``cluster_dead_letters`` keeps what a worker could not apply — a malformed message or line, an event
for an account the database does not have, an event out of order — with the reason and the original
bytes, committed with the checkpoint that skips it: nothing consumed is silently lost.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UtcDateTime, utcnow


#: the stream name of the embedded log driver's checkpoints: the ``raw_events`` table as the log
#: (cluster/eventlog.py); every other stream is a JetStream stream of the scale-out deployment
TABLE_STREAM = "raw_events"

#: PostgreSQL: the advisory lock (two int4 keys: "pcml", 1) every transaction that inserts into
#: ``raw_events`` takes *shared*, at transaction level, before it draws ``seq`` numbers, and so holds
#: until it ends (services/ingest.py). The table log's reader (cluster/eventlog.py) waits at a hole in
#: ``seq`` for the holders of this lock it saw — this database's ingest writers only — instead of for
#: every transaction of the server. Advisory locks are per database; nothing ever takes it exclusive.
LOG_WRITERS_LOCK = (1885564268, 1)


class PartitionCheckpoint(Base):
    __tablename__ = "cluster_checkpoints"
    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    state_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    context: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class DeadLetter(Base):
    __tablename__ = "cluster_dead_letters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream: Mapped[str] = mapped_column(String(64))
    partition: Mapped[int] = mapped_column(Integer)
    stream_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    line: Mapped[int | None] = mapped_column(Integer, nullable=True)
    firm_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)
    event_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    __table_args__ = (Index("ix_cluster_dead_letters_position", "stream", "partition", "stream_seq"),)
