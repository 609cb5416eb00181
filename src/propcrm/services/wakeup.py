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
orders). A dispatcher in another process (``propcrm dispatch``) keeps its poll interval.
"""

from __future__ import annotations

import threading

from sqlalchemy import event
from sqlalchemy.orm import Session

_MARK = "propcrm.events_stored"
_OUTBOX_MARK = "propcrm.outbox_written"
_OUTBOX_TABLE = "outbox"


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


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state) -> None:  # noqa: ANN001 - sqlalchemy.orm.ORMExecuteState
    if state.is_insert and getattr(getattr(state.statement, "table", None), "name", None) == _OUTBOX_TABLE:
        state.session.info[_OUTBOX_MARK] = True


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, flush_context, instances) -> None:  # noqa: ANN001
    if _OUTBOX_MARK not in session.info:
        for obj in session.new:
            if getattr(obj, "__tablename__", None) == _OUTBOX_TABLE:
                session.info[_OUTBOX_MARK] = True
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
