"""In-process wake-ups: the evaluation worker as soon as events are committed, the outbox dispatcher as
soon as outbox rows are.

Whatever stores events (:func:`propcrm.services.ingest.ingest` and re-submission) marks its session
with :func:`events_stored`; when that session's transaction commits, :data:`EVENTS` moves on one
generation and wakes every waiter. The embedded service (``propcrm serve``) runs the API and the
worker in one process, so a committed request wakes the worker at once — there is no poll interval
between a commit and the pass that evaluates it. A rollback wakes nobody.

Events written by another process (``propcrm work`` beside ``propcrm serve --no-worker``, a CLI
import) do not reach this signal: the worker also wakes on a slow fallback timer
(:func:`Signal.wait`'s ``timeout``) and finds them in the database as before.

The same for the outbox (:data:`OUTBOX`): any session that inserts ``outbox`` rows — the worker's
group commit (an insert statement), ``session.add(OutboxMessage(...))`` anywhere else — wakes the
embedded dispatcher when it commits, so a breach's ``disable`` is delivered right after the decision
is committed instead of after the dispatcher's idle wait (issue 20: breach → platform refusing
orders).

**Across processes** (PostgreSQL): the same sessions also send ``NOTIFY propcrm_outbox`` inside the
transaction that inserts the rows — PostgreSQL delivers it when, and only if, that transaction commits
(a rolled-back savepoint takes its notification with it; several in one transaction arrive as one). A
dispatcher in another process (``propcrm dispatch``, ``propcrm cluster dispatch``, beside the
partition workers of the scale-out deployment) runs :func:`listen_outbox`, a thread that listens (``LISTEN``)
on that channel and notifies :data:`OUTBOX` in its own process, so a worker's breach reaches the
platform without the dispatcher's poll interval. The poll stays as the fallback (a lost connection,
SQLite, rows coming due for a retry). On SQLite there is no such channel: a dispatcher in another
process finds the rows by its poll.
"""

from __future__ import annotations

import threading

import logging

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

log = logging.getLogger("propcrm.wakeup")

_MARK = "propcrm.events_stored"
_OUTBOX_MARK = "propcrm.outbox_written"
_OUTBOX_TABLE = "outbox"
OUTBOX_CHANNEL = "propcrm_outbox"


class Signal:
    """A generation counter with a condition: ``wait(seen)`` returns once the generation differs from
    ``seen`` (or after ``timeout``), so a notification between reading the generation and waiting is
    never missed."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def notify(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, seen: int, timeout: float | None) -> int:
        with self._condition:
            self._condition.wait_for(lambda: self._generation != seen, timeout)
            return self._generation


#: Stored events of this process: notified after every commit that stored at least one event.
EVENTS = Signal()


#: Outbox rows written in this process: notified after every commit that inserted at least one.
OUTBOX = Signal()


def events_stored(session: Session) -> None:
    """Mark ``session``: when its transaction commits, wake the worker (:data:`EVENTS`)."""
    session.info[_MARK] = True


def outbox_written(session: Session) -> None:
    """Mark ``session``: when its transaction commits, wake the dispatcher (:data:`OUTBOX`). Inserts
    into ``outbox`` mark their session by themselves (below); this is for writers that go around them."""
    session.info[_OUTBOX_MARK] = True


def _notify_others(session: Session) -> None:
    """``NOTIFY`` the outbox channel in ``session``'s transaction (PostgreSQL; delivered on commit)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"NOTIFY {OUTBOX_CHANNEL}")


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state) -> None:  # noqa: ANN001 - sqlalchemy.orm.ORMExecuteState
    if state.is_insert and getattr(getattr(state.statement, "table", None), "name", None) == _OUTBOX_TABLE:
        state.session.info[_OUTBOX_MARK] = True
        _notify_others(state.session)


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, flush_context, instances) -> None:  # noqa: ANN001
    for obj in session.new:
        if getattr(obj, "__tablename__", None) == _OUTBOX_TABLE:
            session.info[_OUTBOX_MARK] = True
            _notify_others(session)  # every flush that adds rows: an earlier one may be in a rolled-back savepoint
            break


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    info = session.info
    if info.pop(_MARK, False):
        EVENTS.notify()
    if info.pop(_OUTBOX_MARK, False):
        OUTBOX.notify()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_MARK, None)
    session.info.pop(_OUTBOX_MARK, None)


def listen_outbox(engine: Engine, stop: threading.Event, *, signal: Signal = OUTBOX,
                  retry_s: float = 1.0) -> threading.Thread | None:
    """Wake ``signal`` in this process whenever another process commits outbox rows (PostgreSQL
    ``LISTEN``; see the module). Returns the listening thread (a daemon, ended by ``stop``), or ``None``
    on a database without notifications. A lost connection is opened again after ``retry_s``; every
    (re)connection wakes ``signal`` once, for what was committed while nobody listened."""
    if engine.dialect.name != "postgresql":
        return None

    def run() -> None:
        while not stop.is_set():
            raw = None
            try:
                raw = engine.raw_connection()
                driver = raw.driver_connection  # psycopg 3
                driver.autocommit = True
                driver.execute(f"LISTEN {OUTBOX_CHANNEL}")
                signal.notify()
                while not stop.is_set():
                    for _ in driver.notifies(timeout=0.5, stop_after=1):
                        signal.notify()
            except Exception as exc:  # noqa: BLE001 - the poll covers the gap; listen again
                if stop.is_set():
                    break
                log.warning("outbox wake-ups: %s: %s; listening again in %.0f s", type(exc).__name__, exc, retry_s)
                stop.wait(retry_s)
            finally:
                if raw is not None:
                    try:
                        raw.invalidate()  # never back to the pool in LISTEN/autocommit state
                    except Exception:  # noqa: BLE001
                        pass

    thread = threading.Thread(target=run, name="outbox-listen", daemon=True)
    thread.start()
    return thread
