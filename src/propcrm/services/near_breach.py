"""Near-breach alerts: risk staff hear of an account that comes within the firm's distance of a loss limit
before it breaches — once per account, limit and trading day, not on every event.

**Where.** Both evaluation drivers (the embedded worker and the partitioned workers) have their engine watch
the accounts of a firm that set a distance (:func:`zone_of` → ``Engine.watch_lows``, engine/lows.py): per
account, limit and trading day it notes the *worst point of the batch* — the applied event (equity update,
close, tick marking the positions, day rollover…) that brought equity nearest the first daily-loss or
max-loss level while within the distance, measured against the level as it stood then — and the driver hands
those points over with the outcome (``AccountOutcome.lows``). So a dip into the zone and a recovery inside
one batch alert, naming the dip's equity and time. The evaluation write path
(:func:`services.outcomes.write_outcomes`) calls :func:`check` with a batch's outcomes, in the batch's
transaction; for each point (not crossed: a breach has its own decision and notification) it adds one
``near_breach_alerts`` row (all of a batch's in one statement, their audit entries and outbox rows likewise) — unique on (account, limit, trading day), so a repeat is a no-op on either backend —
and one ``notify`` outbox row (the existing path: in-app for admin and risk, the risk desk's e-mail, the firm's
webhook). A process-wide memo of what was alerted today keeps an account sitting near its floor from costing a
statement per event. An outcome without points (a driver that did not watch, e.g. the first batch after a
firm set its distance in another process) is measured on the state the batch ended with, as the accounts
list's figures (:func:`services.accounts.stored_figures`) give it.

**Distance.** ``within_pct``: the distance as a percentage of equity, as the accounts list's "near" filter
measures it; ``within_amount``: the distance in the account's currency, as its "near_amount" filter. Either or
both (an account alerts when it is within either); neither: alerts off.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import weakref
from collections import OrderedDict
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import event, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_lifecycle import NearBreachAlert, NearBreachSettings
from ..engine.lows import Zone
from . import audit
from .accounts import figures_for_states, money
from .errors import Conflict, Invalid, NotFound

UTC = dt.timezone.utc
LIMITS = (("daily_loss", "daily_distance", "daily_floor"), ("max_loss", "max_loss_distance", "max_loss_level"))
LIMIT_NAMES = {"daily_loss": "daily loss", "max_loss": "max loss"}
SETTINGS_TTL = 30.0  # seconds a worker keeps a firm's settings (a change in another process arrives after it)
MEMO_SIZE = 100_000
HUNDRED = Decimal(100)
_INSERT_ROWS = 1000  # alerts per insert statement


class _Memo:
    """What this process already alerted (account, limit, trading day), and the firms' settings, bounded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.alerted: OrderedDict[tuple[int, str, dt.date], None] = OrderedDict()
        self.settings: dict[str, tuple[float, Decimal | None, Decimal | None]] = {}

    def seen(self, key: tuple[int, str, dt.date]) -> bool:
        with self.lock:
            return key in self.alerted

    def remember(self, key: tuple[int, str, dt.date]) -> None:
        with self.lock:
            self.alerted[key] = None
            while len(self.alerted) > MEMO_SIZE:
                self.alerted.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.alerted.clear()
            self.settings.clear()


_MEMOS: "weakref.WeakKeyDictionary[Any, _Memo]" = weakref.WeakKeyDictionary()
_MEMOS_LOCK = threading.Lock()


def memo_of(session: Session) -> _Memo:
    """The memo of the database ``session`` works on (one per engine: two databases never share one)."""
    engine = session.get_bind()
    with _MEMOS_LOCK:
        found = _MEMOS.get(engine)
        if found is None:
            found = _MEMOS[engine] = _Memo()
        return found


MAX_AMOUNT = Decimal("1000000000000")


def _decimal(name: str, value: Any, *, maximum: Decimal, cents: bool = False) -> Decimal:
    """A distance as typed: a finite decimal in (0, maximum], to the cent at most for an amount."""
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise Invalid(f"{name}: a decimal number such as \"1.5\", or empty for off") from None
    if not amount.is_finite() or amount <= 0 or amount > maximum:
        raise Invalid(f"{name}: more than 0 and at most {maximum} (or empty for off)")
    if cents and amount != amount.quantize(Decimal("0.01")):
        raise Invalid(f"{name}: to the cent at most (such as \"500.00\")")
    return amount


def settings_of(session: Session, firm_id: str) -> NearBreachSettings | None:
    return session.get(NearBreachSettings, firm_id)


def update_settings(session: Session, *, firm_id: str, within_pct: Any, within_amount: Any,
                    actor: str) -> NearBreachSettings:
    """Set the firm's alert distance (empty: that measure off); audited."""
    pct = _decimal("within_pct", within_pct, maximum=HUNDRED) if within_pct not in (None, "") else None
    amount = (_decimal("within_amount", within_amount, maximum=MAX_AMOUNT, cents=True)
              if within_amount not in (None, "") else None)
    row = session.get(NearBreachSettings, firm_id)
    before = {"within_pct": row.within_pct, "within_amount": row.within_amount} if row else None
    if row is None:
        row = NearBreachSettings(firm_id=firm_id)
        session.add(row)
    row.within_pct, row.within_amount = pct, amount
    row.updated_by, row.updated_at = actor, dt.datetime.now(UTC)
    audit.append(session, actor=actor, action="near_breach.settings", entity="firm", entity_id=firm_id,
                 before=before, after={"within_pct": pct, "within_amount": amount}, firm_id=firm_id)
    memo = memo_of(session)
    with memo.lock:
        memo.settings.pop(firm_id, None)
    return row


def _distances(session: Session, firm_ids: set[str]) -> dict[str, tuple[Decimal | None, Decimal | None]]:
    """The alert distances of these firms (cached for ``SETTINGS_TTL``); firms with none are left out."""
    now = time.monotonic()
    memo = memo_of(session)
    out: dict[str, tuple[Decimal | None, Decimal | None]] = {}
    missing = []
    with memo.lock:
        for firm in firm_ids:
            cached = memo.settings.get(firm)
            if cached is not None and cached[0] > now:
                if cached[1] is not None or cached[2] is not None:
                    out[firm] = (cached[1], cached[2])
            else:
                missing.append(firm)
    if missing:
        found = {row.firm_id: row for row in session.scalars(
            select(NearBreachSettings).where(NearBreachSettings.firm_id.in_(sorted(missing))))}
        with memo.lock:
            for firm in missing:
                row = found.get(firm)
                pct, amount = (row.within_pct, row.within_amount) if row is not None else (None, None)
                memo.settings[firm] = (now + SETTINGS_TTL, pct, amount)
                if pct is not None or amount is not None:
                    out[firm] = (pct, amount)
    return out


def zone_of(session: Session, firm_id: str) -> Zone | None:
    """The firm's alert distance as the engine watches it (None: alerts off, the engine watches nothing)."""
    found = _distances(session, {firm_id}).get(firm_id)
    return Zone(*found) if found is not None else None


def _remember_after_commit(session: Session, memo: _Memo, key: tuple[int, str, dt.date]) -> None:
    """Remember ``key`` once the batch's transaction commits: a batch that rolls back (and is applied again)
    must alert again."""
    pending = session.info.get("near_breach_pending")
    if pending is None:
        pending = session.info["near_breach_pending"] = []

        def committed(_session: Session) -> None:
            for k in pending:
                memo.remember(k)
            pending.clear()

        def rolled_back(_session: Session) -> None:
            pending.clear()

        event.listen(session, "after_commit", committed)
        event.listen(session, "after_soft_rollback", rolled_back)
    pending.append(key)


def _points(session: Session, live: list[Any], now: dt.datetime) -> list[list[tuple]]:
    """Per outcome, its candidate points ``(rule, trading day, equity, level, distance, reached at)``: the
    worst points the engine noted, or (not watched) the limits of the state the batch ended with."""
    out: list[list[tuple] | None] = [
        [(p.rule, p.trading_day or now.date(), p.equity, p.level, p.distance, p.ts) for p in o.lows]
        if o.lows is not None else None for o in live]
    unwatched = [o for o, points in zip(live, out) if points is None]
    if unwatched:
        figures = iter(figures_for_states(
            session, ((o.account.pack_version_id, o.account.phase, o.state) for o in unwatched)))
        for i, o in enumerate(live):
            if out[i] is None:
                f, st = next(figures), o.state
                out[i] = [(rule, st.trading_day or now.date(), st.equity, f.get(level_key), f.get(distance_key),
                           st.last_ts) for rule, distance_key, level_key in LIMITS
                          if f.get(distance_key) is not None and f.get(level_key) is not None]
    return out  # type: ignore[return-value]


def check(session: Session, outcomes: list[Any], now: dt.datetime) -> int:
    """Alert on the batch's accounts that came within their firm's distance of a limit; returns the alerts
    added (at most one per account, limit and trading day, ever).

    Set-wise per batch: one multi-row insert of the candidate alerts (a repeat is skipped by the unique
    key, on either backend), one :func:`audit.append_many` of the new ones and one insert of their outbox
    rows — the same rows, in the same order, as one statement per alert wrote."""
    firms = _distances(session, {o.account.firm_id for o in outcomes})
    if not firms:
        return 0
    live = [o for o in outcomes if o.account.firm_id in firms and o.state.status in ("active", "paused")]
    if not live:
        return 0
    memo = memo_of(session)
    candidates: dict[tuple[int, str, dt.date], tuple[Any, str, dt.date, Any, Any, Any, Any]] = {}
    for outcome, points in zip(live, _points(session, live, now)):
        account = outcome.account
        zone = Zone(*firms[account.firm_id])
        for rule, day, equity, level, distance, reached_at in points:
            if not zone.within(distance, equity):
                continue
            key = (account.id, rule, day)
            if key in candidates or memo.seen(key):
                continue
            candidates[key] = (account, rule, day, equity, level, distance, reached_at)
    if not candidates:
        return 0
    table = NearBreachAlert.__table__
    make = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    rows = [dict(firm_id=account.firm_id, account_id=account.id, limit_rule=rule, trading_day=day, equity=equity,
                 level=level, distance=distance, reached_at=reached_at, created_at=now)
            for account, rule, day, equity, level, distance, reached_at in candidates.values()]
    added_ids: dict[tuple[int, str, dt.date], int] = {}
    for start in range(0, len(rows), _INSERT_ROWS):  # (the backends' limits on bound parameters)
        statement = make(table).values(rows[start : start + _INSERT_ROWS]).on_conflict_do_nothing(
            index_elements=["account_id", "limit_rule", "trading_day"]).returning(
            table.c.id, table.c.account_id, table.c.limit_rule, table.c.trading_day)
        added_ids.update(((account_id, rule, day), alert_id)
                         for alert_id, account_id, rule, day in session.execute(statement))
    for key in candidates:
        _remember_after_commit(session, memo, key)
    entries: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for key, (account, rule, day, equity, level, distance, reached_at) in candidates.items():
        alert_id = added_ids.get(key)
        if alert_id is None:  # alerted before (another process, or before a restart)
            continue
        at = _when(reached_at)
        entries.append(dict(actor="system:near_breach", action="near_breach.alert", entity="account",
                            entity_id=str(account.id),
                            after={"alert": alert_id, "account": account.external_id, "rule": rule,
                                   "trading_day": day.isoformat(), "equity": money(equity), "level": money(level),
                                   "distance": money(distance), "reached_at": at}, firm_id=account.firm_id))
        name = LIMIT_NAMES[rule]
        moment = f" at {at.replace('T', ' ').replace('+00:00', ' UTC')}" if at else ""
        message = (f"Equity {money(equity)} was {money(distance)} above the {name} level {money(level)}"
                   f"{moment} (trading day {day.isoformat()}).")
        messages.append({
            "firm_id": account.firm_id, "kind": "notify", "dedupe_key": f"near_breach:{alert_id}",
            "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now,
            "payload": {"kind": "near_breach", "account": account.external_id, "platform": account.platform,
                        "login": account.login, "rule": rule, "message": message, "trader_id": None,
                        "alert": alert_id, "trading_day": day.isoformat(), "distance": money(distance),
                        "level": money(level), "equity": money(equity), "reached_at": at}})
    if entries:
        audit.append_many(session, entries)
        session.execute(insert(m.OutboxMessage.__table__), messages)
    return len(entries)


def _when(ts: dt.datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat(timespec="seconds") if ts is not None else None


def list_alerts(session: Session, *, firm_id: str, unseen_only: bool = False, limit: int = 100,
                offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    from sqlalchemy import func

    where = [NearBreachAlert.firm_id == firm_id]
    if unseen_only:
        where.append(NearBreachAlert.seen_at.is_(None))
    total = session.scalar(select(func.count()).select_from(NearBreachAlert).where(*where)) or 0
    rows = session.execute(
        select(NearBreachAlert, m.Account.external_id, m.Account.status, m.Trader.name, m.Trader.id)
        .join(m.Account, m.Account.id == NearBreachAlert.account_id)
        .outerjoin(m.Trader, m.Trader.id == m.Account.trader_id)
        .where(*where).order_by(NearBreachAlert.id.desc()).limit(limit).offset(offset))
    return [{"id": a.id, "account_id": a.account_id, "account": ext, "status": status, "trader": trader,
             "trader_id": trader_id, "rule": a.limit_rule, "trading_day": a.trading_day, "equity": a.equity,
             "level": a.level, "distance": a.distance, "reached_at": a.reached_at, "created_at": a.created_at, "seen_by": a.seen_by,
             "seen_at": a.seen_at} for a, ext, status, trader, trader_id in rows], int(total)


def mark_seen(session: Session, *, firm_id: str, alert_id: int, actor: str) -> NearBreachAlert:
    row = session.get(NearBreachAlert, alert_id)
    if row is None or row.firm_id != firm_id:
        raise NotFound(f"no alert {alert_id}")
    if row.seen_at is not None:
        raise Conflict(f"alert {alert_id} was already seen by {row.seen_by}")
    row.seen_by, row.seen_at = actor, dt.datetime.now(UTC)
    audit.append(session, actor=actor, action="near_breach.seen", entity="account", entity_id=str(row.account_id),
                 after={"alert": row.id, "rule": row.limit_rule, "trading_day": row.trading_day.isoformat()},
                 firm_id=firm_id)
    return row


__all__ = ["LIMITS", "check", "memo_of", "zone_of", "list_alerts", "mark_seen", "settings_of", "update_settings"]
