"""The connector's cheaper paths give exactly what the general ones give (issue 20's per-event CPU):
a Web API deal straight from its typed struct, fixed-offset server clocks, RFC 3339 stamps, and the
poll's two-step decoding of deals."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from propcrm.adapters.platforms.mt5.mapping import Mt5Deal, deal_events
from propcrm.adapters.platforms.mt5.webapi import _DEAL, DealHead, WebDeal, _in_runs, _runs
from propcrm.adapters.platforms.port import rfc3339
from propcrm.adapters.platforms.servertime import EPOCH, ServerClock

UTC = dt.timezone.utc
money = st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=2, allow_nan=False,
                    allow_infinity=False)
price = st.decimals(min_value=Decimal(0), max_value=Decimal("1e6"), places=5, allow_nan=False, allow_infinity=False)
volume = st.sampled_from([0, 1, 100, 10_000, 123_456, 1_000_000, 50_000_000, 100_000_000, 1_234_567_890])


@st.composite
def web_deals(draw) -> WebDeal:
    return WebDeal(Deal=draw(st.integers(1, 2**40)), Login=draw(st.integers(1, 2**31)), Order=draw(st.integers(0, 2**40)),
                   Action=draw(st.integers(0, 20)), Entry=draw(st.integers(0, 3)),
                   Time=draw(st.integers(0, 4_000_000_000)), TimeMsc=draw(st.sampled_from([0, 1_700_000_000_123])),
                   Symbol=draw(st.sampled_from(["", "EURUSD", "XAUUSD"])), Price=draw(price), PriceSL=draw(price),
                   PriceTP=draw(price), Volume=draw(volume), VolumeExt=draw(volume), VolumeClosed=draw(volume),
                   VolumeClosedExt=draw(volume), Profit=draw(money), Storage=draw(money), Commission=draw(money),
                   PositionID=draw(st.integers(0, 2**40)), Reason=draw(st.integers(0, 6)),
                   Comment=draw(st.sampled_from(["", "pc init x", "pc reset", "robot"])))


@settings(max_examples=300, deadline=None)
@given(web_deals(), st.sampled_from(["UTC", "+02:00", "-05:30", "Europe/Athens"]))
def test_a_web_deal_maps_the_same_from_its_struct_as_through_the_general_reader(deal, zone):
    clock = ServerClock(zone)
    fast, general = Mt5Deal.from_web(deal), Mt5Deal.from_record(deal)
    assert fast == general
    assert [(e.login, e.ts, e.body, e.kind) for e in deal_events(fast, clock)] == \
        [(e.login, e.ts, e.body, e.kind) for e in deal_events(general, clock)]


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 5_000_000_000_000), st.sampled_from(["UTC", "+02:00", "+03:00", "-05:30", "Europe/Athens"]))
def test_server_milliseconds_to_utc_as_the_zone_rules_give_them(ms, zone):
    clock = ServerClock(zone)
    fast = clock.ms_to_utc(ms)
    general = clock.wall_to_utc(EPOCH + dt.timedelta(milliseconds=ms))
    assert fast == general and fast.tzinfo is general.tzinfo and fast.isoformat() == general.isoformat()


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, dt.timezone(dt.timedelta(hours=2)),
                                               dt.timezone(dt.timedelta(hours=-5, minutes=-30))])))
def test_rfc3339_is_strftime_s_form(ts):
    assert rfc3339(ts) == ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 60), max_size=30), st.integers(0, 70))
def test_a_ticket_is_in_the_runs_of_the_tickets_it_is_among(tickets, ticket):
    assert _in_runs(ticket, _runs(tickets)) == (ticket in set(tickets))


def test_a_deal_s_head_and_its_whole_decode_from_the_same_answer_bytes():
    raw = (b'{"Deal":"9000005","ExternalID":"","Login":"100000","Time":"1772622001","TimeMsc":"1772622001750",'
           b'"Symbol":"EURUSD","Price":"1.08508","Profit":"0.00","VolumeExt":"100000000"}')
    head = msgspec.json.Decoder(DealHead, strict=False).decode(raw)
    assert (head.Deal, head.Login, head.Time, head.TimeMsc) == (9000005, 100000, 1772622001, 1772622001750)
    whole = _DEAL.decode(msgspec.Raw(raw))
    assert whole.Deal == 9000005 and whole.Price == Decimal("1.08508") and whole.VolumeExt == 100_000_000
