"""In-process wake-up of the evaluation worker: events are pushed to it as soon as ingestion commits them.

Whatever stores events (:func:`propcrm.services.ingest.ingest` and re-submission) marks its session
with :func:`events_stored`; when that session's transaction commits, :data:`EVENTS` moves on one
generation and wakes every waiter. The embedded service (``propcrm serve``) runs the API and the
worker in one process, so a committed request wakes the worker at once — there is no poll interval
between a commit and the pass that evaluates it. A rollback wakes nobody.

Events written by another process (``propcrm work`` beside ``propcrm serve --no-worker``, a CLI
import) do not reach this signal: the worker also wakes on a slow fallback timer
(:func:`Signal.wait`'s ``timeout``) and finds them in the database as before.
"""

from __future__ import annotations

import threading

from sqlalchemy import event
from sqlalchemy.orm import Session

_MARK = "propcrm.events_stored"


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


def events_stored(session: Session) -> None:
    """Mark ``session``: when its transaction commits, wake the worker (:data:`EVENTS`)."""
    session.info[_MARK] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_MARK, False):
        EVENTS.notify()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_MARK, None)
