"""Reads of the trader portal that the services do not offer as such: the room of each loss limit (for
the "left" bars), the stored raw event behind a decision, and times in the pack's timezone.

Everything here is scoped by the caller's firm and trader (``services.accounts.get_account`` raises
``NotFound`` outside it) and reads only: the numbers come from the engine's stored state and its own
rule objects (``room``, ``derivation``), never from a re-derivation in the web layer.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..domain.rules.limits import DailyLossRule, MaxLossRule
from ..services import accounts as account_service
from ..services import decisions as decision_service
from ..services.accounts import compiled_pack, get_account
from .queries_trades import Timing, program_and_state, timing

UTC = dt.timezone.utc
HUNDRED = Decimal(100)
ZERO = Decimal(0)

# the fields of a raw event a trader reads first, in this order (every other field follows)
EVENT_FIELDS = ("id", "type", "account", "ts", "equity", "balance", "amount", "reason", "position", "symbol",
                "side", "lots", "price", "profit", "commission", "swap")


def _dec(text: Any) -> Decimal | None:
    if text is None or text == "":
        return None
    try:
        value = Decimal(str(text))
    except ArithmeticError:
        return None
    return value if value.is_finite() else None


@dataclass
class Bar:
    """One progress bar: ``value`` of ``maximum`` (numbers for ``<meter>``/``<progress>``), and the words."""

    label: str
    value: Decimal
    maximum: Decimal
    text: str
    detail: str = ""
    state: str = "ok"  # ok | low | bad | done | none
    low: Decimal | None = None
    high: Decimal | None = None

    @property
    def kind(self) -> str:
        """``progress`` (towards a goal) or ``meter`` (room left, with low/high marks)."""
        return "meter" if self.low is not None else "progress"

    def attr(self, name: str) -> str:
        """A number for an HTML attribute: plain decimal text, never exponent notation."""
        value = getattr(self, name)
        return "" if value is None else format(Decimal(value).quantize(Decimal("0.01")), "f")

    @property
    def pct(self) -> str:
        if not self.maximum:
            return "0"
        share = max(min(self.value / self.maximum * HUNDRED, HUNDRED), ZERO)
        return format(share.quantize(Decimal("0.1")), "f")


@dataclass
class AccountCard:
    detail: dict[str, Any]
    bars: list[Bar] = field(default_factory=list)
    derivations: dict[str, str] = field(default_factory=dict)  # rule id -> the engine's formula in words
    breach: dict[str, Any] | None = None  # the latest breach decision (failed accounts)
    timing: Timing | None = None  # start, phase deadline, today's P/L, the next daily reset

    @property
    def failed(self) -> bool:
        return self.detail["status"] == "breached" or self.breach is not None and self.detail["status"] in (
            "breached", "closed", "suspended")


def _rooms(program, stored) -> tuple[dict[str, Decimal], dict[str, str]]:
    """The room of each loss limit (what the limit allows below its reference: the day's base, or the
    trailing peak) and the engine's formula in words, from the stored state."""
    st = stored if stored is not None else program.new_state("-")  # as figures() does
    rooms: dict[str, Decimal] = {}
    words: dict[str, str] = {}
    for rule in program.limits:
        if not isinstance(rule, (DailyLossRule, MaxLossRule)):
            continue
        level = st.levels[rule.slot]
        if level is None or not level.is_finite():
            continue
        try:
            room = rule.room(st)
            rooms[rule.rule_id] = room
            words[rule.rule_id] = rule.derivation(st)
        except (ArithmeticError, TypeError, AttributeError, IndexError):  # a level not set yet
            continue
    return rooms, words


def _left_bar(label: str, limit: dict[str, Any] | None, room: Decimal | None, what: str) -> Bar | None:
    if limit is None:
        return None
    level, distance = _dec(limit.get("level")), _dec(limit.get("distance"))
    if level is None or distance is None or room is None or room <= 0:
        return Bar(label=label, value=ZERO, maximum=Decimal(1), state="none",
                   text="set when the first trading day starts" if level is None else "—")
    left = max(distance, ZERO)
    state = "bad" if distance <= 0 else "low" if distance < room * Decimal("0.3") else "ok"
    # above its reference (a profit today, or above the start) equity may fall more than the allowance
    text = f"{_fmt(left)} of {_fmt(room)} left" if left <= room else f"{_fmt(left)} left (allowance {_fmt(room)})"
    return Bar(label=label, value=min(left, room), maximum=room, state=state, low=room * Decimal("0.3"),
               high=room * Decimal("0.6"), text=text,
               detail=f"{what} {_fmt(level)}; equity may fall {_fmt(left)} more")


def _fmt(value: Decimal) -> str:
    from ..http.pages import fmt_money

    return fmt_money(value)


def bars_of(detail: dict[str, Any], rooms: dict[str, Decimal]) -> list[Bar]:
    """Target, daily loss left, max loss left and trading days of an ``account_detail``."""
    bars: list[Bar] = []
    target = detail.get("target")
    if target is not None:
        pct = _dec(target.get("progress_pct"))
        pct = ZERO if pct is None else pct
        shown = max(min(pct, HUNDRED), ZERO)
        words = ("target reached" if target.get("met") else f"{format(pct, 'f')}% of the way" if pct >= 0
                 else f"{format(-pct, 'f')}% below the start")
        bars.append(Bar(
            label="Profit target", value=shown, maximum=HUNDRED, state="done" if target.get("met") else "ok",
            text=words,
            detail=f"measured {_fmt(_dec(target.get('measured')) or ZERO)} of {_fmt(_dec(target.get('balance')) or ZERO)}"
                   f"; {_fmt(_dec(target.get('remaining')) or ZERO)} to go"))
    daily = detail.get("daily_floor")
    bar = _left_bar("Daily loss left", daily, rooms.get(daily["rule"]) if daily else None, "daily floor")
    if bar:
        bars.append(bar)
    most = detail.get("max_loss_level")
    bar = _left_bar("Max loss left", most, rooms.get(most["rule"]) if most else None, "max-loss level")
    if bar:
        bars.append(bar)
    days = detail.get("trading_days") or {}
    required = days.get("required")
    count = int(days.get("count") or 0)
    if required:
        bars.append(Bar(label="Trading days", value=Decimal(min(count, required)), maximum=Decimal(required),
                        state="done" if count >= required else "ok", text=f"{count} of {required} days",
                        detail="days with a position opened" if count < required else "minimum reached"))
    else:
        bars.append(Bar(label="Trading days", value=Decimal(count), maximum=Decimal(max(count, 1)), state="none",
                        text=f"{count} day{'s' if count != 1 else ''}", detail="no minimum in this phase"))
    return bars


def my_accounts(session: Session, *, firm_id: str, trader_id: int) -> list[AccountCard]:
    """The trader's accounts, newest first, each with its figures and bars."""
    page = account_service.list_accounts(session, firm_id=firm_id, trader_id=trader_id, sort="-id", limit=200)
    return [card(session, firm_id=firm_id, trader_id=trader_id, account_id=item["id"]) for item in page.items]


def card(session: Session, *, firm_id: str, trader_id: int, account_id: int) -> AccountCard:
    detail = account_service.account_detail(session, firm_id=firm_id, account_id=account_id, trader_id=trader_id)
    account = get_account(session, firm_id=firm_id, account_id=account_id, trader_id=trader_id)
    program, st = program_and_state(session, account)
    rooms, words = _rooms(program, st)
    out = AccountCard(detail=detail, bars=bars_of(detail, rooms), derivations=words,
                      timing=timing(account, program, st, dt.datetime.now(UTC)))
    if detail["status"] in ("breached", "closed", "suspended"):
        found = decision_service.list_decisions(session, firm_id=firm_id, trader_id=trader_id,
                                                account_id=account_id, kind="breach", limit=1)
        out.breach = found.items[0] if found.items else None
    return out


# --------------------------------------------------------------------------------------------------
# why did my account fail


@dataclass
class Why:
    decision: dict[str, Any]
    event: dict[str, Any] | None  # the stored raw event (fields as sent), or None when not stored here
    event_status: str | None
    local_time: str
    timezone: str
    rule_kind: str | None


DETAIL_LABELS = {
    "base": "Daily floor measured from",
    "base_value": "Figure at day start",
    "amount": "Loss allowed (room)",
    "trading_day": "Trading day",
    "trailing": "Level trails",
    "peak": "Peak the level trails from",
    "locked": "Level stopped trailing",
    "level": "Level",
    "until": "Until",
}
MONEY_DETAILS = {"base_value", "amount", "peak", "level", "deducted", "profit", "loss", "limit"}
BASE_WORDS = {"balance": "balance at day start", "equity": "equity at day start",
              "max_balance_equity": "the higher of balance and equity at day start", "initial": "initial balance"}
COMPARATOR_WORDS = {"below": "breached when equity falls below it", "at_or_below": "breached when equity reaches it or falls below",
                    "above": "reached when above it", "at_or_above": "reached at or above it"}


def detail_rows(details: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """A decision's recorded numbers as (label, value, is money) rows, in words where there are words."""
    rows = []
    for key, value in (details or {}).items():
        if value is None or isinstance(value, (dict, list)):
            continue
        if key == "base":
            value = BASE_WORDS.get(str(value), value)
        if key == "trailing":
            value = {"none": "no (a static level)", "equity_intraday": "highest equity, intraday",
                     "balance_intraday": "highest closed balance, intraday",
                     "balance_eod": "highest end-of-day balance"}.get(str(value), value)
        if isinstance(value, bool):
            value = "yes" if value else "no"
        label = DETAIL_LABELS.get(key, key.replace("_", " ").capitalize())
        rows.append((label, value, key in MONEY_DETAILS and _dec(value) is not None))
    return rows


def raw_event(session: Session, *, firm_id: str, account_id: int, seq: int | None,
              event_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """The event a decision names, as the platform sent it: an event of this account, or a firm-wide one
    without an account (a clock or news event that triggered a deadline, inactivity or news rule)."""
    query = select(m.RawEvent).where(m.RawEvent.firm_id == firm_id,
                                     (m.RawEvent.account_id == account_id) | m.RawEvent.account_id.is_(None))
    row = None
    if seq is not None:
        # (the seq names a stored event of the same id; in the scale-out mode it is a stream sequence)
        row = session.scalars(query.where(m.RawEvent.seq == seq, m.RawEvent.event_id == event_id)).first()
    if row is None:
        row = session.scalars(query.where(m.RawEvent.event_id == event_id).order_by(m.RawEvent.seq.desc())).first()
    if row is None:
        return None, None
    try:
        body = json.loads(row.body)
    except (ValueError, TypeError):
        return None, row.status
    if not isinstance(body, dict):
        return None, row.status
    ordered = {k: body[k] for k in EVENT_FIELDS if k in body}
    ordered.update({k: v for k, v in body.items() if k not in ordered})
    return ordered, row.status


def in_zone(instant: dt.datetime, zone: str) -> str:
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    local = instant.astimezone(ZoneInfo(zone))
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()} ({zone})"


def rule_kind(session: Session, account: m.Account, phase: str, rule_id: str) -> str | None:
    version = session.get(m.RulePackVersion, account.pack_version_id)
    try:
        program = compiled_pack(version).phase(phase)
    except KeyError:
        return None
    for rule in [*program.rules, program.target]:
        if rule is not None and getattr(rule, "rule_id", None) == rule_id:
            return getattr(rule, "kind", None)
    return None


def why(session: Session, *, firm_id: str, trader_id: int, account_id: int) -> tuple[list[Why], str]:
    """Every breach of the account, newest first, with its stored event and local time; and the pack's
    timezone."""
    account = get_account(session, firm_id=firm_id, account_id=account_id, trader_id=trader_id)
    version = session.get(m.RulePackVersion, account.pack_version_id)
    zone = compiled_pack(version).pack.timezone
    breaches = decision_service.list_decisions(session, firm_id=firm_id, trader_id=trader_id, account_id=account_id,
                                               kind="breach", limit=20).items
    out = []
    for d in breaches:
        event, status = raw_event(session, firm_id=firm_id, account_id=account.id, seq=d["event_seq"],
                                  event_id=d["event_id"])
        out.append(Why(decision=d, event=event, event_status=status, local_time=in_zone(d["ts"], zone),
                       timezone=zone, rule_kind=rule_kind(session, account, d["phase"], d["rule"])))
    return out, zone


__all__ = ["AccountCard", "Bar", "Why", "bars_of", "card", "in_zone", "my_accounts", "raw_event", "why"]
