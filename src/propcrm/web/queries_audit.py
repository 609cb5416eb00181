"""Reads for the audit log viewer and the firm dashboard (read-only; nothing here writes).

- :func:`search`: a firm's audit entries, newest first, filtered, with keyset pagination on ``seq``
  (``seq < before`` / ``seq > after``), so page 10,000 costs what page 1 costs.
- :func:`verify_bounded`: the service's own :func:`propcrm.services.audit.verify` (the check
  ``propcrm audit verify`` runs), stopped after a time budget on a very large log. The walk itself is
  the service's; only its reads are metered (see :class:`_Metered`).
- :func:`accounts_by_status`, :func:`decisions_per_day`: the two dashboard series that
  ``services.business`` does not compute (counts only, grouped in the database).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Date, String, cast, func, or_, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..services import audit as audit_service

UTC = dt.timezone.utc
PAGE = 50
LOG = m.AuditEntry


# --------------------------------------------------------------------------------------------------
# search


@dataclass
class Filters:
    actor: str = ""
    action: str = ""
    entity: str = ""
    entity_id: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    text: str = ""
    seq: int | None = None

    def any(self) -> bool:
        return bool(self.actor or self.action or self.entity or self.entity_id or self.since or self.until
                    or self.text or self.seq)


@dataclass
class Entry:
    seq: int
    ts: dt.datetime
    actor: str
    action: str
    entity: str
    entity_id: str | None
    before: str | None  # pretty JSON text (escaped by the template)
    after: str | None
    changed: list[str]
    hash: str
    prev_hash: str


@dataclass
class Found:
    entries: list[Entry] = field(default_factory=list)
    older: int | None = None  # ``before=`` for the next (older) page
    newer: int | None = None  # ``after=`` for the previous (newer) page


def _like(value: str) -> str:
    """``value`` as a literal inside a LIKE pattern (escape character ``\\``)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _pretty(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _changed(before: Any, after: Any) -> list[str]:
    """Top-level keys whose values differ (for the row's one-line summary); no side: every key of the other."""
    before = {} if before is None else before
    after = {} if after is None else after
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    return [key for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]


def _where(firm_id: str, f: Filters) -> list[Any]:
    clauses: list[Any] = [LOG.firm_id == firm_id]
    if f.seq is not None:
        clauses.append(LOG.seq == f.seq)
    if f.actor:
        clauses.append(LOG.actor.ilike(f"%{_like(f.actor)}%", escape="\\"))
    if f.action:
        clauses.append(LOG.action.like(f"{_like(f.action)}%", escape="\\"))
    if f.entity:
        clauses.append(LOG.entity == f.entity)
    if f.entity_id:
        clauses.append(LOG.entity_id == f.entity_id)
    if f.since is not None:
        clauses.append(LOG.ts >= f.since)
    if f.until is not None:
        clauses.append(LOG.ts < f.until)
    if f.text:
        # the JSON as stored: non-ASCII text may be kept as \uXXXX escapes, so look for both spellings
        needles = {f.text, json.dumps(f.text)[1:-1]}
        columns = (cast(LOG.before, String), cast(LOG.after, String))
        clauses.append(or_(*(column.ilike(f"%{_like(needle)}%", escape="\\")
                             for column in columns for needle in needles)))
    return clauses


def search(session: Session, *, firm_id: str, filters: Filters, before: int | None = None,
           after: int | None = None, limit: int = PAGE) -> Found:
    """One page of the firm's entries matching ``filters``, newest first.

    ``before``: entries older than that ``seq`` (the next page); ``after``: entries newer than that
    ``seq`` (the previous page); neither: the newest."""
    where = _where(firm_id, filters)
    if after is not None:
        rows = list(session.scalars(select(LOG).where(*where, LOG.seq > after)
                                    .order_by(LOG.seq.asc()).limit(limit + 1)))
        more_newer = len(rows) > limit
        rows = list(reversed(rows[:limit]))
        more_older = True  # entry ``after`` itself (or what precedes it) lies that way
    else:
        query = select(LOG).where(*where)
        if before is not None:
            query = query.where(LOG.seq < before)
        rows = list(session.scalars(query.order_by(LOG.seq.desc()).limit(limit + 1)))
        more_older = len(rows) > limit
        rows = rows[:limit]
        more_newer = before is not None
    found = Found(entries=[Entry(seq=r.seq, ts=r.ts, actor=r.actor, action=r.action, entity=r.entity,
                                 entity_id=r.entity_id, before=_pretty(r.before), after=_pretty(r.after),
                                 changed=_changed(r.before, r.after), hash=r.hash, prev_hash=r.prev_hash)
                           for r in rows])
    if found.entries:
        if more_older:
            found.older = found.entries[-1].seq
        if more_newer:
            found.newer = found.entries[0].seq
    elif after is not None:
        found.older = after + 1  # nothing newer: offer the way back
    elif before is not None:
        found.newer = before - 1
    return found


def firm_of_entry(session: Session, seq: int) -> tuple[bool, str | None]:
    """Whether entry ``seq`` exists, and its firm."""
    row = session.execute(select(LOG.firm_id).where(LOG.seq == seq)).first()
    return (row is not None, row.firm_id if row is not None else None)


# --------------------------------------------------------------------------------------------------
# verification with a time budget


VERIFY_PAGE = 1000
VERIFY_BUDGET_S = 8.0
"""At about 25,000 entries a second (SQLite, one core), 8 s checks ~200,000 entries; beyond that the
page says how far it got and points to ``propcrm audit verify``, which has no limit."""


class _OutOfTime(BaseException):
    """Stops the walk. A ``BaseException``: ``verify`` reads a page that cannot be decoded again row by
    row under ``except Exception``, and running out of time must not look like an unreadable row."""


class _Metered:
    """The session, for :func:`audit.verify`'s reads only: refuses a further read after the deadline.

    ``verify`` reads the chain in pages and checks each page completely before asking for the next,
    so when the read of page *k* is refused, pages 1…k-1 — every entry read so far — verified."""

    def __init__(self, session: Session, deadline: float) -> None:
        self._session = session
        self._deadline = deadline
        self.reads = 0
        self.rows = 0

    def _check(self) -> None:
        if self.reads and time.monotonic() > self._deadline:
            raise _OutOfTime()
        self.reads += 1

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return self._session.execute(*args, **kwargs)

    def scalars(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return self._session.scalars(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


@dataclass
class Verification:
    ok: bool | None  # None: stopped by the time budget before the end, no break found so far
    entries: int  # entries that verified (a lower bound when ok is None)
    seconds: float
    first_bad_seq: int | None = None
    problem: str | None = None
    head_hash: str | None = None
    total: int = 0  # entries in the whole log (the newest seq)
    bad_in_firm: bool | None = None  # the broken entry is one of the viewer's firm (None: missing/unknown)
    keyed: bool = False  # an audit key is configured: key marks checked, and the anchors
    anchors: int = 0
    latest_anchor: Any = None  # audit_anchors.Anchor
    chains: int = 0  # chains checked (one per firm, the operators', the pre-upgrade one if any)
    broken_chain: str | None = None  # which chain broke, in words

    @property
    def rate(self) -> int:
        return int(self.entries / self.seconds) if self.seconds > 0 else 0


_running = threading.Lock()


def verify_bounded(session: Session, *, firm_id: str, budget_s: float | None = None) -> Verification | None:
    """The whole chain verified by :func:`audit.verify`, within ``budget_s`` seconds.

    Returns ``None`` when another verification is already running in this process (one at a time:
    it is the most expensive read there is)."""
    if not _running.acquire(blocking=False):
        return None
    try:
        budget = VERIFY_BUDGET_S if budget_s is None else budget_s
        from ..services.audit_anchors import check_anchors, config_for

        bind = session.get_bind()
        config = config_for((getattr(bind, "url", None) or bind.engine.url).render_as_string(hide_password=False))
        total = session.execute(select(func.max(LOG.seq))).scalar() or 0
        started = time.monotonic()
        metered = _Metered(session, started + budget)
        try:
            result = audit_service.verify(metered, page_size=VERIFY_PAGE, key=config.key)  # type: ignore[arg-type]
        except _OutOfTime:
            seconds = time.monotonic() - started
            return Verification(ok=None, entries=metered.reads * VERIFY_PAGE, seconds=seconds, total=total)
        seconds = time.monotonic() - started
        found = Verification(ok=result.ok, entries=result.entries, seconds=seconds, first_bad_seq=result.first_bad_seq,
                             problem=result.problem, head_hash=result.head_hash, total=total,
                             keyed=config.key is not None, broken_chain=result.broken_chain,
                             chains=len(result.heads) + (1 if result.legacy_head else 0))
        if result.ok and config.key is not None:  # the anchors outside the database: the newest entries
            check = check_anchors(session, config)
            found.anchors, found.latest_anchor = check.anchors, check.latest
            if not check.ok:
                found.ok, found.problem = False, "; ".join(check.problems)
                found.first_bad_seq = (check.latest.seq or None) if check.latest else None
        if result.first_bad_seq is not None:
            exists, firm = firm_of_entry(session, result.first_bad_seq)
            found.bad_in_firm = (firm == firm_id) if exists else None
        return found
    finally:
        _running.release()


# --------------------------------------------------------------------------------------------------
# dashboard series


STATUSES = ("active", "paused", "breached", "passed", "funded", "suspended", "halted", "closed")
KINDS = ("breach", "pause", "warning", "phase_passed")


def accounts_by_status(session: Session, *, firm_id: str) -> list[tuple[str, int]]:
    counts = dict(session.execute(select(m.Account.status, func.count()).where(m.Account.firm_id == firm_id)
                                  .group_by(m.Account.status)).all())
    known = [(status, counts.pop(status)) for status in STATUSES if status in counts]
    return known + sorted(counts.items())


def _day(session: Session, column: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)  # SQLite keeps UTC text "YYYY-MM-DD HH:MM:SS…"


def decisions_per_day(session: Session, *, firm_id: str, days: int = 30,
                      today: dt.date | None = None) -> dict[str, Any]:
    """Decisions of the ``days`` days (UTC) ending with ``today`` (included; default: the real today) per day and
    kind, zeros filled in."""
    today = today or dt.datetime.now(UTC).date()
    first = today - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(first, dt.time(), tzinfo=UTC)
    until = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tzinfo=UTC)
    day = _day(session, m.Decision.ts)
    counts: dict[tuple[str, str], int] = {}
    for when, kind, n in session.execute(
            select(day, m.Decision.kind, func.count()).where(m.Decision.firm_id == firm_id, m.Decision.ts >= since,
                                                              m.Decision.ts < until)
            .group_by(day, m.Decision.kind)):
        key = when.isoformat() if isinstance(when, dt.date) else str(when)[:10]
        counts[(key, kind)] = counts.get((key, kind), 0) + n
    dates = [(first + dt.timedelta(days=i)).isoformat() for i in range(days)]
    kinds = list(KINDS) + sorted({kind for _, kind in counts} - set(KINDS))
    series = {kind: [counts.get((d, kind), 0) for d in dates] for kind in kinds}
    return {"dates": dates, "series": series, "totals": [sum(series[k][i] for k in kinds) for i in range(days)]}
