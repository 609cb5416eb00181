"""``propcrm bench ticks``: price ticks → re-valued accounts → decisions, on one core.

A synthetic firm: ``accounts`` accounts on the benchmark's two-step pack, ``positions`` open positions
spread at random over ``symbols`` symbols (most with a USD profit, a few in JPY converted through
USDJPY, so conversions are exercised). Then ``ticks`` ticks, each on a random symbol moving a few
points, are fed one by one through ``Engine.feed``; each tick's latency (tick in → decisions out, every
affected account re-valued and checked) is measured. Reported: ticks/s, p50/p99/max latency, accounts
re-valued per tick, and — with ``--scale`` — how the cost grows with the open positions per symbol.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import random
import time
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from ..domain.events import Equity, Price, TradeOpened
from ..domain.market import parse_symbol_table
from ..domain.program import compile_pack
from ..domain.rulepack import parse_pack
from ..engine.runner import Engine
from .bench_engine import BENCH_PACK

T0 = dt.datetime(2026, 3, 3, 8, 0, tzinfo=dt.timezone.utc)  # a Tuesday morning
POINT = Decimal("0.00001")


def _symbols(n: int) -> list[tuple[str, str, int]]:
    """(name, profit currency, price in points): mostly USD pairs, a few JPY crosses and USDJPY."""
    out = [("USDJPY", "JPY", 15_000_000)]  # in 0.00001 points: 150.00000
    for i in range(1, n):
        if i % 6 == 0:
            out.append((f"X{i:02d}JPY", "JPY", 16_000_000 + i * 1000))
        else:
            out.append((f"X{i:02d}USD", "USD", 100_000 + i * 1000))
    return out


def build(accounts: int, positions: int, n_symbols: int, seed: int = 7,
          vector: bool = True) -> tuple[Engine, list[tuple[str, str, int]]]:
    rnd = random.Random(seed)
    symbols = _symbols(n_symbols)
    engine = Engine(compile_pack(parse_pack(BENCH_PACK)), vector=vector)
    engine.set_symbols(parse_symbol_table([
        {"symbol": name, "profit_currency": ccy, "contract_size": "100000"} for name, ccy, _ in symbols
    ]))
    events: list = [Price(id=f"p-{name}", ts=T0, symbol=name, bid=points * POINT, ask=(points + 10) * POINT)
                    for name, _, points in symbols]
    names = [f"A{i:06d}" for i in range(accounts)]
    t1 = T0 + dt.timedelta(seconds=1)
    events += [Equity(id=f"e-{a}", ts=t1, account=a, equity=Decimal("100000"), balance=Decimal("100000")) for a in names]
    t2 = T0 + dt.timedelta(seconds=2)
    for k in range(positions):
        name, _, points = symbols[rnd.randrange(n_symbols)]
        events.append(TradeOpened(id=f"o{k}", ts=t2, account=names[rnd.randrange(accounts)], position=f"q{k}",
                                  symbol=name, side=rnd.choice(("buy", "sell")),
                                  lots=Decimal(rnd.choice((1, 2, 5, 10, 20, 50))) / 10,
                                  price=(points + rnd.randint(-50, 60)) * POINT))
    engine.feed(events)
    engine.feed([Price(id="p-warm", ts=t2, symbol=symbols[0][0], bid=symbols[0][2] * POINT,
                       ask=(symbols[0][2] + 10) * POINT)])  # the screen takes the positions in
    return engine, symbols


def run_ticks(engine: Engine, symbols: list[tuple[str, str, int]], ticks: int, seed: int = 11) -> dict:
    rnd = random.Random(seed)
    level = {name: points for name, _, points in symbols}
    stream = []
    for k in range(ticks):
        name = symbols[rnd.randrange(len(symbols))][0]
        level[name] += rnd.randint(-30, 30)
        stream.append(Price(id=f"t{k}", ts=T0 + dt.timedelta(seconds=10, milliseconds=k), symbol=name,
                            bid=level[name] * POINT, ask=(level[name] + 10) * POINT))
    latencies = []
    marked_before = engine.stats.marked
    exact_before = engine.stats.exact_marked
    decisions = 0
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        cpu = time.process_time()
        feed = engine.feed
        clock = time.perf_counter_ns
        for tick in stream:
            t = clock()
            decisions += len(feed([tick]))
            latencies.append(clock() - t)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        gc.enable()
    latencies.sort()
    return {
        "ticks": ticks,
        "seconds": seconds,
        "rate": ticks / seconds,
        "cpu_rate": ticks / cpu if cpu else 0.0,  # on a shared machine: ticks per second of this process's CPU
        "p50_ms": latencies[len(latencies) // 2] / 1e6,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1e6,
        "max_ms": latencies[-1] / 1e6,
        "revalued": (engine.stats.marked - marked_before) / ticks,
        "exact": (engine.stats.exact_marked - exact_before) / ticks,
        "decisions": decisions,
    }


def bench_ticks(*, accounts: int, positions: int, symbols: int, ticks: int, scale: list[int],
                vector: bool = True) -> None:
    console = Console(highlight=False)
    started = time.perf_counter()
    engine, table = build(accounts, positions, symbols, vector=vector)
    console.print(f"path: {'vector screen (numpy int64) + exact Decimal for band leavers' if vector else 'exact Decimal only'}; "
                  f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    holding = len({a for holders in engine.holders.values() for a in holders})
    console.print(f"built {accounts:,} accounts, {positions:,} open positions over {symbols} symbols "
                  f"({holding:,} accounts hold one) in {time.perf_counter() - started:.1f} s")
    result = run_ticks(engine, table, ticks)
    console.print(
        f"ticks: {result['rate']:,.0f} ticks/s on one core ({result['ticks']:,} ticks in {result['seconds']:.2f} s; "
        f"{result['cpu_rate']:,.0f} per CPU-second of this process); "
        f"tick→decision p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, max {result['max_ms']:.2f} ms; "
        f"{result['revalued']:,.0f} accounts re-valued per tick ({result['exact']:,.1f} in Decimal); "
        f"{result['decisions']:,} decisions"
    )
    console.print(f"target: 2,000 ticks/s and p99 ≤ 50 ms — "
                  f"{'met' if result['rate'] >= 2000 and result['p99_ms'] <= 50 else 'NOT met'}")
    if scale:
        grid = Table(title="cost by open positions per symbol")
        for column in ("open positions", "per symbol", "ticks/s", "ticks/CPU-s", "p50 ms", "p99 ms",
                       "re-valued/tick", "in Decimal/tick", "CPU µs per re-valued account"):
            grid.add_column(column, justify="right")
        for n in scale:
            engine, table = build(accounts, n, symbols, vector=vector)
            r = run_ticks(engine, table, max(200, min(ticks, 2_000_000 // max(1, n // symbols))))
            per = 1e6 / max(1e-9, r["cpu_rate"] * r["revalued"])
            grid.add_row(f"{n:,}", f"{n // symbols:,}", f"{r['rate']:,.0f}", f"{r['cpu_rate']:,.0f}", f"{r['p50_ms']:.2f}",
                         f"{r['p99_ms']:.2f}", f"{r['revalued']:,.0f}", f"{r['exact']:,.1f}", f"{per:.2f}")
        console.print(grid)
