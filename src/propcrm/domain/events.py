"""Trading-platform events: the wire contract of GUIDE §2, decoded by msgspec into typed structs.

Money and prices are :class:`~decimal.Decimal` (decimal strings on the wire; JSON numbers are read
from their text, never through a float), bounded so that every figure derived from them fits the
books (:data:`MAX_MAGNITUDE`, :data:`MAX_PLACES`, :data:`MAX_DIGITS`). Timestamps must carry a UTC offset. Unknown fields are
ignored by the typed event (the raw line is what the event log keeps). Every malformed line is
rejected whole, with its line number, the field and the reason — nothing of it is applied.
"""

from __future__ import annotations

import datetime as dt
from decimal import Context, Decimal, DecimalException, InvalidOperation, Rounded
from typing import Annotated, Literal, Union

import msgspec

UtcTime = Annotated[dt.datetime, msgspec.Meta(tz=True)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Side = Literal["buy", "sell"]
CloseReason = Literal["manual", "sl", "tp", "stop_out", "pending"]
BalanceReason = Literal["deposit", "withdrawal", "adjustment", "payout", "fee"]
Impact = Literal["low", "medium", "high"]

_ZERO = Decimal(0)

#: Every money amount, price and lot size is less than 10^12 in magnitude (a trillion in the account's
#: currency: far above any real account, yet every sum and percentage the engine derives from it still
#: fits NUMERIC(24, 8) and a cent count in 64 bits) …
MAX_MAGNITUDE = Decimal(10) ** 12
#: … has at most 8 decimal places (trailing zeros beyond them are fine: ``1.08512000000`` is 1.08512) …
MAX_PLACES = 8
#: … and is written with at most 24 digits (what a double printed in full needs, and no more).
MAX_DIGITS = 24

# One call checks magnitude and places: quantizing to 8 places with 20 digits of precision fails
# (InvalidOperation) from 10^12 up and signals Rounded when digits beyond the 8th place are dropped.
_BOUNDS = Context(prec=12 + MAX_PLACES, traps=[InvalidOperation, Rounded])
_TO_PLACES = _BOUNDS.quantize
_PLACE = Decimal(1).scaleb(-MAX_PLACES)


def _shown(value: Decimal) -> str:
    """The value for a refusal, cut short: a refusal must not echo a 200,000-digit number."""
    text = str(value)
    if len(text) <= 40:
        return text
    return f"{text[:16]}… ({len(value.as_tuple().digits)} digits)"


def _bounded(name: str, value: Decimal | None) -> None:
    """A finite decimal inside the documented bounds, or ValueError naming the field and the limit."""
    if value is None:
        return
    if not value.is_finite():
        raise ValueError(f"`{name}`: must be a finite decimal, got {value}")
    try:
        _TO_PLACES(value, _PLACE)
        return
    except InvalidOperation:
        raise ValueError(f"`{name}`: must be less than 10^12 in magnitude, got {_shown(value)}") from None
    except DecimalException:  # Rounded: written with more than 8 places; only zeros may follow the 8th
        pass
    sign, digits, exponent = value.as_tuple()
    if len(digits) > MAX_DIGITS:
        raise ValueError(f"`{name}`: must be written with at most {MAX_DIGITS} digits, got {_shown(value)}")
    if any(digits[exponent + MAX_PLACES:]):  # exponent < -MAX_PLACES here
        raise ValueError(f"`{name}`: must have at most {MAX_PLACES} decimal places, got {_shown(value)}")


_finite = _bounded  # (every decimal field is bounded, and therefore finite)


def _positive(name: str, value: Decimal | None) -> None:
    """A bounded decimal greater than 0. The common case costs one comparison and one quantize."""
    if value is None:
        return
    try:
        if value.is_finite() and value > _ZERO:
            _TO_PLACES(value, _PLACE)
            return
    except DecimalException:
        pass
    _bounded(name, value)  # raises with the reason, or passes (zeros beyond the 8th place)
    if not value > _ZERO:
        raise ValueError(f"`{name}`: must be a decimal greater than 0, got {value}")


#: The same check for other edge structs (the symbol table): a bounded decimal greater than 0, or ValueError.
require_positive = _positive


class Event(msgspec.Struct, tag_field="type", frozen=True, gc=False):
    """Base of every event; ``id`` is the idempotency key (unique per source)."""

    id: NonEmpty
    ts: UtcTime


class TradeOpened(Event, tag="trade_opened", frozen=True, gc=False):
    account: NonEmpty
    position: NonEmpty
    symbol: NonEmpty
    side: Side
    lots: Decimal
    price: Decimal
    sl: Decimal | None = None
    tp: Decimal | None = None
    order_ts: UtcTime | None = None
    ip: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        _positive("lots", self.lots)
        _positive("price", self.price)
        _positive("sl", self.sl)
        _positive("tp", self.tp)


class TradeClosed(Event, tag="trade_closed", frozen=True, gc=False):
    account: NonEmpty
    position: NonEmpty
    lots: Decimal
    price: Decimal
    profit: Decimal
    commission: Decimal = _ZERO
    swap: Decimal = _ZERO
    reason: CloseReason | None = None

    def __post_init__(self) -> None:
        _positive("lots", self.lots)
        _positive("price", self.price)
        _finite("profit", self.profit)
        _finite("commission", self.commission)
        _finite("swap", self.swap)

    @property
    def net(self) -> Decimal:
        """Realised result after costs: profit + commission + swap (costs are signed, a charge < 0)."""
        return self.profit + self.commission + self.swap


class Equity(Event, tag="equity", frozen=True, gc=False):
    account: NonEmpty
    equity: Decimal
    balance: Decimal
    margin: Decimal | None = None
    floating: Decimal | None = None

    def __post_init__(self) -> None:
        equity, balance = self.equity, self.balance
        try:  # the hot path of every feed: both figures checked inline, the reason found only on failure
            if equity.is_finite() and balance.is_finite():
                _TO_PLACES(equity, _PLACE)
                _TO_PLACES(balance, _PLACE)
            else:
                raise InvalidOperation
        except DecimalException:
            _bounded("equity", equity)
            _bounded("balance", balance)
        if self.margin is not None or self.floating is not None:
            _bounded("margin", self.margin)
            _bounded("floating", self.floating)


class Balance(Event, tag="balance", frozen=True, gc=False):
    account: NonEmpty
    amount: Decimal
    reason: BalanceReason
    # "position": the event takes effect at its place in the log, at the time of the account's last applied
    # event (its own ``ts`` says when it was written): a payout's withdrawal on the scale-out log, which
    # must neither be out of order nor put a later-arriving older platform event out of order
    at: Literal["position"] | None = None

    def __post_init__(self) -> None:
        _finite("amount", self.amount)


class Price(Event, tag="price", frozen=True, gc=False):
    symbol: NonEmpty
    bid: Decimal
    ask: Decimal

    def __post_init__(self) -> None:
        _positive("bid", self.bid)
        _positive("ask", self.ask)


class Session(Event, tag="session", frozen=True, gc=False):
    account: NonEmpty
    ip: NonEmpty
    device: NonEmpty
    user_agent: str | None = None


class News(Event, tag="news", frozen=True, gc=False):
    title: NonEmpty
    impact: Impact
    currency: Annotated[str, msgspec.Meta(min_length=3, max_length=3)] | None = None
    symbols: list[NonEmpty] | None = None

    def __post_init__(self) -> None:
        if self.currency is None and not self.symbols:
            raise ValueError("`currency` or `symbols`: a news event needs one of them")


class Clock(Event, tag="clock", frozen=True, gc=False):
    """Time has passed. Without ``account`` it advances every account; with one, only that one."""

    account: str | None = None


AnyEvent = Union[TradeOpened, TradeClosed, Equity, Balance, Price, Session, News, Clock]
ACCOUNT_EVENTS = (TradeOpened, TradeClosed, Equity, Balance, Session)
EVENT_TYPES = {cls.__struct_config__.tag: cls for cls in AnyEvent.__args__}  # type: ignore[attr-defined]

DECODER = msgspec.json.Decoder(AnyEvent)
ENCODER = msgspec.json.Encoder(decimal_format="string")


class Rejected(msgspec.Struct, frozen=True):
    """A line or event that was not applied, and why."""

    line: int | None
    reason: str
    id: str | None = None
    account: str | None = None
    kind: Literal["malformed", "duplicate", "out_of_order", "unknown_account", "internal"] = "malformed"


def decode_event(raw: bytes | str) -> AnyEvent:
    """Decode one JSON object; raises :class:`msgspec.ValidationError`/``DecodeError`` with the field."""
    return DECODER.decode(raw)


def decode_lines(buf: bytes, first_line: int = 1) -> tuple[list[AnyEvent], list[int], list[Rejected]]:
    """Decode an NDJSON buffer of whole lines.

    Returns the events, the line number of each event and the rejected lines. The fast path decodes
    the whole buffer at once; only a buffer that contains a bad line is decoded line by line to name it.
    """
    try:
        events = DECODER.decode_lines(buf)
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    else:
        if len(events) == buf.count(b"\n") + (0 if buf.endswith(b"\n") or not buf else 1):
            return events, list(range(first_line, first_line + len(events))), []
    events, numbers, rejected = [], [], []
    for offset, line in enumerate(buf.split(b"\n")):
        if not line.strip():
            continue
        number = first_line + offset
        try:
            events.append(DECODER.decode(line))
            numbers.append(number)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            rejected.append(Rejected(line=number, reason=_explain(exc, line)))
    return events, numbers, rejected


def _explain(exc: Exception, line: bytes) -> str:
    message = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return f"not valid JSON: {message}"
    if " - at `$." in message:
        reason, _, path = message.rpartition(" - at `$.")
        return f"`{path.rstrip('`')}`: {reason}"
    if message.startswith("Object missing required field"):
        return message.replace("Object missing required field", "missing required field")
    return message
