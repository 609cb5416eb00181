"""The equity-points projection: the series the back office's account chart draws, written by the evaluation.

Each point is an account's equity, balance, daily floor and max-loss level (the level of the first
daily-loss and max-loss rule, as ``program.summary`` gives them) after an evaluated event, with the
decisions that event caused. Both drivers hand their points to the shared write path
(:func:`propcrm.services.outcomes.write_outcomes`) with the batch's outcomes, and :func:`record` writes
them in the transaction of the batch's decisions — the chart is exactly as committed as the decisions,
in the embedded deployment and in the scale-out one (which never fills ``raw_events``).

Granularity: the embedded driver notes a point after each of the account's own events, and after a
firm-wide event (clock, news, tick) that caused decisions for it — the points the chart's replay of the
log gave — through :meth:`Sampler.watch`, an iterator the engine pulls the events from (the engine is
not changed). The
partitioned workers note one point per account per stream message (its state after the message's
events: :func:`point_of`).

Downsampling rule (bounded storage): per account and UTC minute at most :data:`PER_MINUTE` points are
kept — the first, the last, the lowest-equity and the highest-equity point of the minute, and up to
:data:`DECISION_POINTS` further points that carry decisions (the earliest). A minute already stored is
merged with the new points under the same rule (a point that stops being the minute's last is deleted).
So an account stores at most 8 rows per minute it traded in, whatever its event count; the chart thins
what it reads to ``MAX_POINTS`` (:func:`propcrm.web.queries_accounts.downsample`).

:func:`propcrm.services.equity_replay.backfill_points` fills the projection of accounts evaluated before
it existed from the embedded event log (``propcrm trades backfill``), through the chart's replay.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..domain.rules.limits import DailyLossRule, MaxLossRule

DECISION_POINTS = 4
PER_MINUTE = 4 + DECISION_POINTS
DECISIONS_MAX = 400  # equity_points.decisions
_CHUNK = 500
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class Point(NamedTuple):
    """One point of the series: ``decisions`` as ``(kind, rule)`` pairs."""

    ts: dt.datetime
    equity: Decimal
    balance: Decimal
    daily_floor: Decimal | None
    max_loss: Decimal | None
    decisions: tuple[tuple[str, str], ...] = ()
    event_id: str | None = None


def _slots(program) -> tuple[int | None, int | None]:
    """The level slots of the program's first daily-loss and max-loss rule (what the chart draws)."""
    daily = next((rule.slot for rule in program.limits if isinstance(rule, DailyLossRule)), None)
    max_loss = next((rule.slot for rule in program.limits if isinstance(rule, MaxLossRule)), None)
    return daily, max_loss


def _finite(value: Decimal | None) -> Decimal | None:
    return value if value is not None and value.is_finite() else None


def point_of(st, program, ts: dt.datetime, decisions: Iterable = (), event_id: str | None = None) -> Point:
    """The point of a state now (its values are read at once: the engine moves a state in place)."""
    daily, max_loss = _slots(program)
    levels = st.levels
    return Point(ts, st.equity, st.balance, _finite(levels[daily]) if daily is not None else None,
                 _finite(levels[max_loss]) if max_loss is not None else None,
                 tuple((d.kind, d.rule) for d in decisions), event_id)


class Sampler:
    """Notes an account's point after each event the engine takes from :meth:`watch` (the embedded
    driver). :meth:`finish` keeps, as the chart's replay did, the points of the account's own events
    (not those the engine refused) and of the firm-wide events (clock, news, tick) that caused decisions
    for it, with the decisions attached to the points of their events."""

    __slots__ = ("states", "account", "daily", "max_loss", "noted")

    def __init__(self, engine, account: str, program) -> None:
        self.states = engine.states
        self.account = account
        self.daily, self.max_loss = _slots(program)
        self.noted: list[tuple] = []

    def watch(self, events: Iterable) -> Iterator:
        states, name, noted = self.states, self.account, self.noted
        daily, max_loss = self.daily, self.max_loss
        for ev in events:
            yield ev
            st = states.get(name)  # the engine has applied ``ev`` when it asks for the next one
            if st is None:
                continue
            levels = st.levels
            noted.append((ev.ts, ev.id, getattr(ev, "account", None) == name, st.equity, st.balance,
                          levels[daily] if daily is not None else None,
                          levels[max_loss] if max_loss is not None else None))

    def finish(self, decisions: Sequence, refused: Iterable[str] = ()) -> list[Point]:
        dropped = set(refused)
        by_event: dict[str, list[tuple[str, str]]] = {}
        for d in decisions:
            by_event.setdefault(d.event_id, []).append((d.kind, d.rule))
        out = []
        for ts, event_id, own, equity, balance, daily, max_loss in self.noted:
            found = by_event.pop(event_id, None)
            if found is None and (not own or event_id in dropped):
                continue
            out.append(Point(ts, equity, balance, _finite(daily), _finite(max_loss), tuple(found or ()), event_id))
        return out


def minute_of(ts: dt.datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.timezone.utc)
    return int((ts - _EPOCH).total_seconds() // 60)


def keep(points: Sequence[Any]) -> set[int]:
    """The indexes of the points of one account-minute (in time order) the rule keeps: first, last,
    lowest and highest equity (the earliest of equals), and the earliest :data:`DECISION_POINTS` with
    decisions."""
    n = len(points)
    if n <= 2:
        return set(range(n))
    chosen = {0, n - 1,
              min(range(n), key=lambda i: points[i].equity),
              max(range(n), key=lambda i: points[i].equity)}
    chosen.update([i for i in range(n) if points[i].decisions][:DECISION_POINTS])
    return chosen


def _text(decisions: Sequence[tuple[str, str]]) -> str | None:
    if not decisions:
        return None
    lines = [f"{kind}: {rule}" for kind, rule in decisions]
    text = "\n".join(lines)
    while len(text) > DECISIONS_MAX and len(lines) > 1:
        lines.pop()
        text = "\n".join(lines)
    return text[:DECISIONS_MAX]


def _pairs(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    return tuple(tuple(line.split(": ", 1)) if ": " in line else (line, "") for line in text.split("\n"))


class _Stored(NamedTuple):
    id: int
    ts: dt.datetime
    equity: Decimal
    decisions: tuple


def record(session: Session, accounts: Sequence[tuple[str, int, Sequence[Point]]]) -> int:
    """Write a batch's points: ``accounts`` are (firm id, account id, points in time order). Set-based:
    one read of the stored rows of the minute each account's points start in (by key, on the index),
    one delete of the rows the rule drops from them, one insert. Returns the number of rows inserted."""
    grouped: dict[tuple[int, int], list] = {}
    firm_of: dict[int, str] = {}
    for firm_id, account_id, points in accounts:
        firm_of[account_id] = firm_id
        for p in points:
            grouped.setdefault((account_id, minute_of(p.ts)), []).append(p)
    if not grouped:
        return 0
    table = m.EquityPoint.__table__
    stored: dict[tuple[int, int], list[_Stored]] = {}
    # An account's events reach the engine in time order (it refuses older ones), so of the minutes a
    # batch touches only the account's first can be stored already: only those are looked up.
    first: dict[int, int] = {}
    for account_id, minute in grouped:
        if minute < first.get(account_id, minute + 1):
            first[account_id] = minute
    keys = sorted(first.items())
    for start in range(0, len(keys), _CHUNK):
        part = keys[start:start + _CHUNK]
        rows = session.execute(select(table.c.id, table.c.account_id, table.c.minute, table.c.ts, table.c.equity,
                                      table.c.decisions)
                               .where(tuple_(table.c.account_id, table.c.minute).in_(part))
                               .order_by(table.c.ts, table.c.id))
        for row in rows:
            stored.setdefault((row.account_id, row.minute), []).append(
                _Stored(row.id, row.ts, row.equity, _pairs(row.decisions)))
    drop: list[int] = []
    rows_out: list[dict] = []
    for key, fresh in grouped.items():
        old = stored.get(key, [])
        merged = [*old, *fresh]  # stored rows first: the batch's events come after them
        kept = keep(merged)
        drop.extend(s.id for i, s in enumerate(old) if i not in kept)
        account_id, minute = key
        for i, p in enumerate(fresh, start=len(old)):
            if i in kept:
                rows_out.append({"firm_id": firm_of[account_id], "account_id": account_id, "minute": minute,
                                 "ts": p.ts, "equity": p.equity, "balance": p.balance, "daily_floor": p.daily_floor,
                                 "max_loss": p.max_loss, "decisions": _text(p.decisions)})
    for start in range(0, len(drop), _CHUNK):
        session.execute(delete(table).where(table.c.id.in_(drop[start:start + _CHUNK])))
    if rows_out:
        session.execute(insert(table), rows_out)
    return len(rows_out)


def read(session: Session, *, firm_id: str, account_id: int) -> list[dict[str, Any]]:
    """The account's stored points in time order, in the shape the chart's downsampling takes (``t``
    in epoch ms, money as Decimal, ``decisions`` as (kind, rule) pairs). The caller has checked scope."""
    table = m.EquityPoint.__table__
    rows = session.execute(select(table.c.ts, table.c.equity, table.c.balance, table.c.daily_floor,
                                  table.c.max_loss, table.c.decisions)
                           .where(table.c.firm_id == firm_id, table.c.account_id == account_id)
                           .order_by(table.c.minute, table.c.ts, table.c.id))
    out = []
    for ts, equity, balance, daily_floor, max_loss, decisions in rows:
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=dt.timezone.utc)
        out.append({"t": int(ts.timestamp() * 1000), "equity": equity, "balance": balance,
                    "daily_floor": daily_floor, "max_loss": max_loss, "decisions": list(_pairs(decisions))})
    return out


__all__ = ["DECISION_POINTS", "PER_MINUTE", "Point", "Sampler", "keep", "minute_of", "point_of", "read",
           "record"]
