"""``propcrm bench ticks``: price ticks → re-valued accounts → decisions, on one core.

A synthetic firm: ``accounts`` accounts on the benchmark's two-step pack, ``positions`` open positions
spread at random over ``symbols`` symbols (most with a USD profit, a few in JPY converted through
USDJPY, so conversions are exercised). Then ``ticks`` ticks, each on a random symbol moving a few
points, are fed one by one through ``Engine.feed``; each tick's latency (tick in → decisions out, every
affected account re-valued and checked) is measured. Reported: ticks/s, p50/p99/max latency, accounts
re-valued per tick, and — with ``--scale`` — how the cost grows with the open positions per symbol.

Two streams. *calm* (the default): each tick moves its symbol ±30 points, which never takes an account
out of its watch band, so it measures the re-valuation alone. *market* (``--mix market``): prices
trend (a drift per symbol that changes regime every 20–100 of its ticks, plus noise of ±0.03%), and
every ``spike_every`` ticks a news spike moves one symbol (USDJPY one time in five, so it fans out to
every JPY book) by 0.4–1.2% over four ticks and takes back a third over the next three. A share of
the holders then leaves its band — early warnings, breaches, a profit target now and then — and each of
those goes through the exact Decimal path and gets its decisions; the report counts them.

``--sweep`` measures how the cost grows with the holders per symbol on both paths (vector screen and
exact Decimal), on the calm stream over ``sweep_symbols`` USD symbols and USDJPY: CPU µs per tick and
per re-valued holder.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import random
import time
from collections import Counter
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


def calm_stream(symbols: list[tuple[str, str, int]], ticks: int, seed: int = 11,
                first: int = 0) -> tuple[list[Price], set[int]]:
    """Ticks on random symbols moving ±30 points: no account leaves its band (no spikes)."""
    rnd = random.Random(seed)
    level = {name: points for name, _, points in symbols}
    stream = []
    for k in range(ticks):
        name = symbols[rnd.randrange(len(symbols))][0]
        level[name] += rnd.randint(-30, 30)
        stream.append(_tick(first + k, name, level[name]))
    return stream, set()


def market_stream(symbols: list[tuple[str, str, int]], ticks: int, seed: int = 11,
                  first: int = 0, spike_every: int = 250) -> tuple[list[Price], set[int]]:
    """Trends, noise and news spikes (see the module docstring); returns the ticks and the indexes of
    the spike's ticks. Moves are relative to the price, so a JPY cross moves as much as a USD pair."""
    rnd = random.Random(seed)
    level = {name: points for name, _, points in symbols}
    drift = dict.fromkeys(level, 0.0)
    regime = dict.fromkeys(level, 0)
    queued: list[tuple[str, float]] = []
    spikes: set[int] = set()
    stream = []
    for k in range(ticks):
        if k and k % spike_every == 0:
            name = symbols[0][0] if rnd.random() < 0.2 else symbols[rnd.randrange(1, len(symbols))][0]
            size = rnd.uniform(0.004, 0.012) * rnd.choice((-1, 1))
            queued = [(name, size * f) for f in (0.4, 0.3, 0.2, 0.1, -0.1, -0.1, -0.13)]
        if queued:
            name, move = queued.pop(0)
            spikes.add(k)
        else:
            name = symbols[rnd.randrange(len(symbols))][0]
            if regime[name] <= 0:
                drift[name], regime[name] = rnd.gauss(0.0, 0.0001), rnd.randint(20, 100)
            regime[name] -= 1
            move = drift[name] + rnd.uniform(-0.0003, 0.0003)
        level[name] = max(10, level[name] + round(level[name] * move))
        stream.append(_tick(first + k, name, level[name]))
    return stream, spikes


def _tick(k: int, name: str, points: int) -> Price:
    return Price(id=f"t{k}", ts=T0 + dt.timedelta(seconds=10, milliseconds=k), symbol=name,
                 bid=points * POINT, ask=(points + 10) * POINT)


def _pct(values: list[int], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] / 1e6 if values else 0.0


def run_ticks(engine: Engine, symbols: list[tuple[str, str, int]], ticks: int, seed: int = 11,
              mix: str = "calm", first: int = 0, spike_every: int = 250) -> dict:
    """Feed ``ticks`` ticks one by one (ids and times from ``first`` on, prices from the market's
    current ones) and measure them."""
    now = {name: int(tick.bid / POINT) for name, tick in engine.market.prices.items()}
    symbols = [(name, ccy, now.get(name, points)) for name, ccy, points in symbols]
    if mix == "market":
        stream, spikes = market_stream(symbols, ticks, seed, first, spike_every)
    else:
        stream, spikes = calm_stream(symbols, ticks, seed, first)
    latencies = []
    exact_per_tick = []
    stats = engine.stats
    marked_before = stats.marked
    exact_before = stats.exact_marked
    kinds: Counter[str] = Counter()
    decided: set[str] = set()
    holders_before = len({a for holders in engine.holders.values() for a in holders})
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        cpu = time.process_time()
        feed = engine.feed
        clock = time.perf_counter_ns
        for tick in stream:
            exact = stats.exact_marked
            t = clock()
            out = feed([tick])
            latencies.append(clock() - t)
            exact_per_tick.append(stats.exact_marked - exact)
            for decision in out:
                kinds[decision.kind] += 1
                decided.add(decision.account)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        gc.enable()
    spike_latencies = sorted(latencies[k] for k in spikes)
    spike_exact = [exact_per_tick[k] for k in spikes]
    calm_exact = [x for k, x in enumerate(exact_per_tick) if k not in spikes]
    revalued = stats.marked - marked_before
    exact_total = stats.exact_marked - exact_before
    latencies.sort()
    return {
        "ticks": ticks,
        "seconds": seconds,
        "cpu": cpu,
        "rate": ticks / seconds,
        "cpu_rate": ticks / cpu if cpu else 0.0,  # on a shared machine: ticks per second of this process's CPU
        "p50_ms": _pct(latencies, 0.5),
        "p99_ms": _pct(latencies, 0.99),
        "max_ms": latencies[-1] / 1e6,
        "revalued": revalued / ticks,
        "exact": exact_total / ticks,
        "exact_share": exact_total / revalued if revalued else 0.0,
        "decisions": sum(kinds.values()),
        "kinds": dict(kinds),
        "holders_before": holders_before,
        "decided": len(decided),
        "decided_share": len(decided) / holders_before if holders_before else 0.0,
        "holders_after": len({a for holders in engine.holders.values() for a in holders}),
        "spikes": len(spikes),
        "spike_p50_ms": _pct(spike_latencies, 0.5),
        "spike_max_ms": spike_latencies[-1] / 1e6 if spike_latencies else 0.0,
        "spike_exact_mean": sum(spike_exact) / len(spike_exact) if spike_exact else 0.0,
        "spike_exact_max": max(spike_exact, default=0),
        "calm_exact_mean": sum(calm_exact) / len(calm_exact) if calm_exact else 0.0,
        "ticks_with_leavers": sum(1 for x in exact_per_tick if x),
    }


def bench_ticks(*, accounts: int, positions: int, symbols: int, ticks: int, scale: list[int],
                vector: bool = True, mix: str = "calm", spike_every: int = 250, sweep: list[int] | None = None,
                sweep_symbols: int = 6, sweep_ticks: int = 400) -> None:
    console = Console(highlight=False, width=150)
    started = time.perf_counter()
    engine, table = build(accounts, positions, symbols, vector=vector)
    console.print(f"path: {'vector screen (numpy int64) + exact Decimal for band leavers' if vector else 'exact Decimal only'}; "
                  f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    holding = len({a for holders in engine.holders.values() for a in holders})
    console.print(f"built {accounts:,} accounts, {positions:,} open positions over {symbols} symbols "
                  f"({holding:,} accounts hold one) in {time.perf_counter() - started:.1f} s")
    for i, kind in enumerate(("calm", "market") if mix == "both" else (mix,)):  # both: same engine, calm first
        _report(console, run_ticks(engine, table, ticks, mix=kind, first=i * ticks, spike_every=spike_every), kind)
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
    if sweep:
        console.print(sweep_table(accounts, sweep, sweep_symbols, sweep_ticks))


def sweep_table(accounts: int, holders: list[int], n_symbols: int, ticks: int) -> Table:
    """CPU cost per tick and per re-valued holder as the holders per symbol grow, both paths."""
    grid = Table(title=f"cost by holders per symbol ({accounts:,} accounts, {n_symbols} symbols, calm ticks)")
    for column in ("positions per symbol", "path", "ticks", "re-valued/tick", "in Decimal/tick",
                   "CPU µs per tick", "CPU µs per re-valued holder", "ticks/CPU-s", "p99 ms (wall)"):
        grid.add_column(column, justify="right")
    for per in holders:
        for vector in (True, False):
            engine, table = build(accounts, per * n_symbols, n_symbols, vector=vector)
            # the exact path costs ~10 µs a holder: fewer ticks at the top of the grid
            n = ticks if vector else max(30, min(ticks, 400_000 // max(1, per)))
            r = run_ticks(engine, table, n)
            del engine
            gc.collect()
            per_tick = r["cpu"] * 1e6 / n
            grid.add_row(f"{per:,}", "vector" if vector else "exact", f"{n:,}", f"{r['revalued']:,.0f}",
                         f"{r['exact']:,.1f}", f"{per_tick:,.0f}", f"{per_tick / max(1e-9, r['revalued']):.2f}",
                         f"{r['cpu_rate']:,.0f}", f"{r['p99_ms']:.2f}")
    return grid


def _report(console: Console, result: dict, mix: str) -> None:
    console.print(f"stream: {mix}"
                  + (f" (trends, noise ±0.03%, {-(-result['spikes'] // 7)} news spikes of 0.4–1.2% over 4 ticks, "
                     f"a third taken back over 3)" if mix == "market" else " (±30 points a tick)"))
    console.print(
        f"ticks: {result['rate']:,.0f} ticks/s on one core ({result['ticks']:,} ticks in {result['seconds']:.2f} s; "
        f"{result['cpu_rate']:,.0f} per CPU-second of this process); "
        f"tick→decision p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, max {result['max_ms']:.2f} ms; "
        f"{result['revalued']:,.0f} accounts re-valued per tick ({result['exact']:,.1f} in Decimal); "
        f"{result['decisions']:,} decisions"
    )
    console.print(f"CPU: {result['cpu'] * 1e6 / result['ticks']:,.0f} µs per tick; "
                  f"{result['cpu'] * 1e6 / max(1, result['revalued'] * result['ticks']):.2f} µs per re-valued account")
    if mix == "market":
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(result["kinds"].items())) or "none"
        console.print(
            f"band leavers: {result['exact']:,.1f} accounts per tick went through the exact path "
            f"({result['exact_share']:.2%} of the re-valued; on {result['ticks_with_leavers']:,} of "
            f"{result['ticks']:,} ticks); spike ticks: {result['spike_exact_mean']:,.0f} per tick on average, "
            f"{result['spike_exact_max']:,} at most, latency p50 {result['spike_p50_ms']:.2f} ms, "
            f"max {result['spike_max_ms']:.2f} ms; other ticks {result['calm_exact_mean']:,.1f}")
        console.print(
            f"decisions: {kinds}, for {result['decided']:,} accounts ({result['decided_share']:.1%} of the "
            f"{result['holders_before']:,} holders); accounts holding a marked position "
            f"{result['holders_before']:,} → {result['holders_after']:,}")
    console.print(f"target: 2,000 ticks/s and p99 ≤ 50 ms — "
                  f"{'met' if result['rate'] >= 2000 and result['p99_ms'] <= 50 else 'NOT met'} on the wall clock, "
                  f"{'met' if result['cpu_rate'] >= 2000 and result['p99_ms'] <= 50 else 'NOT met'} on CPU time")
