"""The synthetic firm: deterministic, sorted, in the wire contract, and consistent to the cent."""

from __future__ import annotations

import collections
import datetime as dt
import json
import re
from decimal import Decimal

import pytest

from propcrm.domain.events import decode_lines
from propcrm.synth.firm import FirmSpec, STYLES, estimate_events, generate, traders, write_ndjson

# Wednesday start: five trading days Wed, Thu, Fri, Mon, Tue — the time line crosses a weekend.
SPEC = FirmSpec(accounts=200, days=5, start=dt.date(2026, 3, 4), seed=11, prices=True)
INITIAL = SPEC.initial_balance

TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
TS_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
MONEY = re.compile(r"^-?\d+\.\d{2}$")
LOTS = re.compile(r"^\d+\.\d{2}$")
PRICE = re.compile(r"^\d+\.\d+$")

REQUIRED = {
    "trade_opened": {"account", "position", "symbol", "side", "lots", "price"},
    "trade_closed": {"account", "position", "lots", "price", "profit", "commission", "swap"},
    "equity": {"account", "equity", "balance"},
    "balance": {"account", "amount", "reason"},
    "price": {"symbol", "bid", "ask"},
    "session": {"account", "ip", "device"},
    "news": {"title", "impact"},
    "clock": set(),
}
MONEY_FIELDS = {"profit", "commission", "swap", "equity", "balance", "amount"}

# Contract sizes in the quote currency per lot; USDJPY is then converted to USD at the price.
CONTRACT = {"EURUSD": 100_000, "GBPUSD": 100_000, "USDJPY": 100_000, "XAUUSD": 100, "US30": 1}
CENT = Decimal("0.01")


def profit(symbol: str, side: str, open_price: Decimal, mark: Decimal, lots: Decimal) -> Decimal:
    pl = (mark - open_price) * CONTRACT[symbol] * lots
    if side == "sell":
        pl = -pl
    if symbol == "USDJPY":
        pl = pl / mark
    return pl.quantize(CENT)


def when(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return list(generate(SPEC))


@pytest.fixture(scope="module")
def events(lines: list[bytes]) -> list[dict]:
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def styles() -> dict[str, str]:
    return {t.account: t.style for t in traders(SPEC)}


@pytest.fixture(scope="module")
def replay(events: list[dict]) -> dict:
    """Recompute every account's balance and equity from the events alone, with Decimal."""
    prices: dict[str, tuple[Decimal, Decimal]] = {}
    balance: dict[str, Decimal] = collections.defaultdict(lambda: INITIAL)
    positions: dict[str, dict[str, list]] = collections.defaultdict(dict)
    opened: dict[str, dict] = {}
    closes: dict[str, list[dict]] = collections.defaultdict(list)
    equity_seen: dict[str, list[tuple[str, Decimal, Decimal]]] = collections.defaultdict(list)
    mismatches: list[str] = []
    for e in events:
        kind = e["type"]
        if kind == "price":
            prices[e["symbol"]] = (Decimal(e["bid"]), Decimal(e["ask"]))
        elif kind == "trade_opened":
            positions[e["account"]][e["position"]] = [e["symbol"], e["side"], Decimal(e["price"]), Decimal(e["lots"])]
            opened[e["position"]] = e
        elif kind == "trade_closed":
            held = positions[e["account"]][e["position"]]
            lots = Decimal(e["lots"])
            expected = profit(held[0], held[1], held[2], Decimal(e["price"]), lots)
            if Decimal(e["profit"]) != expected:
                mismatches.append(f"profit {e['id']}: {e['profit']} != {expected}")
            if Decimal(e["commission"]) != (-Decimal("7.00") * lots).quantize(CENT):
                mismatches.append(f"commission {e['id']}: {e['commission']}")
            held[3] -= lots
            assert held[3] >= 0, e
            if held[3] == 0:
                del positions[e["account"]][e["position"]]
            balance[e["account"]] += Decimal(e["profit"]) + Decimal(e["commission"]) + Decimal(e["swap"])
            closes[e["position"]].append(e)
        elif kind == "balance":
            balance[e["account"]] += Decimal(e["amount"])
        elif kind == "equity":
            account = e["account"]
            if Decimal(e["balance"]) != balance[account]:
                mismatches.append(f"balance {e['id']}: {e['balance']} != {balance[account]}")
            floating = sum(
                (
                    profit(sym, side, price, prices[sym][0] if side == "buy" else prices[sym][1], lots)
                    for sym, side, price, lots in positions[account].values()
                ),
                Decimal(0),
            )
            if Decimal(e["equity"]) != balance[account] + floating:
                mismatches.append(f"equity {e['id']}: {e['equity']} != {balance[account] + floating}")
            equity_seen[account].append((e["ts"], Decimal(e["equity"]), Decimal(e["balance"])))
    return {
        "mismatches": mismatches,
        "balance": dict(balance),
        "open_at_end": {a: p for a, p in positions.items() if p},
        "opened": opened,
        "closes": closes,
        "equity": equity_seen,
    }


def test_same_spec_gives_the_same_bytes() -> None:
    spec = FirmSpec(accounts=40, days=2, seed=3, prices=True)
    first = b"".join(generate(spec))
    assert first == b"".join(generate(spec))
    assert first != b"".join(generate(FirmSpec(accounts=40, days=2, seed=4, prices=True)))


def test_write_ndjson_counts_what_it_writes(tmp_path) -> None:
    spec = FirmSpec(accounts=30, days=2, seed=5)
    path = tmp_path / "firm.ndjson"
    count = write_ndjson(spec, path)
    data = path.read_bytes()
    assert count == data.count(b"\n") > 0
    assert data == b"".join(generate(spec))


def test_sorted_by_time_and_ids_unique(events: list[dict]) -> None:
    stamps = [e["ts"] for e in events]
    assert stamps == sorted(stamps)  # same format everywhere, so text order is time order
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)
    assert events[0]["ts"].startswith("2026-03-04T00:00")
    assert events[-1]["ts"] == "2026-03-11T00:00:05Z"  # a clock just after the last midnight


def test_every_line_is_json_in_the_wire_contract(lines: list[bytes], events: list[dict]) -> None:
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    for e in events:
        kind = e["type"]
        assert REQUIRED[kind] <= e.keys(), e
        assert TS.match(e["ts"]), e
        for name in MONEY_FIELDS & e.keys():
            assert isinstance(e[name], str) and MONEY.match(e[name]), (name, e)
        if kind == "trade_opened":
            assert LOTS.match(e["lots"]) and Decimal(e["lots"]) > 0, e
            assert e["side"] in ("buy", "sell") and PRICE.match(e["price"]), e
            assert TS_MS.match(e["order_ts"]) and when(e["order_ts"]) < when(e["ts"]), e
            assert e["ip"] and e["device"], e
        elif kind == "trade_closed":
            assert LOTS.match(e["lots"]) and e["reason"] in ("manual", "sl", "tp"), e
            assert Decimal(e["commission"]) < 0, e
        elif kind == "news":
            assert e["impact"] in ("low", "medium", "high") and ("currency" in e or e.get("symbols")), e
        elif kind == "price":
            assert Decimal(e["ask"]) > Decimal(e["bid"]) > 0, e


def test_the_engine_decoder_reads_every_line_as_written(lines: list[bytes]) -> None:
    """The engine's decoder takes every generated line, with each field the generator wrote, exactly."""
    decoded, numbers, rejected = decode_lines(b"".join(lines))
    assert rejected == []
    assert numbers == list(range(1, len(lines) + 1))
    for line, event in zip(lines, decoded, strict=True):
        sent = json.loads(line)
        assert type(event).__struct_config__.tag == sent["type"], sent
        assert set(sent) - {"type"} <= set(event.__struct_fields__), f"fields the engine does not read: {sent}"
        for name in set(sent) - {"type"}:
            value = getattr(event, name)
            if isinstance(value, Decimal):
                assert value == Decimal(sent[name]), (name, sent)
            elif isinstance(value, dt.datetime):
                assert value == when(sent[name]) and value.utcoffset() == dt.timedelta(0), (name, sent)
            else:
                assert value == sent[name], (name, sent)


def test_balance_and_equity_are_consistent_to_the_cent(replay: dict) -> None:
    assert replay["mismatches"] == []
    assert replay["open_at_end"] == {}  # everyone is flat by the last trading day's 21:00


def test_style_shares() -> None:
    for accounts in (7, 200, 1000, 2003):
        counts = collections.Counter(t.style for t in traders(FirmSpec(accounts=accounts)))
        assert sum(counts.values()) == accounts
        for style, share in STYLES:
            assert abs(counts[style] - accounts * share / 100) < 1, (accounts, style, counts)
    spec = FirmSpec(accounts=300, seed=9)
    assert [(t.account, t.style) for t in traders(spec)] == [(t.account, t.style) for t in traders(spec)]
    assert [t.style for t in traders(spec)] != [t.style for t in traders(FirmSpec(accounts=300, seed=10))]


@pytest.mark.parametrize(
    "spec",
    [
        FirmSpec(accounts=300, days=2, seed=1),
        FirmSpec(accounts=80, days=6, seed=2, start=dt.date(2026, 3, 5), equity_every_s=120, prices=True, clock_every_s=0),
    ],
)
def test_estimate_is_within_a_quarter(spec: FirmSpec) -> None:
    actual = sum(1 for _ in generate(spec))
    assert abs(estimate_events(spec) - actual) <= 0.25 * actual


def test_gamblers_blow_the_daily_loss_and_target_hitters_pass(replay: dict, styles: dict[str, str]) -> None:
    floor_breakers = set()
    for account, seen in replay["equity"].items():
        if styles[account] != "gambler":
            continue
        day_start, day = INITIAL, None
        for ts, equity, balance in seen:
            if ts[:10] != day:
                day = ts[:10]
                day_start = balance  # the first snapshot of a day is at most an hour in
            if equity < day_start - INITIAL * Decimal("0.05"):
                floor_breakers.add(account)
    assert len(floor_breakers) >= 3
    hitters = [a for a, s in styles.items() if s == "target_hitter"]
    assert hitters
    for account in hitters:
        assert replay["balance"][account] >= INITIAL * Decimal("1.10"), account


def test_no_trading_on_weekends_but_positions_held_over_it(events: list[dict], replay: dict) -> None:
    held_over = 0
    for e in events:
        if e["type"] in ("trade_opened", "session"):
            assert when(e["ts"]).weekday() < 5, e
        if e["type"] == "trade_closed":
            opened = when(replay["opened"][e["position"]]["ts"])
            if opened.weekday() == 4 and when(e["ts"]).weekday() == 0:
                held_over += 1
    assert held_over >= 1
    clocks = {e["ts"] for e in events if e["type"] == "clock"}
    for day in range(4, 11):
        assert f"2026-03-{day:02d}T00:00:05Z" in clocks
        assert f"2026-03-{day:02d}T22:05:00Z" in clocks
        assert f"2026-03-{day:02d}T12:00:00Z" in clocks  # the hourly cadence


def test_styles_trade_in_character(events: list[dict], replay: dict, styles: dict[str, str]) -> None:
    news_times = [when(e["ts"]) for e in events if e["type"] == "news" and e["impact"] == "high"]
    assert news_times
    by_style: dict[str, list[dict]] = collections.defaultdict(list)
    for e in events:
        if e["type"] == "trade_opened":
            by_style[styles[e["account"]]].append(e)

    def held_s(position: str) -> float:
        return (when(replay["closes"][position][-1]["ts"]) - when(replay["opened"][position]["ts"])).total_seconds()

    scalps = [held_s(e["position"]) for e in by_style["scalper"]]
    assert max(scalps) <= 90 and sum(s < 60 for s in scalps) > len(scalps) / 4
    assert all("sl" not in e for e in by_style["gambler"])
    assert max(Decimal(e["lots"]) for e in by_style["gambler"]) >= 6
    steady = by_style["steady"]
    assert sum("sl" in e for e in steady) > 0.8 * len(steady)
    assert max(Decimal(e["lots"]) for e in steady) <= 1
    near_news = sum(
        1 for e in by_style["news"] if any(abs((when(e["ts"]) - t).total_seconds()) <= 125 for t in news_times)
    )
    assert near_news > len(by_style["news"]) / 3
    swing_holds = [held_s(e["position"]) for e in by_style["swing"]]
    assert max(swing_holds) > 2 * 86_400
    partial = [p for p, closes in replay["closes"].items() if len(closes) == 2]
    assert partial
    assert any(Decimal(c["swap"]) != 0 for closes in replay["closes"].values() for c in closes)
    sessions = collections.Counter((e["account"], e["ts"][:10]) for e in events if e["type"] == "session")
    assert sessions and max(sessions.values()) == 1
