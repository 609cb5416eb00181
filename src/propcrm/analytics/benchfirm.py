"""A large firm made directly as columns, for ``propcrm bench analytics`` (100,000 accounts, 5,000,000 trades).

Writing and decoding 10 million NDJSON lines would measure the JSON decoder, not the analysis, so the
benchmark builds the :class:`TradeFrame` with numpy: honest traders (a fifth of all trades in the first
30 minutes of the London open on EURUSD, round lot sizes, scalpers and swing traders), reference
quotes every 5 seconds, sessions with IPs and devices, and planted hedging pairs, copy groups, latency
arbitrage, martingale and shared devices so that every detector has real work and real evidence.
"""

from __future__ import annotations

import numpy as np

from .frame import E8, TradeFrame

SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "USDCAD", "USDCHF", "NZDUSD", "XAUUSD", "US30", "NAS100")
DAY_MS = 86_400_000
START_MS = 1_772_409_600_000  # 2026-03-02T00:00:00Z, a Monday
QUOTE_STEP_MS = 5_000


def bench_frame(accounts: int = 100_000, trades_per_account: int = 50, *, days: int = 20, seed: int = 1,
                planted_share: float = 0.01) -> TradeFrame:
    gen = np.random.default_rng(seed)
    n = accounts * trades_per_account
    acc = np.repeat(np.arange(accounts, dtype=np.int32), trades_per_account)
    weekday = gen.integers(0, days, n)
    day_ms = START_MS + (weekday // 5 * 7 + weekday % 5) * DAY_MS
    crowd = gen.random(n) < 0.2
    sym = np.where(crowd, 0, gen.integers(0, len(SYMBOLS), n)).astype(np.int32)
    second = np.where(crowd, 7 * 3600 + gen.uniform(0, 1800, n), gen.uniform(7 * 3600, 17 * 3600, n))
    open_ms = (day_ms + second * 1000).astype(np.int64)
    side = np.where(gen.random(n) < 0.5, 1, -1).astype(np.int8)
    lots = np.asarray((0.01, 0.1, 0.2, 0.5, 1.0, 1.0, 2.0, 5.0))[gen.integers(0, 8, n)] * np.where(gen.random(n) < 0.3, gen.uniform(0.5, 2, n).round(1), 1)
    lots = np.maximum(lots.round(2), 0.01)
    scalper = (acc % 5) == 0
    hold_ms = np.where(scalper[acc] if scalper.size == accounts else scalper, gen.uniform(5_000, 120_000, n),
                       gen.lognormal(np.log(1_800_000), 1.0, n)).astype(np.int64)
    close_ms = open_ms + hold_ms
    # planted abuse, on the first accounts (1% each kind by default)
    k = max(int(accounts * planted_share), 2) // 2 * 2
    per = trades_per_account
    rows = lambda a: slice(a * per, (a + 1) * per)  # noqa: E731
    for p in range(0, k, 2):  # hedging pairs: b mirrors a; half of them adapt (5–60 s later, 0.7–1.3× size)
        a, b = p, p + 1
        ra, rb = rows(a), rows(b)
        adapt = p % 4 == 2
        hold = close_ms[ra] - open_ms[ra]  # a leg late by up to a minute, but while the exposure is held
        delay = (gen.uniform(0.1, 1.0, per) * np.minimum(60_000, 0.3 * hold)).astype(np.int64) if adapt else np.full(per, 5_000)
        size = (lots[ra] * gen.uniform(0.7, 1.3, per)).round(2) if adapt else lots[ra]
        sym[rb], lots[rb], side[rb] = sym[ra], np.maximum(size, 0.01), -side[ra]
        jitter = (gen.uniform(-1, 1, per) * np.minimum(60_000, 0.3 * hold)).astype(np.int64) if adapt else 5_000
        open_ms[rb], close_ms[rb] = open_ms[ra] + delay, close_ms[ra] + jitter
        close_ms[rb] = np.maximum(close_ms[rb], open_ms[rb] + 1_000)
    for g in range(k, 3 * k, 4):  # copy groups of four: followers 1-2 s later at 2× size; half adapt
        ra = rows(g)
        adapt = (g - k) % 8 == 4  # 5–40 s late, scaled 0.5–3× with rounding, skipping a quarter of the signals
        for f in range(1, 4):
            rf = rows(g + f)
            if adapt:
                factor = (0.5, 1.5, 3.0)[f - 1]
                own = gen.random(per) < 0.25  # a skipped signal: the follower trades on its own instead
                sym[rf] = np.where(own, sym[rf], sym[ra])
                side[rf] = np.where(own, side[rf], side[ra])
                lots[rf] = np.where(own, lots[rf], np.maximum((lots[ra] * factor).round(2), 0.01))
                open_ms[rf] = np.where(own, open_ms[rf], open_ms[ra] + gen.integers(5_000, 40_000, per))
                close_ms[rf] = np.where(own, close_ms[rf], close_ms[ra] + gen.integers(0, 60_000, per))
            else:
                sym[rf], side[rf], lots[rf] = sym[ra], side[ra], (lots[ra] * 2).round(2)
                open_ms[rf] = open_ms[ra] + 1_000 + f * 300
                close_ms[rf] = close_ms[ra] + 1_000
    # quotes: every 5 s of the trading days, one random walk per symbol
    q_per_day = (11 * 3600 * 1000) // QUOTE_STEP_MS
    all_days = np.arange(days)
    q_day = START_MS + (all_days // 5 * 7 + all_days % 5) * DAY_MS
    q_ms_one = (np.repeat(q_day, q_per_day) + 6 * 3_600_000 + np.tile(np.arange(q_per_day) * QUOTE_STEP_MS, days)).astype(np.int64)
    base = np.asarray((1.085, 1.264, 149.8, 0.655, 1.354, 0.882, 0.611, 2050.0, 38900.0, 17800.0))
    spread = base * 8e-5
    q_sym = np.repeat(np.arange(len(SYMBOLS), dtype=np.int32), q_ms_one.size)
    q_ms = np.tile(q_ms_one, len(SYMBOLS))
    walk = np.cumsum(gen.normal(0, 1, (len(SYMBOLS), q_ms_one.size)), axis=1) * (base * 2e-5)[:, None] + base[:, None]
    q_bid = walk.ravel()
    q_ask = q_bid + np.repeat(spread, q_ms_one.size)
    day_index = np.searchsorted(q_day, day_ms)
    qi = day_index * q_per_day + np.clip((open_ms - (day_ms + 6 * 3_600_000)) // QUOTE_STEP_MS, 0, q_per_day - 1)
    flat = sym.astype(np.int64) * q_ms_one.size + qi
    fill = np.where(side > 0, q_ask[flat], q_bid[flat]) + gen.normal(0, 0.2, n) * spread[sym]
    ci = day_index * q_per_day + np.clip((close_ms - (day_ms + 6 * 3_600_000)) // QUOTE_STEP_MS, 0, q_per_day - 1)
    cflat = sym.astype(np.int64) * q_ms_one.size + ci
    close_price = np.where(side > 0, q_bid[cflat], q_ask[cflat])
    contract = np.where(sym < 7, 100_000 / np.where(sym == 2, 150, 1), np.where(sym == 7, 100, 1))
    profit = np.rint((close_price - fill) * side * lots * contract * 100).astype(np.int64) * (E8 // 100)
    for a in range(3 * k, 4 * k):  # latency: fills at the quote before a favourable move
        r = rows(a)
        prev = np.maximum(flat[r] - 1, 0)
        moved = np.where(side[r] > 0, q_ask[flat[r]] - q_ask[prev], q_bid[prev] - q_bid[flat[r]])
        fill[r] = np.where(side[r] > 0, q_ask[flat[r]] - np.abs(moved) - 2 * spread[sym[r]],
                           q_bid[flat[r]] + np.abs(moved) + 2 * spread[sym[r]])
        close_ms[r] = open_ms[r] + 20_000
        profit[r] = np.abs(profit[r]) + E8
    for a in range(4 * k, 5 * k):  # martingale: double after each loss
        r = np.arange(a * per, (a + 1) * per)
        order = r[np.argsort(open_ms[r])]
        hold = close_ms[order] - open_ms[order]
        close_ms[order] = open_ms[order] + np.minimum(hold, 600_000)
        open_ms[order[1:]] = np.maximum(open_ms[order[1:]], close_ms[order[:-1]] + 1_000)
        close_ms[order] = open_ms[order] + np.minimum(hold, 600_000)
        size = 0.1
        for row in order.tolist():
            lots[row] = size
            size = min(size * 2, 25.6) if profit[row] < 0 else 0.1
    order_ms = open_ms - gen.integers(20, 300, n)
    # sessions: three logins per account; shared devices among 1% (groups of 3)
    s_acc = np.repeat(np.arange(accounts, dtype=np.int32), 3)
    s_ms = START_MS + gen.integers(0, days * DAY_MS, s_acc.size)
    device = [f"d{a}" for a in s_acc.tolist()]
    ip = [f"10.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}" for a in s_acc.tolist()]
    for a in range(5 * k, 6 * k):  # groups of three on one device, and one ring of 25 on one device
        for s in range(3):
            device[a * 3 + s] = f"shared-{(a - 5 * k) // 3}" if a < 6 * k - 25 else "ring-device"
    # honest offices of 8–11 people on one IPv4 each (1% of the accounts), and a carrier NAT of 200
    office_start, office = 6 * k, 0
    a = office_start
    while a < office_start + max(accounts // 100, 8):
        size = int(gen.integers(8, 12))
        for member in range(a, min(a + size, accounts)):
            for s in range(3):
                ip[member * 3 + s] = f"172.16.{office >> 8 & 255}.{office & 255}"
        a += size
        office += 1
    for member in range(a, min(a + 200, accounts)):
        ip[member * 3] = "100.64.0.1"
    names = [f"A{a:06d}" for a in range(accounts)]
    frame = TradeFrame(
        accounts=names, symbols=list(SYMBOLS), acc=acc, sym=sym, side=side, lots=lots, open_ms=open_ms,
        order_ms=order_ms, open_price=fill.round(6), close_ms=close_ms, close_price=close_price,
        closed_lots=lots.copy(), profit_e8=profit, closes=np.ones(n, np.int32),
        session_acc=s_acc, session_ms=s_ms, session_ip=ip, session_device=device,
        quote_sym=q_sym, quote_ms=q_ms, quote_bid=q_bid, quote_ask=q_ask,
    )
    group = lambda lo, hi: [names[x] for x in range(lo, min(hi, accounts))]  # noqa: E731
    frame.__dict__["truth"] = {
        "hedging": [group(p, p + 2) for p in range(0, k, 2)],
        "copy": [group(g, g + 4) for g in range(k, 3 * k, 4)],
        "latency": [[names[x]] for x in range(3 * k, 4 * k)],
        "martingale": [[names[x]] for x in range(4 * k, 5 * k)],
        "linkage": _device_groups(names, device, range(5 * k, min(6 * k, accounts))),
        "honest_overlap": {"offices": group(office_start, a)},
    }
    return frame


def _device_groups(names: list[str], device: list[str], planted: range) -> list[list[str]]:
    by_device: dict[str, list[str]] = {}
    for a in planted:
        by_device.setdefault(device[a * 3], []).append(names[a])
    return [members for members in by_device.values() if len(members) > 1]


__all__ = ["bench_frame"]
