"""A short-lived per-process cache of a firm-wide figure, kept while a cheap change marker is unchanged.

Why a cache and not more SQL: the business numbers and the open liability are already set-based
(``services.business``, ``services.payouts.open_liability``), and what is left of their cost is reading the
sets themselves — every account counted by product and phase, every paid order's amount, every approved
payout, each funded account's state decoded and run through its pack's payout program (which SQL cannot
do). At 100,000 accounts that is 150–260 ms of server CPU per page, the same every time while nothing
changed. So a figure is computed once and kept for ``ttl`` seconds *and* only while
:func:`change_marker` is as it was (as ``services.leaderboard.BoardCache`` keeps a board):

- every staff action that moves these figures appends to the audit log (a payout prepared, approved or
  rejected, an order paid or refunded, a scaling applied, an account closed) → the firm's latest audit
  ``seq`` moves;
- an evaluation that passes or breaches an account writes a decision → the firm's latest decision id moves;
- a new account → the firm's latest account id moves.

All three are index probes (``ix_audit_log_firm_id``, ``ix_decisions_firm_id``, ``ix_accounts_firm_id``). Not
in the marker: a funded account's balance moving with its trading (it changes with every event, so the
figures would never be kept); that shows within ``ttl`` seconds — the page says when its figures were
computed. One computation at a time per (figure, firm) in a process; the others wait for it.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m

CACHE_SECONDS = 30.0

T = TypeVar("T")


def change_marker(session: Session, *, firm_id: str) -> tuple[Any, Any, Any]:
    """(latest audit seq, latest decision id, latest account id) of the firm: three index probes."""
    return (session.scalar(select(func.max(m.AuditEntry.seq)).where(m.AuditEntry.firm_id == firm_id)),
            session.scalar(select(func.max(m.Decision.id)).where(m.Decision.firm_id == firm_id)),
            session.scalar(select(func.max(m.Account.id)).where(m.Account.firm_id == firm_id)))


class FirmCache(Generic[T]):
    """``compute(session, firm_id=…)`` per firm, kept ``ttl`` seconds while :func:`change_marker` (asked on
    every read) is unchanged. The value is shared between requests: callers only read it."""

    def __init__(self, compute: Callable[..., T], *, ttl: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 marker: Callable[..., Any] = change_marker) -> None:
        self.ttl, self._compute, self._clock, self._marker = ttl, compute, clock, marker
        # per database (the session's engine, held weakly) and firm
        self._kept: weakref.WeakKeyDictionary[Any, dict[str, tuple[float, Any, dt.datetime, T]]] = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _fresh(self, bind: Any, firm_id: str, marker: Any) -> tuple[T, dt.datetime] | None:
        kept = self._kept.get(bind, {}).get(firm_id)
        if kept is not None and self._clock() - kept[0] < self.ttl and kept[1] == marker:
            return kept[3], kept[2]
        return None

    def get(self, session: Session, *, firm_id: str) -> tuple[T, dt.datetime]:
        """The value and when it was computed (aware UTC)."""
        bind = session.get_bind()
        bind = getattr(bind, "engine", bind)  # a connection's engine
        marker = self._marker(session, firm_id=firm_id)
        found = self._fresh(bind, firm_id, marker)
        if found is not None:
            return found
        with self._lock:
            found = self._fresh(bind, firm_id, marker)
            if found is not None:
                return found
            started, at = self._clock(), dt.datetime.now(dt.timezone.utc)
            value = self._compute(session, firm_id=firm_id)
            self._kept.setdefault(bind, {})[firm_id] = (started, marker, at, value)
            return value, at

    def forget(self, firm_id: str | None = None) -> None:
        with self._lock:
            for firms in self._kept.values():
                for key in [k for k in firms if firm_id is None or k == firm_id]:
                    del firms[key]


__all__ = ["CACHE_SECONDS", "FirmCache", "change_marker"]
