"""Money, prices and lots are bounded in magnitude, decimal places and digits wherever an event is
decoded (ingestion, files, the bus, replay): a value a firm's books cannot hold is refused with the
line, the field and the limit — it never reaches the engine or the database."""

from __future__ import annotations

import json
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from propcrm.domain.events import (
    DECODER,
    MAX_DIGITS,
    MAX_MAGNITUDE,
    MAX_PLACES,
    Equity,
    TradeClosed,
    TradeOpened,
    decode_lines,
)

TS = "2026-03-02T10:00:00Z"


def equity_line(value: str, *, raw_number: bool = False) -> bytes:
    quoted = value if raw_number else json.dumps(value)
    return (f'{{"id":"e1","type":"equity","account":"A1","ts":"{TS}","equity":{quoted},'
            f'"balance":"100000"}}').encode()


def reason(line: bytes) -> str:
    events, _, rejected = decode_lines(line)
    assert not events, f"{line[:120]!r} must be refused"
    assert len(rejected) == 1 and rejected[0].line == 1
    return rejected[0].reason


@pytest.mark.parametrize("value", ["100000000000000000", "-1e17", "1e30", "1000000000000", "-1000000000000"])
def test_money_of_a_trillion_or_more_is_refused_naming_the_field_and_the_limit(value):
    text = reason(equity_line(value))
    assert text.startswith("`equity`:")
    assert "10^12" in text


@pytest.mark.parametrize("value", ["1e30", "1e999999", "-1e17", "9" * 200_000])
def test_json_numbers_out_of_bounds_are_refused_too(value):
    text = reason(equity_line(value, raw_number=True))
    assert text.startswith("`equity`:") and "10^12" in text
    assert len(text) < 200, "the refusal must not echo a huge number"


def test_two_hundred_thousand_nines_as_a_string_are_refused_briefly():
    text = reason(equity_line("9" * 200_000))
    assert text.startswith("`equity`:") and "200000 digits" in text and len(text) < 200


def test_more_than_eight_decimal_places_are_refused_but_trailing_zeros_are_not():
    assert "8 decimal places" in reason(equity_line("1.000000001"))
    assert "8 decimal places" in reason(equity_line("1e-30"))
    event = DECODER.decode(equity_line("99820.250000000000"))  # a bridge printing doubles
    assert event.equity == Decimal("99820.25")
    assert str(event.equity) == "99820.250000000000", "values keep the form they were sent in"


def test_more_digits_than_the_limit_are_refused_even_when_they_are_zeros():
    text = reason(equity_line("1." + "0" * 40))
    assert f"{MAX_DIGITS} digits" in text


def test_a_trade_profit_of_1e30_and_lots_of_1e1000000_are_refused():
    closed = (f'{{"id":"c1","type":"trade_closed","account":"A1","ts":"{TS}","position":"p1","lots":"1",'
              f'"price":"1.1","profit":1e30}}').encode()
    assert reason(closed).startswith("`profit`:")
    opened = (f'{{"id":"o1","type":"trade_opened","account":"A1","ts":"{TS}","position":"p1","symbol":"EURUSD",'
              f'"side":"buy","lots":"1e1000000","price":"1.1"}}').encode()
    assert reason(opened).startswith("`lots`:")


@pytest.mark.parametrize("field", ["margin", "floating"])
def test_optional_equity_figures_are_bounded_and_finite(field):
    line = (f'{{"id":"e1","type":"equity","account":"A1","ts":"{TS}","equity":"1","balance":"1",'
            f'"{field}":"NaN"}}').encode()
    assert reason(line).startswith(f"`{field}`:")
    line = line.replace(b'"NaN"', b'"1e13"')
    assert reason(line).startswith(f"`{field}`:")


def test_values_just_inside_the_bounds_are_accepted_exactly():
    top = "999999999999.99999999"
    event = DECODER.decode(equity_line("-" + top))
    assert event.equity == -Decimal(top)
    assert MAX_MAGNITUDE == Decimal(10) ** 12 and MAX_PLACES == 8
    opened = DECODER.decode(json.dumps({
        "id": "o1", "type": "trade_opened", "account": "A1", "ts": TS, "position": "p1", "symbol": "X",
        "side": "buy", "lots": "0.00000001", "price": top}).encode())
    assert isinstance(opened, TradeOpened) and opened.lots == Decimal("1e-8")


in_bounds = st.decimals(min_value=-MAX_MAGNITUDE + Decimal("1e-8"), max_value=MAX_MAGNITUDE - Decimal("1e-8"),
                        places=MAX_PLACES, allow_nan=False, allow_infinity=False)


@given(profit=in_bounds, commission=in_bounds)
def test_every_value_inside_the_bounds_is_accepted_as_sent(profit, commission):
    raw = msgspec.json.encode({"id": "c", "type": "trade_closed", "account": "A1", "ts": TS, "position": "p",
                               "lots": "1", "price": "1", "profit": str(profit), "commission": str(commission)})
    event = DECODER.decode(raw)
    assert isinstance(event, TradeClosed) and event.profit == profit and event.commission == commission


@given(st.decimals(allow_nan=True, allow_infinity=True))
def test_any_decimal_is_either_accepted_in_bounds_or_refused_naming_the_field(value):
    raw = equity_line(str(value))
    events, _, rejected = decode_lines(raw)
    if events:
        assert isinstance(events[0], Equity)
        assert abs(events[0].equity) < MAX_MAGNITUDE
        assert events[0].equity == events[0].equity.quantize(Decimal(1).scaleb(-MAX_PLACES))
    else:
        assert rejected[0].reason.startswith("`equity`:")
