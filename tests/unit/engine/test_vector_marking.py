"""The vector tick screen (``Engine(vector=True)``, engine/marking.py) against the exact Decimal path.

The screen re-values holders in int64 and takes only the accounts that leave their band through the
exact path, settling the others lazily. It must decide exactly what the exact path decides and leave
exactly the same states (to the byte: marks and equity written with the same places), whatever the
stream: opens, partial closes, ticks of converted pairs, equity reports, deposits, day rollovers.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from propcrm.domain.decisions import to_ndjson
from propcrm.domain.events import Balance, Clock, Equity, Price, TradeClosed, TradeOpened
from propcrm.domain.market import parse_symbol_table
from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import parse_pack
from propcrm.engine.marking import mark_from_units, mark_places, to_units
from propcrm.engine.runner import Engine

from support.packs import parsed

D = Decimal
UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday

TABLE = parse_symbol_table(
    [
        {"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "100000"},
        {"symbol": "GBPUSD", "profit_currency": "USD", "contract_size": "100000"},
        {"symbol": "USDJPY", "profit_currency": "JPY", "contract_size": "100000"},
        {"symbol": "EURJPY", "profit_currency": "JPY", "contract_size": "100000"},
        {"symbol": "EURGBP", "profit_currency": "GBP", "contract_size": "100000"},
        {"symbol": "XAUUSD", "profit_currency": "USD", "contract_size": "100"},
        {"symbol": "BTCUSD", "profit_currency": "USD", "contract_size": "1"},
        {"symbol": "ES", "profit_currency": "USD", "tick_size": "0.25", "tick_value": "12.50"},
    ]
)

# a pack whose bands are narrow enough that ticks leave them often: warnings, pauses, breaches, peaks
BANDS = """
id: bands
version: 1
currency: USD
initial_balance: "100000"
timezone: Europe/Prague
day_start: "00:00"
phases:
  - name: eval
    rules:
      - {kind: daily_loss, amount: {pct_initial: 2}, base: max_balance_equity, on_breach: pause}
      - {kind: max_loss, amount: {pct_initial: 4}, trailing: equity_intraday, lock: initial, comparator: below}
      - {kind: profit_target, amount: {pct_initial: 3}, measure: equity}
      - {kind: early_warning, at_pct: [50, 80]}
"""

WIDE = BANDS.replace("pct_initial: 2}", "pct_initial: 40}").replace("pct_initial: 4}", "pct_initial: 60}").replace(
    "pct_initial: 3}", "pct_initial: 90}")

# symbol → (centre as a count of steps, step, spread in steps)
GRID = {
    "EURUSD": (108000, D("0.00001"), 12),
    "GBPUSD": (127000, D("0.00001"), 11),
    "USDJPY": (150000, D("0.001"), 15),
    "EURJPY": (162000, D("0.001"), 17),
    "EURGBP": (85000, D("0.00001"), 9),
    "XAUUSD": (200000, D("0.01"), 30),
    "BTCUSD": (6000000, D("0.01"), 500),
    "ES": (20000, D("0.25"), 1),
}
LOTS = [D("0.01"), D("0.1"), D("0.37"), D("1"), D("3.5"), D("0.001")]
ACCOUNTS = ["A1", "A2", "A3", "A4"]


# The strategies a stream is drawn from, built once: hypothesis caches a strategy's validation and label on the
# object, so a fresh ``sampled_from([...])`` per draw pays them again for every event of every example (most of
# this file's generation time). Same elements in the same order: the same streams as building them in place.
SYMBOLS = st.sampled_from(sorted(GRID))
PRICED_UP_FRONT = st.lists(SYMBOLS, unique=True, max_size=len(GRID))
GAPS = st.sampled_from([0, 1, 7, 600, 3600 * 7])
KINDS = st.sampled_from(["tick"] * 10 + ["open"] * 3 + ["close", "equity", "balance", "clock"])
WHO = st.sampled_from(ACCOUNTS)
SIDES = st.sampled_from(["buy", "sell"])
SIZES = st.sampled_from(LOTS)
ONE_IN_TEN, FINER = st.integers(0, 9), st.integers(1, 9)
PROFITS, COMMISSIONS = st.integers(-300_000, 300_000), st.integers(0, 900)
EQUITIES, BALANCES, AMOUNTS = st.integers(9_700_000, 10_300_000), st.integers(9_900_000, 10_100_000), st.integers(-90_000, 90_000)
TICK_MOVE = {s: st.integers(-centre // 40, centre // 40) for s, (centre, _, _) in GRID.items()}
OPEN_AT = {s: st.integers(-centre // 60, centre // 60) for s, (centre, _, _) in GRID.items()}


@st.composite
def streams(draw, max_events: int = 90):
    open_: dict[str, dict[str, D]] = {a: {} for a in ACCOUNTS}
    events, t = [], T0
    # most symbols priced up front, so most opens are marked at once (and screened)
    for symbol in draw(PRICED_UP_FRONT):
        centre, step, spread = GRID[symbol]
        events.append(Price(id=f"p0{symbol}", ts=t, symbol=symbol, bid=centre * step, ask=(centre + spread) * step))
    for serial in range(draw(st.integers(1, max_events))):
        t += dt.timedelta(seconds=draw(GAPS))
        eid = f"x{serial}"
        kind = draw(KINDS)
        account = draw(WHO)
        if kind == "tick":
            symbol = draw(SYMBOLS)
            centre, step, spread = GRID[symbol]
            bid = (centre + draw(TICK_MOVE[symbol])) * step
            if draw(ONE_IN_TEN) == 0:
                bid += D(draw(FINER)).scaleb(step.as_tuple().exponent - 1)  # a finer quote than before
            events.append(Price(id=eid, ts=t, symbol=symbol, bid=bid, ask=bid + spread * step))
        elif kind == "open":
            symbol = draw(SYMBOLS)
            centre, step, _ = GRID[symbol]
            lots = draw(SIZES)
            open_[account][eid] = lots
            events.append(TradeOpened(id=eid, ts=t, account=account, position=eid, symbol=symbol,
                                      side=draw(SIDES), lots=lots,
                                      price=(centre + draw(OPEN_AT[symbol])) * step))
        elif kind == "close" and open_[account]:
            pos = draw(st.sampled_from(sorted(open_[account])))
            held = open_[account][pos]
            half = (held / 2).quantize(D("0.001"))
            lots = draw(st.sampled_from([held, half] if 0 < half < held else [held]))
            if lots >= held:
                del open_[account][pos]
            else:
                open_[account][pos] = held - lots
            events.append(TradeClosed(id=eid, ts=t, account=account, position=pos, lots=lots, price=D("1"),
                                      profit=D(draw(PROFITS)).scaleb(-2),
                                      commission=-D(draw(COMMISSIONS)).scaleb(-2)))
        elif kind == "equity":
            events.append(Equity(id=eid, ts=t, account=account,
                                 equity=D(draw(EQUITIES)).scaleb(-2),
                                 balance=D(draw(BALANCES)).scaleb(-2)))
        elif kind == "balance":
            events.append(Balance(id=eid, ts=t, account=account, amount=D(draw(AMOUNTS)).scaleb(-2),
                                  reason="adjustment"))
        elif kind == "clock":
            events.append(Clock(id=eid, ts=t))
    return events


def engines(pack: str) -> tuple[Engine, Engine]:
    compiled = compile_pack(parsed(pack))
    exact, vector = Engine(compiled), Engine(compiled, vector=True)
    exact.set_symbols(TABLE)
    vector.set_symbols(TABLE)
    return exact, vector


def state_bytes(engine: Engine) -> dict[str, dict]:
    """Each state as its serialised fields (decimals as their exact text): equal means equal bytes."""
    engine.settle()
    return {name: msgspec.msgpack.decode(msgspec.msgpack.encode(st)) for name, st in sorted(engine.states.items())}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams(), st.sampled_from([BANDS, WIDE]), st.data())
def test_the_screen_decides_and_settles_exactly_as_the_decimal_path(events, pack, data):
    """Same stream through both paths, one event at a time: the same decisions (to the byte), and the
    same states wherever a read settles them and at the end."""
    exact, vector = engines(pack)
    reads = set(data.draw(st.lists(st.integers(0, len(events)), max_size=5)))
    want, got = [], []
    for n, ev in enumerate(events):
        want += exact.feed([ev])
        got += vector.feed([ev])
        if n in reads:  # a read in the middle settles the lagging states
            account = data.draw(st.sampled_from(ACCOUNTS))
            a, b = exact.state(account), vector.state(account)
            assert (a and msgspec.to_builtins(a)) == (b and msgspec.to_builtins(b))
    assert to_ndjson(got) == to_ndjson(want)
    assert state_bytes(vector) == state_bytes(exact)
    assert vector.stats.marked == exact.stats.marked
    assert vector.snapshot() == exact.snapshot()


def _fraction_value(spec, side, lots, open_price, prices, currency="USD"):
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
    exact = move * Fraction(lots) * unit * rate * 10**8
    return D(round(exact)).scaleb(-8)  # round(): half to even, as the engine rounds


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams(max_events=60))
def test_screened_tick_level_equity_equals_an_independent_computation(events):
    """With the screen on, each settled equity = the last reported or booked money + Σ every open,
    marked position valued from scratch in fractions at the current prices."""
    _, vector = engines(WIDE)  # wide bands: almost every tick stays in the screen
    specs = TABLE.by_symbol()
    prices: dict[str, tuple[D, D]] = {}
    for ev in events:
        vector.feed([ev])
        if isinstance(ev, Price):
            prices[ev.symbol] = (ev.bid, ev.ask)
        for name in ACCOUNTS:
            state = vector.state(name)
            if state is None or state.status not in ("active", "paused") or state.phase_start is None:
                continue
            # every marked position's mark is its value now; equity moved by exactly the marks' changes
            for pos in state.positions.values():
                if pos.mark is not None:
                    assert pos.mark == _fraction_value(specs[pos.symbol], pos.side, pos.lots, pos.price, prices)


def test_units_round_trip_and_marks_are_written_as_the_market_writes_them():
    assert to_units(D("-12.5")) == -1_250_000_000
    assert to_units(D("0.123456789")) is None
    assert to_units(D("Infinity")) is None
    assert str(mark_from_units(0)) == "0.00"
    assert str(mark_from_units(-1_250_000_000)) == "-12.50"
    assert str(mark_from_units(12_345)) == "0.00012345"
    assert str(mark_from_units(120_000)) == "0.0012"


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**55), 2**55), st.integers(0, 9)), min_size=1, max_size=40))
def test_the_screen_counts_a_mark_s_places_as_the_market_writes_it(draws):
    """``mark_places`` (one modulo and a look-up over a whole book) gives, for every mark, the places
    ``mark_from_units`` writes it with — what the exact path's equity keeps."""
    import numpy as np

    values = [q - q % 10**k if k else q for q, k in draws] + [0, -(10**6), 10**7, -5, 2**55 - 1]
    places = mark_places(np.array(values, dtype=np.int64))
    assert [int(p) for p in places] == [-mark_from_units(q).as_tuple().exponent for q in values]


STATIC = WIDE.replace("trailing: equity_intraday, lock: initial", "trailing: none")


def _firm(vector: bool, lots: str = "1") -> Engine:
    engine = Engine(compile_pack(parse_pack(STATIC)), vector=vector)
    engine.set_symbols(TABLE)
    events = [
        Price(id="p1", ts=T0, symbol="USDJPY", bid=D("150.000"), ask=D("150.010")),
        Price(id="p2", ts=T0, symbol="EURUSD", bid=D("1.08000"), ask=D("1.08010")),
        Price(id="p3", ts=T0, symbol="EURJPY", bid=D("162.000"), ask=D("162.020")),
    ]
    for k in range(20):
        events.append(TradeOpened(id=f"o{k}", ts=T0, account=f"A{k:02d}", position=f"q{k}",
                                  symbol=("EURUSD", "EURJPY")[k % 2], side=("buy", "sell")[k % 3 == 0],
                                  lots=D(lots), price=D("1.08005") if k % 2 == 0 else D("162.010")))
    engine.feed(events)
    return engine


def test_ticks_inside_every_band_take_no_decimal_revaluation(monkeypatch):
    engine = _firm(vector=True)
    calls = []
    for program in set(engine.programs.values()):
        original = program.remark
        monkeypatch.setattr(program, "remark", lambda *a, _o=original: calls.append(a[1]) or _o(*a))
    ticks = [Price(id=f"t{k}", ts=T0 + dt.timedelta(seconds=k + 1), symbol=("USDJPY", "EURUSD", "EURJPY")[k % 3],
                   bid=D("150.000") + k * D("0.003") if k % 3 == 0 else (D("1.08000") + k * D("0.00001") if k % 3 == 1
                                                                           else D("162.000") - k * D("0.004")),
                   ask=D("150.010") + k * D("0.003") if k % 3 == 0 else (D("1.08010") + k * D("0.00001") if k % 3 == 1
                                                                           else D("162.020") - k * D("0.004")))
             for k in range(30)]
    assert engine.feed(ticks) == []
    assert calls == []  # all twenty holders stayed in the screen
    assert engine.stats.marked > 0
    exact = _firm(vector=False)
    exact.feed(ticks)
    assert state_bytes(engine) == state_bytes(exact)  # settled lazily, to the same bytes


def test_positions_too_large_for_int64_stay_on_the_exact_path():
    engine = _firm(vector=True, lots="900000")
    tick = Price(id="t1", ts=T0 + dt.timedelta(seconds=1), symbol="EURUSD", bid=D("1.08100"), ask=D("1.08110"))
    exact = _firm(vector=False, lots="900000")
    assert to_ndjson(engine.feed([tick])) == to_ndjson(exact.feed([tick]))
    assert state_bytes(engine) == state_bytes(exact)


def test_new_intraday_peaks_inside_the_band_move_the_trailing_level_without_the_decimal_path(monkeypatch):
    def firm(vector: bool) -> Engine:
        engine = Engine(compile_pack(parse_pack(WIDE)), vector=vector)  # max loss trails intraday equity
        engine.set_symbols(TABLE)
        engine.feed([Price(id="p", ts=T0, symbol="EURUSD", bid=D("1.08000"), ask=D("1.08010")),
                     TradeOpened(id="o", ts=T0, account="A1", position="q", symbol="EURUSD", side="buy",
                                 lots=D("2"), price=D("1.08010"))])
        return engine

    rising = [Price(id=f"t{k}", ts=T0 + dt.timedelta(seconds=k + 1), symbol="EURUSD",
                    bid=D("1.08000") + k * D("0.00007"), ask=D("1.08010") + k * D("0.00007")) for k in range(12)]
    engine = firm(vector=True)
    program = engine.programs["A1"]
    calls = []
    monkeypatch.setattr(program, "remark", lambda *a: calls.append(a) or (None, D(0)))
    engine.feed(rising)
    assert calls == []
    exact = firm(vector=False)
    exact.feed(rising)
    assert exact.state("A1").peaks[1] == D("100000") + 11 * D("14.00") - D("20.00")  # 2 lots × 7 points × 11
    assert state_bytes(engine) == state_bytes(exact)  # the peak and the level, settled from the integers


def test_a_whole_cent_tick_taking_out_a_mark_of_more_places_keeps_them_in_the_equity():
    """The exact path's equity keeps the most places of every mark it adds or takes out. A gold tick quoted
    to 3 places leaves a 3-place mark; after an equity report re-reads the account, a 2-place tick takes
    that mark out: the equity (and so the peak and the trailing level written in a warning) keeps 3 places.
    The screen had bounded them by the new tick's whole cents and wrote "96247.04100000" where the exact
    path writes "96247.041" (found by the property test above)."""
    at = [T0 + dt.timedelta(minutes=n) for n in range(8)]
    events = [
        TradeOpened(id="o1", ts=at[0], account="A3", position="p1", symbol="XAUUSD", side="sell", lots=D("0.01"),
                    price=D("2002.22")),
        Price(id="t1", ts=at[1], symbol="XAUUSD", bid=D("2049.991"), ask=D("2050.291")),
        Equity(id="e1", ts=at[2], account="A3", equity=D("100192.97"), balance=D("99594.61")),
        Price(id="t2", ts=at[3], symbol="XAUUSD", bid=D("2000.07"), ask=D("2000.37")),  # a new peak
        Price(id="t3", ts=at[4], symbol="XAUUSD", bid=D("1995.92"), ask=D("1996.22")),  # a higher one
        TradeOpened(id="o2", ts=at[5], account="A3", position="p2", symbol="GBPUSD", side="buy", lots=D("1"),
                    price=D("1.26457")),
        Equity(id="e2", ts=at[6], account="A3", equity=D("97792.71"), balance=D("99963.91")),
    ]
    exact, vector = engines(BANDS)
    want, got = exact.feed(events), vector.feed(events)
    assert exact.state("A3").peaks[1] == D("100247.041") and str(vector.state("A3").peaks[1]) == "100247.041"
    assert to_ndjson(got) == to_ndjson(want)
    assert b'"level":"96247.041"' in to_ndjson(want)
    assert state_bytes(vector) == state_bytes(exact)


def test_a_state_put_back_is_installed_as_given_and_the_screen_follows_it():
    """A partition worker puts an account back to its state before a batch (``Engine.adopt``) or takes
    it out (``Engine.drop``) while the screen still holds that account's ticks unsettled: those must
    not be written into the state put back, and the next ticks must move it as the exact path does."""
    engines = {vector: _firm(vector) for vector in (True, False)}
    kept = {vector: msgspec.structs.replace(engine.state("A02")) for vector, engine in engines.items()}
    moves = [Price(id="t1", ts=T0 + dt.timedelta(seconds=1), symbol="EURUSD", bid=D("1.08090"), ask=D("1.08100"))]
    later = [Price(id="t2", ts=T0 + dt.timedelta(seconds=2), symbol="EURUSD", bid=D("1.08050"), ask=D("1.08060"))]
    for vector, engine in engines.items():
        engine.feed(moves)  # the screen holds A02's new mark unsettled
        engine.adopt(kept[vector], engine.programs["A02"])
        assert engine.states["A02"] is kept[vector]
        assert engine.state("A02") == kept[not vector], "the state put back, not the unsettled tick"
        engine.drop("A04")
        assert engine.state("A04") is None
        engine.feed(later)
    assert state_bytes(engines[True]) == state_bytes(engines[False])
    assert "A04" not in engines[True].holders.get("EURUSD", {})


def _screened(marks, account: str):
    """What the screen holds for ``account``, independent of where its rows sit in their books: the
    per-account integers and each position's row (lots and open price as exact fractions)."""
    from propcrm.engine.marking import Marks  # noqa: F401  (the type read here)

    i = marks.slot[account]
    fields = [int(getattr(marks, name)[i]) for name in ("base", "floating", "low", "high", "peak", "deadline",
                                                        "places", "alert", "pending", "raised", "trail")]
    if marks.trail[i]:
        fields += [int(marks.amount[i]), int(marks.cap[i]), int(marks.offset[i])]
    rows = sorted(
        (key, book.symbol, book.currency, bool(book.buy[s]), Fraction(int(book.lots[s]), 10**book.lot_places),
         Fraction(int(book.open[s]), 10**book.price_places), int(book.mark[s]), int(book.settled[s]))
        for book, s, key in marks.rows[account]
    )
    return fields, rows, marks.held_positions[account] is marks.engine.states[account].positions


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams(), st.sampled_from([BANDS, WIDE]))
def test_a_band_leaver_s_rows_taken_in_place_equal_rows_rebuilt_from_its_state(events, pack):
    """After the exact path evaluated a tick for a screened account that only re-marked its positions,
    ``Marks.resync`` writes the new marks and band into its existing rows instead of rebuilding them at
    the next tick. The rows it leaves equal, integer for integer, those a screen built afresh from the
    same Decimal states holds; and the decisions and states are, to the byte, those of the screen that
    rebuilds (resync off) and of the exact path."""
    from propcrm.engine.marking import Marks

    exact, vector = engines(pack)
    _, rebuilding = engines(pack)
    rebuilding.marks.resync = lambda account: None  # the screen as it was: every leaver rebuilt
    want, got, old = [], [], []
    for ev in events:
        want += exact.feed([ev])
        got += vector.feed([ev])
        old += rebuilding.feed([ev])
        if not isinstance(ev, Price):
            continue
        marks = vector.marks
        fresh = Marks(vector)  # reads the Decimal states, changes nothing
        fresh._catch_up()
        for account in marks.slot:
            if account in marks.dirty or marks.pending[marks.slot[account]]:
                continue  # its Decimal state lags the integers, or it is rebuilt at the next tick anyway
            assert account in fresh.slot
            assert _screened(marks, account) == _screened(fresh, account)
    assert to_ndjson(got) == to_ndjson(want) == to_ndjson(old)
    assert state_bytes(vector) == state_bytes(exact) == state_bytes(rebuilding)
    assert vector.stats.marked == exact.stats.marked == rebuilding.stats.marked
    assert vector.snapshot() == exact.snapshot()


def test_a_band_leaver_keeps_its_rows(monkeypatch):
    """A tick that takes a screened holder out of its band (a warning) leaves its rows in place: the
    next tick re-values it in the screen without rebuilding it."""
    exact, vector = engines(BANDS)
    start = [Price(id="p", ts=T0, symbol="EURUSD", bid=D("1.08000"), ask=D("1.08010")),
             TradeOpened(id="o", ts=T0, account="A1", position="q", symbol="EURUSD", side="buy",
                         lots=D("10"), price=D("1.08010"))]
    bids = [D("1.07990"), D("1.07890"), D("1.07880"), D("1.07870"), D("1.07875")]  # −200, −1,200, −1,300 …
    fall = [Price(id=f"t{k}", ts=T0 + dt.timedelta(seconds=k + 1), symbol="EURUSD", bid=bid, ask=bid + D("0.0001"))
            for k, bid in enumerate(bids)]
    for engine in (exact, vector):
        engine.feed(start)
        engine.feed(fall[:1])  # read into the screen
    rebuilt = []
    original = vector.marks._attach
    monkeypatch.setattr(vector.marks, "_attach", lambda account: rebuilt.append(account) or original(account))
    want, got = exact.feed(fall[1:]), vector.feed(fall[1:])
    assert [d.kind for d in got] == ["warning"]  # 1,000 of the 2,000 daily room: the 50% warning
    assert vector.stats.exact_marked == 1 and rebuilt == []
    assert to_ndjson(got) == to_ndjson(want)
    assert state_bytes(vector) == state_bytes(exact)


@settings(max_examples=400, deadline=None)
@given(st.integers(-(10**20), 10**20), st.integers(0, 14), st.booleans())
def test_a_band_edge_in_units_is_the_floor_or_ceiling_of_its_exact_value(digits, places, up):
    """``_watch`` (a truncation and a step, where it was a rounding in Decimal) writes a band edge
    in 1e-8 units rounded up for an upper edge and down for a lower one, clamped to ±2**62."""
    import math

    from propcrm.engine.marking import _watch

    value = D(digits).scaleb(-places)
    exact = Fraction(value) * 10**8
    want = math.ceil(exact) if up else math.floor(exact)
    assert _watch(value, up) == max(-(2**62), min(2**62, want))
    assert _watch(D("Infinity"), up) == 2**62 and _watch(D("-Infinity"), up) == -(2**62)
