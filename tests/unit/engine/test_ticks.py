"""Mark-to-market (issue 15): price ticks revalue open positions and every limit is checked at the tick.

Worked examples first (each says what a trader or a risk officer sees), then the exactness property:
tick-level equity against an independent computation from scratch with fractions.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from propcrm.domain.events import Balance, Equity, Price, TradeClosed, TradeOpened
from propcrm.domain.market import Market, SymbolSpec, Tick, parse_symbol_table
from propcrm.domain.program import compile_pack
from propcrm.engine.runner import Engine

from support.packs import parsed

D = Decimal
UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday

TABLE = parse_symbol_table(
    [
        {"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "100000", "digits": 5},
        {"symbol": "USDJPY", "profit_currency": "JPY", "contract_size": "100000", "digits": 3},
        {"symbol": "EURGBP", "profit_currency": "GBP", "contract_size": "100000"},
        {"symbol": "XAUUSD", "profit_currency": "USD", "contract_size": "100"},
        {"symbol": "ES", "profit_currency": "USD", "tick_size": "0.25", "tick_value": "12.50"},
    ]
)

TWO_STEP = """
id: ticks
version: 1
currency: USD
initial_balance: "100000"
timezone: Europe/Prague
day_start: "00:00"
phases:
  - name: phase-1
    rules:
      - {kind: daily_loss, amount: {pct_initial: 5}, base: balance}
      - {kind: max_loss, amount: {pct_initial: 10}, trailing: none}
      - {kind: profit_target, amount: {pct_initial: 10}}
"""

TRAILING = """
id: trail
version: 1
currency: USD
initial_balance: "50000"
timezone: America/Chicago
day_start: "17:00"
phases:
  - name: eval
    rules:
      - {kind: max_loss, amount: {absolute: "2000"}, trailing: equity_intraday, comparator: at_or_below}
"""


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


class Feed:
    """One engine with the table, and terse constructors for its events."""

    def __init__(self, pack: str = TWO_STEP, table=TABLE) -> None:
        self.engine = Engine(compile_pack(parsed(pack)))
        self.engine.set_symbols(table)
        self.n = 0
        self.t = 0

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def feed(self, *events):
        return self.engine.feed(list(events))

    def tick(self, symbol: str, bid: str, ask: str, s: int):
        return self.feed(Price(id=self._id("t"), ts=at(s), symbol=symbol, bid=D(bid), ask=D(ask)))

    def open(self, pos: str, symbol: str, side: str, lots: str, price: str, s: int, account: str = "A1"):
        return self.feed(TradeOpened(id=self._id("o"), ts=at(s), account=account, position=pos, symbol=symbol,
                                     side=side, lots=D(lots), price=D(price)))

    def close(self, pos: str, lots: str, price: str, profit: str, s: int, account: str = "A1", commission: str = "0"):
        return self.feed(TradeClosed(id=self._id("c"), ts=at(s), account=account, position=pos, lots=D(lots),
                                     price=D(price), profit=D(profit), commission=D(commission)))

    def equity(self, equity: str, balance: str, s: int, account: str = "A1"):
        return self.feed(Equity(id=self._id("e"), ts=at(s), account=account, equity=D(equity), balance=D(balance)))

    def state(self, account: str = "A1"):
        return self.engine.state(account)


# ------------------------------------------------------------------ worked examples


def test_a_floating_loss_crossing_the_daily_floor_between_two_equity_reports_is_caught_at_the_tick():
    f = Feed()
    f.tick("EURUSD", "1.08500", "1.08510", 0)
    f.open("p1", "EURUSD", "buy", "10", "1.08510", 10)  # worth the bid at once: 10 lots × 100,000 × −0.0001 = −100
    assert f.state().equity == D("99900")
    assert f.equity("99900.00", "100000.00", 60) == []  # the platform's report at 09:01
    assert f.tick("EURUSD", "1.08100", "1.08110", 120) == []  # −4,100: above the floor 95,000
    decisions = f.tick("EURUSD", "1.08005", "1.08015", 180)  # −5,050 → equity 94,950 < 95,000
    assert [(d.kind, d.rule, d.event_id) for d in decisions] == [("breach", "daily_loss", "t5")]
    breach = decisions[0]
    assert breach.value == D("94950") and breach.threshold == D("95000")
    assert "at the tick EURUSD bid 1.08005 / ask 1.08015 at 2026-03-02 09:03:00 UTC" in breach.message
    assert breach.details["tick"] == {"symbol": "EURUSD", "bid": D("1.08005"), "ask": D("1.08015"), "ts": at(180)}
    # the next platform report (09:05) would have been the first to see it without ticks
    assert f.equity("94950.00", "100000.00", 300) == []
    assert f.state().status == "breached"


def test_a_buy_is_valued_at_the_bid_and_a_sell_at_the_ask():
    f = Feed()
    f.open("long", "XAUUSD", "buy", "2", "2000.00", 0)
    f.open("short", "XAUUSD", "sell", "1", "2000.00", 1)
    f.tick("XAUUSD", "2010.00", "2010.50", 2)
    positions = f.state().positions
    assert positions["long"].mark == D("2000")  # (2010.00 − 2000) × 2 × 100
    assert positions["short"].mark == D("-1050")  # (2000 − 2010.50) × 1 × 100
    assert f.state().equity == D("100950")


def test_futures_are_valued_with_tick_size_and_tick_value():
    f = Feed()
    f.open("p", "ES", "buy", "2", "5000.00", 0)
    f.tick("ES", "4990.00", "4990.25", 1)
    assert f.state().positions["p"].mark == D("-1000")  # −10 / 0.25 × 12.50 × 2


def test_a_profit_in_another_currency_is_converted_at_the_pair_s_mid_price():
    f = Feed()
    f.tick("USDJPY", "149.990", "150.010", 0)  # mid 150
    f.open("p", "USDJPY", "sell", "1", "151.010", 1)  # (151.010 − 150.010) × 100,000 JPY = 100,000 JPY / 150
    assert f.state().positions["p"].mark == D("666.66666667")  # rounded once, half-even, 8 places
    f.open("g", "EURGBP", "buy", "1", "0.85000", 2)  # GBPUSD not priced yet: not marked
    f.tick("EURGBP", "0.85100", "0.85110", 3)
    assert f.state().positions["g"].mark is None
    f.tick("GBPUSD", "1.26990", "1.27010", 4)  # the conversion pair's tick marks it: 100 GBP × 1.27
    assert f.state().positions["g"].mark == D("127")


def test_the_platform_equity_stays_the_truth_and_the_drift_is_recorded():
    f = Feed()
    f.tick("EURUSD", "1.10000", "1.10010", 0)
    f.open("p1", "EURUSD", "buy", "1", "1.10010", 1)
    f.tick("EURUSD", "1.09000", "1.09010", 2)  # −1,010 marked
    assert f.state().equity == D("98990")
    f.equity("98983.50", "100000.00", 3)  # swap and commission the table does not know
    assert f.state().equity == D("98983.50")
    assert f.state().tick_drift == D("-6.50")
    f.tick("EURUSD", "1.09100", "1.09110", 4)  # ticks move on from the platform's figure
    assert f.state().equity == D("99083.50")
    summary = f.engine.programs["A1"].summary(f.state())
    assert summary["tick_drift"] == D("-6.50")


def test_an_intraday_trailing_level_follows_the_real_peak_between_reports():
    f = Feed(TRAILING)
    f.tick("ES", "5000.00", "5000.25", 0)
    f.open("p", "ES", "buy", "4", "5000.25", 1)  # −50 at once
    f.equity("49950", "50000", 2)
    f.tick("ES", "5025.00", "5025.25", 3)  # +4,950 floating: peak 54,950, level 52,950
    st_ = f.state()
    assert st_.peaks[0] == D("54950") and st_.levels[0] == D("52950")
    decisions = f.tick("ES", "5020.00", "5020.25", 4)  # −1,000: equity 53,950 still above 52,950
    assert decisions == []
    decisions = f.tick("ES", "5015.00", "5015.25", 5)  # equity 52,950 touches the trailing level
    assert [(d.kind, d.rule) for d in decisions] == [("breach", "max_loss")]
    assert "highest equity (floating P/L included) 54,950.00" in decisions[0].message
    assert "at the tick ES bid 5015.00" in decisions[0].message


def test_closing_a_marked_position_replaces_its_mark_with_the_realised_result():
    f = Feed()
    f.open("p", "EURUSD", "buy", "2", "1.10000", 0)
    f.tick("EURUSD", "1.09500", "1.09510", 1)  # −1,000
    f.close("p", "1", "1.09600", "-800", 2, commission="-7")  # half closed at 1.096: −800 realised
    st_ = f.state()
    assert st_.balance == D("99193")
    assert st_.positions["p"].mark == D("-500")  # the remaining lot at the last bid
    assert st_.equity == D("98693")  # 99,193 − 500
    f.close("p", "1", "1.09600", "-800", 3)
    assert (f.state().equity, f.state().marked) == (D("98393"), False)  # flat: equity is the balance


def test_a_tick_touches_only_the_accounts_holding_the_symbol():
    f = Feed()
    f.open("p", "EURUSD", "buy", "1", "1.10000", 0, account="A1")
    f.open("q", "XAUUSD", "buy", "1", "2000.00", 0, account="A2")
    f.equity("100000", "100000", 1, account="A3")
    f.tick("EURUSD", "1.10100", "1.10110", 2)
    assert f.engine.stats.marked == 1
    assert f.state("A1").equity == D("100100") and f.state("A2").equity == D("100000")
    assert f.engine.holders == {"EURUSD": {"A1": None}, "XAUUSD": {"A2": None}}
    f.close("p", "1", "1.10100", "100", 3, account="A1")
    assert "EURUSD" not in f.engine.holders


def test_an_account_its_owner_took_out_of_the_engine_is_forgotten_by_the_next_tick():
    f = Feed()
    f.open("p", "EURUSD", "buy", "1", "1.10000", 0, account="A1")
    f.open("q", "EURUSD", "buy", "1", "1.10000", 0, account="A2")
    del f.engine.states["A1"]  # as a partition puts a set-aside account back to before its batch
    assert f.tick("EURUSD", "1.10100", "1.10110", 1) == []
    assert f.engine.holders == {"EURUSD": {"A2": None}} and f.state("A2").equity == D("100100")


def test_an_older_tick_is_ignored_and_without_a_table_prices_move_nothing():
    f = Feed()
    f.open("p", "EURUSD", "buy", "1", "1.10000", 0)
    f.tick("EURUSD", "1.10100", "1.10110", 10)
    f.tick("EURUSD", "1.00000", "1.00010", 5)
    assert f.state().equity == D("100100") and f.engine.stats.stale_ticks == 1
    plain = Feed(table=None)
    plain.open("p", "EURUSD", "buy", "1", "1.10000", 0)
    assert plain.tick("EURUSD", "1.00000", "1.00010", 1) == []
    assert plain.state().equity == D("100000") and plain.state().positions["p"].mark is None


def test_a_snapshot_keeps_the_marks_and_the_index():
    f = Feed()
    f.open("p", "EURUSD", "buy", "10", "1.08510", 0)
    f.tick("EURUSD", "1.08500", "1.08510", 1)
    blob = f.engine.snapshot()
    again = Engine(f.engine.program_for)
    again.restore(blob)
    assert again.holders == {"EURUSD": {"A1": None}}
    decisions = again.feed([Price(id="late", ts=at(2), symbol="EURUSD", bid=D("1.03"), ask=D("1.0301"))])
    assert [d.kind for d in decisions] == ["breach"]


def test_a_tick_after_the_day_end_rolls_the_day_over_before_it_is_valued():
    f = Feed()
    f.open("p", "EURUSD", "buy", "10", "1.10000", 0)
    f.tick("EURUSD", "1.09700", "1.09710", 60)  # −3,000 today
    next_day = int(dt.timedelta(hours=15, minutes=30).total_seconds())  # 00:30 Prague, Tuesday
    decisions = f.tick("EURUSD", "1.09550", "1.09560", next_day)
    assert decisions == []
    st_ = f.state()  # the new day starts with the equity before the tick
    assert st_.trading_day == dt.date(2026, 3, 3) and st_.day_start_equity == D("97000")
    assert st_.equity == D("95500") and st_.status == "active"


# ------------------------------------------------------------------ exactness (hypothesis)

LENIENT = """
id: lenient
version: 1
currency: USD
initial_balance: "10000000"
timezone: Europe/Prague
day_start: "00:00"
phases:
  - name: eval
    rules:
      - {kind: daily_loss, amount: {pct_initial: 50}, base: equity, on_breach: pause}
      - {kind: max_loss, amount: {absolute: "9000000"}, trailing: equity_intraday, comparator: at_or_below}
      - {kind: early_warning, at_pct: [50]}
"""

TIGHT = LENIENT.replace("pct_initial: 50", "pct_initial: 0.5").replace('"9000000"', '"150000"')

# symbol → (price of 1 as a count of its smallest step, the step, spread in steps)
GRID = {
    "EURUSD": (108000, D("0.00001"), 12),
    "USDJPY": (150000, D("0.001"), 15),
    "EURGBP": (85000, D("0.00001"), 9),
    "GBPUSD": (127000, D("0.00001"), 11),
    "XAUUSD": (200000, D("0.01"), 30),
    "ES": (20000, D("0.25"), 1),
}
TRADED = ["EURUSD", "USDJPY", "EURGBP", "XAUUSD", "ES"]

# The strategies a history is drawn from, built once: hypothesis keeps a strategy's validation and label on the
# object, so a fresh ``sampled_from([...])`` per draw pays them again for every event of every example. Same
# elements in the same order, so the same histories as building them in place.
GAPS = st.sampled_from([0, 1, 7, 600])
KINDS = st.sampled_from(["tick"] * 6 + ["open", "open", "close", "equity", "balance"])
WHO = st.sampled_from(["A1", "A2"])
QUOTED, OPENED = st.sampled_from(sorted(GRID)), st.sampled_from(TRADED)
SIZES = st.sampled_from([D("0.01"), D("0.37"), D("1"), D("3.5")])
SIDES = st.sampled_from(["buy", "sell"])
TICK_MOVE = {s: st.integers(-centre // 20, centre // 20) for s, (centre, _, _) in GRID.items()}
OPEN_AT = {s: st.integers(-centre // 50, centre // 50) for s, (centre, _, _) in GRID.items()}
PROFITS, COMMISSIONS = st.integers(-500_000, 500_000), st.integers(0, 900)
MONEY, AMOUNTS = st.integers(990_000_000, 1_010_000_000), st.integers(-90_000, 90_000)


@st.composite
def tick_histories(draw):
    accounts = ["A1", "A2"]
    open_: dict[str, dict[str, D]] = {a: {} for a in accounts}
    events, t = [], T0
    for serial in range(draw(st.integers(1, 70))):
        t += dt.timedelta(seconds=draw(GAPS))
        eid = f"x{serial}"
        kind = draw(KINDS)
        account = draw(WHO)
        if kind == "tick":
            symbol = draw(QUOTED)
            centre, step, spread = GRID[symbol]
            bid = (centre + draw(TICK_MOVE[symbol])) * step
            events.append(Price(id=eid, ts=t, symbol=symbol, bid=bid, ask=bid + spread * step))
        elif kind == "open":
            symbol = draw(OPENED)
            centre, step, _ = GRID[symbol]
            lots = draw(SIZES)
            open_[account][eid] = lots
            events.append(TradeOpened(id=eid, ts=t, account=account, position=eid, symbol=symbol,
                                      side=draw(SIDES), lots=lots,
                                      price=(centre + draw(OPEN_AT[symbol])) * step))
        elif kind == "close" and open_[account]:
            pos = draw(st.sampled_from(sorted(open_[account])))
            held = open_[account][pos]
            lots = draw(st.sampled_from([held, held / 2]))
            if lots == held:
                del open_[account][pos]
            else:
                open_[account][pos] = held - lots
            events.append(TradeClosed(id=eid, ts=t, account=account, position=pos, lots=lots, price=D("1"),
                                      profit=D(draw(PROFITS)).scaleb(-2),
                                      commission=-D(draw(COMMISSIONS)).scaleb(-2)))
        elif kind == "equity":
            equity = D(draw(MONEY)).scaleb(-2)
            events.append(Equity(id=eid, ts=t, account=account, equity=equity,
                                 balance=D(draw(MONEY)).scaleb(-2)))
        elif kind == "balance":
            events.append(Balance(id=eid, ts=t, account=account, amount=D(draw(AMOUNTS)).scaleb(-2),
                                  reason="adjustment"))
    return events


def _fraction_mark(spec: SymbolSpec, side: str, lots: D, open_price: D, prices: dict, currency: str):
    """The position's value from scratch with fractions, rounded half-even to 8 places; None if unpriced."""
    if spec.symbol not in prices:
        return None
    bid, ask = (Fraction(x) for x in prices[spec.symbol])
    profit = spec.profit_currency
    if profit == currency:
        rate = Fraction(1)
    elif profit + currency in prices:
        rate = sum(Fraction(x) for x in prices[profit + currency]) / 2
    elif currency + profit in prices:
        rate = 2 / sum(Fraction(x) for x in prices[currency + profit])
    else:
        return None
    move = bid - Fraction(open_price) if side == "buy" else Fraction(open_price) - ask
    unit = Fraction(spec.tick_value) / Fraction(spec.tick_size) if spec.tick_size else Fraction(spec.contract_size)
    return D(round(move * Fraction(lots) * unit * rate * 10**8)).scaleb(-8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tick_histories(), st.sampled_from([LENIENT, TIGHT]))
def test_tick_level_equity_equals_an_independent_computation_from_scratch(events, pack):
    """After every event, equity = (what the platform and the books say) + Σ each open position valued
    from scratch at the current prices; the band shortcut decides exactly what full evaluation does."""
    specs = TABLE.by_symbol()
    fast = Feed(pack)
    full = Feed(pack)
    carried = {"A1": D("10000000"), "A2": D("10000000")}  # equity − Σ marks: moved only by money, not prices
    prices: dict[str, tuple[D, D]] = {}
    opened: dict[str, dict[str, list]] = {"A1": {}, "A2": {}}  # position → [spec, side, lots, open price]
    fast_out, full_out = [], []

    def floating(account: str) -> D:
        total = D(0)
        for spec, side, lots, price in opened[account].values():
            mark = _fraction_mark(spec, side, lots, price, prices, "USD")
            total += mark if mark is not None else 0
        return total

    for ev in events:
        account = getattr(ev, "account", None)
        live = account is None or (fast.state(account) is None or fast.state(account).status in ("active", "paused"))
        fast_out += fast.feed(ev)
        for state in full.engine.states.values():  # no band: every tick and report takes the full path
            state.low_watch = D("Infinity")
        full_out += full.feed(ev)
        if isinstance(ev, Price):
            prices[ev.symbol] = (ev.bid, ev.ask)
        elif not live:
            continue
        elif isinstance(ev, TradeOpened):
            opened[account][ev.position] = [specs[ev.symbol], ev.side, ev.lots, ev.price]
        elif isinstance(ev, TradeClosed):
            spec, side, lots, price = opened[account][ev.position]
            marked = _fraction_mark(spec, side, lots, price, prices, "USD") is not None
            carried[account] += ev.net if marked else ev.commission + ev.swap
            if lots == ev.lots:
                del opened[account][ev.position]
            else:
                opened[account][ev.position][2] = lots - ev.lots
            if not any(opened[a] for a in (account,)):
                carried[account] = fast.state(account).balance
        elif isinstance(ev, Equity):
            carried[account] = ev.equity - floating(account)
        elif isinstance(ev, Balance):
            carried[account] += ev.amount
        for name, state in fast.engine.states.items():
            if state.status in ("active", "paused") and state.phase_start is not None:
                assert state.equity == carried[name] + floating(name), (name, ev)
    assert [d.message for d in fast_out] == [d.message for d in full_out]
    for name, state in fast.engine.states.items():
        other = full.state(name)
        assert (state.status, state.equity, state.levels, state.peaks) == (
            other.status, other.equity, other.levels, other.peaks)


def test_the_symbol_table_is_validated_at_the_edge_naming_the_field():
    with pytest.raises(ValueError, match="contract_size"):
        parse_symbol_table([{"symbol": "EURUSD", "profit_currency": "USD"}])
    with pytest.raises(ValueError, match="tick_value"):
        parse_symbol_table([{"symbol": "ES", "profit_currency": "USD", "tick_size": "0.25"}])
    with pytest.raises(ValueError, match="profit_currency"):
        parse_symbol_table([{"symbol": "EURUSD", "profit_currency": "usd", "contract_size": "1"}])
    with pytest.raises(ValueError, match="contract_size"):
        parse_symbol_table([{"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "-1"}])
    with pytest.raises(ValueError, match="listed twice"):
        parse_symbol_table([{"symbol": "X", "profit_currency": "USD", "contract_size": "1"}] * 2)
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_symbol_table(b"{")


def test_a_mark_is_rounded_half_to_even_at_the_eighth_place():
    market = Market(symbols=TABLE.by_symbol())
    market.price("USDJPY", Tick(T0, D("100.000"), D("100.000")))
    # 0.0005 JPY × 100,000 per lot / 100 = 0.5 USD per lot: 1e-8 lots are worth 5e-9 USD
    assert market.mark("USDJPY", "buy", D("0.00000001"), D("99.9995"), "USD") == D("0.00000000")  # 0.5e-8 → 0
    assert market.mark("USDJPY", "buy", D("0.00000003"), D("99.9995"), "USD") == D("0.00000002")  # 1.5e-8 → 2e-8
    assert market.mark("USDJPY", "buy", D("0.00000005"), D("99.9995"), "USD") == D("0.00000002")  # 2.5e-8 → 2e-8
    assert market.mark("USDJPY", "sell", D("0.00000003"), D("100.0005"), "USD") == D("0.00000002")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tick_histories(), st.sampled_from([LENIENT, TIGHT]), st.data())
def test_a_history_with_ticks_cut_into_snapshotted_chunks_replays_to_the_same_bytes(events, pack, data):
    from propcrm.domain.decisions import to_ndjson

    whole = Feed(pack)
    expected = whole.engine.feed(events)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(events)), max_size=4)))) + [len(events)]
    engine = Feed(pack).engine
    got, start = [], 0
    for cut in cuts:
        got += engine.feed(events[start:cut])
        fresh = Engine(engine.program_for)
        fresh.restore(engine.snapshot())
        engine, start = fresh, cut
    assert to_ndjson(got) == to_ndjson(expected)
    for name, state in whole.engine.states.items():
        assert engine.states[name] == state


def test_every_decision_names_its_own_tick_when_one_tick_decides_for_many_accounts():
    """A tick's text is written once and shared by the decisions it causes (``Ctx.decide``): the next
    tick, of the same symbol or another, names itself."""
    f = Feed()
    f.tick("EURUSD", "1.08500", "1.08510", 0)
    f.tick("XAUUSD", "2000.00", "2000.50", 0)
    for account in ("A1", "A2"):
        f.open("p1", "EURUSD", "buy", "10", "1.08510", 10, account=account)
    f.open("p1", "EURUSD", "buy", "5", "1.08510", 10, account="A3")
    f.open("p2", "XAUUSD", "buy", "10", "2000.50", 10, account="A3")
    first = f.tick("EURUSD", "1.08005", "1.08015", 180)  # A1 and A2 through the daily floor
    assert [(d.account, d.kind) for d in first] == [("A1", "breach"), ("A2", "breach")]
    assert all("at the tick EURUSD bid 1.08005 / ask 1.08015 at 2026-03-02 09:03:00 UTC" in d.message for d in first)
    second = f.tick("XAUUSD", "1995.00", "1995.50", 200)  # A3: −2,525 then −5,500 → 91,975 < 95,000
    assert [(d.account, d.kind) for d in second] == [("A3", "breach")]
    assert "at the tick XAUUSD bid 1995.00 / ask 1995.50 at 2026-03-02 09:03:20 UTC" in second[0].message
