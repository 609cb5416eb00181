"""MetaTrader 5 deals → propcrm events: one mapping for the Web API, the Manager API bridge and the
terminal's history report.

Written from MetaQuotes' documentation of ``IMTDeal`` (the Web API's deal "Data Structure" and the
``EnDealAction`` / ``EnDealEntry`` / ``EnDealReason`` enumerations):

========================  =====================================================================
deal                      propcrm events (ids from the deal ticket)
========================  =====================================================================
BUY/SELL, ENTRY_IN        ``trade_opened`` ``deal-<ticket>`` (position = ``PositionID``); a
                          commission charged on entry also as ``balance`` ``fee``
                          ``deal-<ticket>-fee`` (MT5 takes it from the balance at once)
BUY/SELL, ENTRY_OUT,      ``trade_closed`` ``deal-<ticket>`` with ``profit``, ``commission``,
ENTRY_OUT_BY              ``swap`` (= ``Storage``) and ``reason`` from ``Reason`` (SL, TP, SO)
BUY/SELL, ENTRY_INOUT     (netting reversal) ``trade_closed`` ``deal-<ticket>-out`` of
                          ``VolumeClosed`` and ``trade_opened`` ``deal-<ticket>-in`` of the rest,
                          as a new position named by the deal's ``Order``
BALANCE                   ``balance`` ``deposit``/``withdrawal`` — except operations propcrm
                          itself made and already recorded (comment ``pc init …``,
                          ``pc payout …``), which are skipped
CHARGE, COMMISSION*,      ``balance`` ``fee`` (or ``adjustment`` when positive)
TAX, AGENT_*
CORRECTION, INTEREST,     ``balance`` ``adjustment``
DIVIDEND*, SO_COMPENSATION
CREDIT, BONUS, *_CREDIT   nothing: credit is not the trader's balance (MT5's equity includes it —
                          see docs/platforms.md)
BUY/SELL_CANCELED         nothing, and a warning: a cancelled deal cannot be un-applied
========================  =====================================================================

Volumes: ``VolumeExt`` is 1/100,000,000 lot, ``Volume`` 1/10,000 lot. Times: ``TimeMsc`` (or
``Time``) in *server* time, converted by the connection's :class:`~..servertime.ServerClock`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from ..port import PlatformEvent, PlatformPosition
from ..servertime import ServerClock

log = logging.getLogger("propcrm.platforms.mt5")

# IMTDeal::EnDealAction
DEAL_BUY, DEAL_SELL, DEAL_BALANCE, DEAL_CREDIT, DEAL_CHARGE, DEAL_CORRECTION, DEAL_BONUS = 0, 1, 2, 3, 4, 5, 6
DEAL_COMMISSION, DEAL_COMMISSION_DAILY, DEAL_COMMISSION_MONTHLY = 7, 8, 9
DEAL_AGENT_DAILY, DEAL_AGENT_MONTHLY, DEAL_INTERESTRATE = 10, 11, 12
DEAL_BUY_CANCELED, DEAL_SELL_CANCELED = 13, 14
DEAL_DIVIDEND, DEAL_DIVIDEND_FRANKED, DEAL_TAX, DEAL_AGENT = 15, 16, 17, 18
DEAL_SO_COMPENSATION, DEAL_SO_COMPENSATION_CREDIT = 19, 20
# IMTDeal::EnDealEntry
ENTRY_IN, ENTRY_OUT, ENTRY_INOUT, ENTRY_OUT_BY = 0, 1, 2, 3
# IMTDeal::EnDealReason (those propcrm names)
DEAL_REASON_SL, DEAL_REASON_TP, DEAL_REASON_SO = 3, 4, 5
# IMTPosition::EnPositionAction
POSITION_BUY, POSITION_SELL = 0, 1

FEES = {DEAL_COMMISSION, DEAL_COMMISSION_DAILY, DEAL_COMMISSION_MONTHLY, DEAL_AGENT_DAILY, DEAL_AGENT_MONTHLY,
        DEAL_TAX, DEAL_AGENT, DEAL_CHARGE}
ADJUSTMENTS = {DEAL_CORRECTION, DEAL_INTERESTRATE, DEAL_DIVIDEND, DEAL_DIVIDEND_FRANKED, DEAL_SO_COMPENSATION}
NOT_BALANCE = {DEAL_CREDIT, DEAL_BONUS, DEAL_SO_COMPENSATION_CREDIT}
PROPCRM_RECORDED = ("pc init", "pc payout")
"""Comments of balance operations propcrm made and recorded itself (see features.platforms.commands)."""

ZERO = Decimal(0)
LOT_EXT = Decimal(100_000_000)
LOT = Decimal(10_000)


def dec(value: Any, default: Decimal = ZERO) -> Decimal:
    """A platform number (a JSON string such as ``"26000.00"``, an int, a Decimal) as a Decimal."""
    if isinstance(value, Decimal):  # what the Web API's decoder gives: the common case first
        return value
    if value is None or value == "":
        return default
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):  # never produced by our decoders; str() keeps the shortest repr
        value = repr(value)
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None


CENT = Decimal("0.01")


def money(value: Any) -> Decimal:
    """Money as the platform reports it: a decimal string as it is; a double (the Manager API's
    values are C doubles) rounded to the cent, half up."""
    if isinstance(value, float):
        return Decimal(repr(value)).quantize(CENT, rounding=ROUND_HALF_UP)
    return dec(value)


def norm(value: Decimal) -> Decimal:
    """Without trailing zeros, never in exponent form (``1.00000000`` → ``1``, ``100`` stays ``100``)."""
    value = value.normalize()
    return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value


def integer(value: Any, default: int = 0) -> int:
    if type(value) is int:  # the Web API's decoder and the Manager API give ints: no detour through text
        return value
    if value is None or value == "":
        return default
    return int(Decimal(str(value)))


@dataclass(frozen=True, slots=True)
class Mt5Deal:
    deal: int
    login: str
    action: int
    entry: int
    time_ms: int  # server time, milliseconds
    symbol: str
    price: Decimal
    lots: Decimal
    profit: Decimal
    storage: Decimal
    commission: Decimal
    position: int
    order: int = 0
    reason: int = 0
    comment: str = ""
    price_sl: Decimal = ZERO
    price_tp: Decimal = ZERO
    lots_closed: Decimal = ZERO

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | Any) -> Mt5Deal:
        """From a Web API deal (JSON object with the documented field names) or anything with those
        names as attributes (the Manager API's ``MTDeal``)."""
        get = record.get if isinstance(record, Mapping) else (lambda name, default=None: getattr(record, name, default))
        time_ms = integer(get("TimeMsc"))
        if not time_ms:
            time_ms = integer(get("Time")) * 1000
        if get("VolumeExt") not in (None, "", 0, "0"):
            lots = dec(get("VolumeExt")) / LOT_EXT
        else:
            lots = dec(get("Volume")) / LOT
        if get("VolumeClosedExt") not in (None, "", 0, "0"):
            closed = dec(get("VolumeClosedExt")) / LOT_EXT
        else:
            closed = dec(get("VolumeClosed")) / LOT
        return cls(deal=integer(get("Deal")), login=str(integer(get("Login"))), action=integer(get("Action")),
                   entry=integer(get("Entry")), time_ms=time_ms, symbol=str(get("Symbol") or ""),
                   price=dec(get("Price")), lots=norm(lots) if lots else ZERO, profit=money(get("Profit")),
                   storage=money(get("Storage")), commission=money(get("Commission")),
                   position=integer(get("PositionID")), order=integer(get("Order")), reason=integer(get("Reason")),
                   comment=str(get("Comment") or ""), price_sl=dec(get("PriceSL")), price_tp=dec(get("PriceTP")),
                   lots_closed=norm(closed) if closed else ZERO)


    @classmethod
    def from_web(cls, record: Any) -> Mt5Deal:
        """:meth:`from_record` for a decoded Web API deal (``webapi.WebDeal``: ints and Decimals already),
        the same values without the detours a mapping or a foreign object needs."""
        time_ms = record.TimeMsc or record.Time * 1000
        lots = _lots(record.VolumeExt, LOT_EXT) if record.VolumeExt else _lots(record.Volume, LOT)
        closed = (_lots(record.VolumeClosedExt, LOT_EXT) if record.VolumeClosedExt
                  else _lots(record.VolumeClosed, LOT))
        return cls(deal=record.Deal, login=str(record.Login), action=record.Action, entry=record.Entry,
                   time_ms=time_ms, symbol=record.Symbol or "", price=record.Price, lots=lots, profit=record.Profit,
                   storage=record.Storage, commission=record.Commission, position=record.PositionID,
                   order=record.Order, reason=record.Reason, comment=record.Comment or "", price_sl=record.PriceSL,
                   price_tp=record.PriceTP, lots_closed=closed)


_LOTS: dict[tuple[int, Decimal], Decimal] = {}


def _lots(volume: int, unit: Decimal) -> Decimal:
    """``norm(Decimal(volume) / unit)`` (``ZERO`` for none), remembered: a platform trades few distinct volumes."""
    key = (volume, unit)
    found = _LOTS.get(key)
    if found is None:
        lots = dec(volume) / unit
        found = norm(lots) if lots else ZERO
        if len(_LOTS) > 10_000:
            _LOTS.clear()
        _LOTS[key] = found
    return found


def _reason(code: int) -> str:
    return {DEAL_REASON_SL: "sl", DEAL_REASON_TP: "tp", DEAL_REASON_SO: "stop_out"}.get(code, "manual")


def deal_events(deal: Mt5Deal, clock: ServerClock) -> list[PlatformEvent]:
    """The propcrm events of one deal (see the module's table)."""
    ts = clock.ms_to_utc(deal.time_ms)
    login = deal.login
    tid = f"deal-{deal.deal}"
    if deal.action in (DEAL_BUY, DEAL_SELL):
        side = "buy" if deal.action == DEAL_BUY else "sell"
        if deal.entry == ENTRY_IN:
            return _opened(deal, ts, tid, str(deal.position), side, deal.lots, with_fee=True)
        if deal.entry in (ENTRY_OUT, ENTRY_OUT_BY):
            return [_closed(deal, ts, tid, str(deal.position), deal.lots)]
        if deal.entry == ENTRY_INOUT:
            closed = deal.lots_closed if deal.lots_closed > 0 else deal.lots
            events = [_closed(deal, ts, f"{tid}-out", str(deal.position), closed)]
            rest = deal.lots - closed
            if rest > 0:
                events += _opened(deal, ts, f"{tid}-in", str(deal.order or deal.deal), side, rest, with_fee=False)
            return events
        log.warning("MT5 deal %s has an unknown entry %s; skipped", deal.deal, deal.entry)
        return []
    if deal.action in (DEAL_BUY_CANCELED, DEAL_SELL_CANCELED):
        log.warning("MT5 deal %s of login %s was cancelled on the platform; propcrm cannot un-apply it", deal.deal,
                    login)
        return []
    amount = deal.profit
    if deal.action in NOT_BALANCE or amount == 0:
        return []
    if deal.action == DEAL_BALANCE:
        if deal.comment.startswith(PROPCRM_RECORDED):
            return []
        reason = "adjustment" if deal.comment.startswith("pc reset") else ("deposit" if amount > 0 else "withdrawal")
    elif deal.action in FEES:
        reason = "fee" if amount < 0 else "adjustment"
    elif deal.action in ADJUSTMENTS:
        reason = "adjustment"
    else:
        log.warning("MT5 deal %s has an unknown action %s; skipped", deal.deal, deal.action)
        return []
    return [PlatformEvent(login, ts, {"id": tid, "type": "balance", "amount": amount, "reason": reason}, "balance")]


def _opened(deal: Mt5Deal, ts: dt.datetime, event_id: str, position: str, side: str, lots: Decimal, *,
            with_fee: bool) -> list[PlatformEvent]:
    body: dict[str, Any] = {"id": event_id, "type": "trade_opened", "position": position, "symbol": deal.symbol,
                            "side": side, "lots": lots, "price": deal.price}
    if deal.price_sl > 0:
        body["sl"] = deal.price_sl
    if deal.price_tp > 0:
        body["tp"] = deal.price_tp
    events = [PlatformEvent(deal.login, ts, body, "deal")]
    if with_fee and deal.commission != 0:
        events.append(PlatformEvent(deal.login, ts, {"id": f"{event_id}-fee", "type": "balance",
                                                     "amount": deal.commission, "reason": "fee"}, "balance"))
    return events


def _closed(deal: Mt5Deal, ts: dt.datetime, event_id: str, position: str, lots: Decimal) -> PlatformEvent:
    body: dict[str, Any] = {"id": event_id, "type": "trade_closed", "position": position, "lots": lots,
                            "price": deal.price, "profit": deal.profit, "commission": deal.commission,
                            "swap": deal.storage, "reason": _reason(deal.reason)}
    return PlatformEvent(deal.login, ts, body, "deal")


def position_from_record(record: Mapping[str, Any] | Any, clock: ServerClock) -> PlatformPosition:
    """A Web API position (or the Manager API's ``MTPosition``) as a :class:`PlatformPosition`."""
    get = record.get if isinstance(record, Mapping) else (lambda name, default=None: getattr(record, name, default))
    if get("VolumeExt") not in (None, "", 0, "0"):
        lots = dec(get("VolumeExt")) / LOT_EXT
    else:
        lots = dec(get("Volume")) / LOT
    created = integer(get("TimeCreateMsc")) or integer(get("TimeCreate")) * 1000
    sl, tp = dec(get("PriceSL")), dec(get("PriceTP"))
    return PlatformPosition(login=str(integer(get("Login"))), position=str(integer(get("Position"))),
                            symbol=str(get("Symbol") or ""),
                            side="buy" if integer(get("Action")) == POSITION_BUY else "sell",
                            lots=norm(lots), price=dec(get("PriceOpen")), opened_at=clock.ms_to_utc(created),
                            sl=sl if sl > 0 else None, tp=tp if tp > 0 else None)


def opening_from_position(position: PlatformPosition) -> PlatformEvent:
    """When the opening deal of a position cannot be found any more: an opening from the position
    itself, its id from the position ticket."""
    body: dict[str, Any] = {"id": f"position-{position.position}-open", "type": "trade_opened",
                            "position": position.position, "symbol": position.symbol, "side": position.side,
                            "lots": position.lots, "price": position.price}
    if position.sl:
        body["sl"] = position.sl
    if position.tp:
        body["tp"] = position.tp
    return PlatformEvent(position.login, position.opened_at, body, "position")


__all__ = ["Mt5Deal", "dec", "money", "norm", "deal_events", "integer", "opening_from_position", "position_from_record"]
