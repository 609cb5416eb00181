"""The peer of ``propcrm bench engine``: a generic rules engine (GoRules zen-engine, Rust core, Python
bindings) doing a 4-rule job over the same NDJSON stream, so the two are compared in the same run.

Run as a script by the bench (``python -m propcrm.tools.bench_peer_zen FILE``) with an interpreter that
has ``zen-engine`` (it is not a dependency of propcrm: ``--peer-python`` names one, e.g. a venv made with
``python3 -m venv /tmp/zenv && /tmp/zenv/bin/pip install zen-engine==2.1.3 msgspec``). It imports only
msgspec, zen and :mod:`propcrm.domain.events`, so it decodes with the very decoder the engine uses.

The job, set up as favourably to the peer as we could: the state a generic engine cannot keep (each
account's day-start balance, intraday equity peak, open lots, whether it has failed) is kept in plain
Python next to it; the rules are zen expressions compiled once (``zen.compile_expression``, the
fastest entry point of the bindings: no decision graph, no JSON document per call) and evaluated once
per account event: an equity update evaluates daily loss (5% of the initial balance below the day's
start balance), max loss (10%, trailing the intraday equity peak, locking at the initial balance) and
the profit target (+10%) in one expression; an opening evaluates max lots (20 per position, 50 open).
Amounts go to zen as floats (its number type). The trading day is Europe/Prague's, as in the pack
(UTC+1 over the bench's March week). Prints one JSON line: events, CPU seconds, wall seconds, counts.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

from propcrm.domain.events import DECODER, Clock, Equity, TradeClosed, TradeOpened

CHUNK = 4 << 20
INITIAL = 100_000.0
DAILY = 0.05 * INITIAL
MAX_LOSS = 0.10 * INITIAL
TARGET = INITIAL * 1.10
DAY_OFFSET = dt.timedelta(hours=1)  # Europe/Prague in early March: UTC+1

EQUITY_RULES = (
    "equity < day_start - daily ? 'daily_loss' : "
    "(equity < max_floor ? 'max_loss' : (balance >= target ? 'profit_target' : 'ok'))"
)
LOTS_RULES = "lots > per_position ? 'max_lots' : (open_lots > total ? 'max_lots' : 'ok')"


def run(path: str) -> dict:
    import zen

    equity_rules = zen.compile_expression(EQUITY_RULES)
    lots_rules = zen.compile_expression(LOTS_RULES)
    data = open(path, "rb").read()
    chunks, start = [], 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + CHUNK)
        end = len(data) if end < start else end + 1
        chunks.append(data[start:end])
        start = end
    del data
    # account → [day, day_start_balance, peak, balance, open lots {position: lots}, failed]
    states: dict[str, list] = {}
    counts = {"daily_loss": 0, "max_loss": 0, "profit_target": 0, "max_lots": 0, "evaluations": 0}
    events = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    decode = DECODER.decode_lines
    for chunk in chunks:
        for ev in decode(chunk):
            events += 1
            cls = type(ev)
            if cls is Clock:
                continue
            account = getattr(ev, "account", None)
            if account is None:
                continue
            st = states.get(account)
            if st is None:
                st = states[account] = [None, INITIAL, INITIAL, INITIAL, {}, False]
            if st[5]:
                continue
            day = (ev.ts + DAY_OFFSET).date()
            if day != st[0]:
                st[0], st[1], st[2] = day, st[3], st[3]
            if cls is Equity:
                equity = float(ev.equity)
                st[3] = float(ev.balance)
                if equity > st[2]:
                    st[2] = equity
                floor = min(st[2] - MAX_LOSS, INITIAL)
                out = equity_rules.evaluate(
                    {"equity": equity, "balance": st[3], "day_start": st[1], "daily": DAILY,
                     "max_floor": floor, "target": TARGET}
                )
            elif cls is TradeOpened:
                lots = float(ev.lots)
                st[4][ev.position] = lots
                out = lots_rules.evaluate(
                    {"lots": lots, "open_lots": sum(st[4].values()), "per_position": 20, "total": 50}
                )
            elif cls is TradeClosed:
                st[4].pop(ev.position, None)
                st[3] += float(ev.profit + ev.commission + ev.swap)
                continue
            else:
                continue
            counts["evaluations"] += 1
            if out != "ok":
                counts[out] += 1
                if out != "max_lots":
                    st[5] = True
    return {
        "events": events,
        "cpu_s": time.process_time() - cpu0,
        "wall_s": time.perf_counter() - wall0,
        "accounts": len(states),
        "counts": counts,
    }


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1])))
