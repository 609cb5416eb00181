"""``propcrm bench portal``: response times of the trader portal for a trader with many trades.

1. **build** (or reuse, ``--db PATH``) a SQLite database with one firm, one trader (a ``trader`` user)
   and one account on the two-step preset, and ``--trades`` round trips (opened and closed, a third of
   them in two partial closes, with commission and swap) spread over the last months up to now — stored
   through ingestion and evaluated by the evaluation worker, so the trade-history projection is written
   by the real write path;
2. add ``--leaderboard-traders`` other traders who opted in to the leaderboard (the bench trader too), each
   with one account (100k or 50k) and a few round trips over the last 40 days, through the same write path;
3. **serve** it and **time** the portal's pages as that trader (``bench_web.time_pages``): the accounts,
   the account page, the journal's first and last page, a month of the P/L calendar, payouts, the profile
   and the leaderboard (three periods, a size filter). The leaderboard's board is kept per process for a
   minute (services/leaderboard.py), so the timed requests read it kept; the cost of computing it afresh
   (a request that finds it expired) is timed apart, in process CPU time, and printed.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import func, select

from ..adapters.db import models as m
from ..adapters.db.session import make_engine, migrate, sessions
from ..domain.rulepack import load_pack
from ..services import leaderboard, users
from ..services.catalog import add_pack, create_account, ensure_firm
from ..services.evaluation import EvaluationWorker
from ..services.ingest import ingest
from .bench_web import FIRM, PASSWORD, print_pages, time_pages

UTC = dt.timezone.utc
EMAIL = "trader@bench.example"
ACCOUNT = "T-10000"


def _events(trades: int, now: dt.datetime, seed: int = 5) -> list[dict]:
    """``trades`` round trips, evenly spread over ``trades // 60`` days (about 60 a day) ending at ``now``."""
    rng = random.Random(seed)
    days = max(trades // 60, 1)
    step = dt.timedelta(days=days) / trades
    at = now - dt.timedelta(days=days)
    out: list[dict] = []
    for i in range(trades):
        opened_at = at + step * i
        held = step * rng.uniform(0.2, 0.9)
        lots = rng.choice(("0.5", "1", "2"))
        side = rng.choice(("buy", "sell"))
        price = Decimal("1.08") + Decimal(rng.randint(-500, 500)) / 100_000
        ts = lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: E731
        out.append({"id": f"o{i}", "type": "trade_opened", "account": ACCOUNT, "ts": ts(opened_at), "position": f"p{i}",
                    "symbol": rng.choice(("EURUSD", "GBPUSD", "XAUUSD", "US30")), "side": side, "lots": lots,
                    "price": str(price)})
        parts = [lots] if i % 3 else [str(Decimal(lots) / 2)] * 2
        for k, part in enumerate(parts):
            profit = Decimal(rng.randint(-6000, 6200)) / 100
            out.append({"id": f"c{i}-{k}", "type": "trade_closed", "account": ACCOUNT,
                        "ts": ts(opened_at + held * (k + 1) / len(parts)), "position": f"p{i}", "lots": part,
                        "price": str(price + Decimal(rng.randint(-80, 80)) / 100_000), "profit": str(profit),
                        "commission": "-3.50", "swap": "0" if rng.random() < 0.8 else "-1.20"})
    return out


def build(url: str, *, trades: int, console: Console) -> dict[str, Any]:
    started = time.perf_counter()
    engine = make_engine(url)
    Session = sessions(engine)
    try:
        with Session.begin() as s:
            ensure_firm(s, firm_id=FIRM)
            version = add_pack(s, firm_id=FIRM, pack=load_pack("two-step-100k"), activate=True)
            trader = m.Trader(firm_id=FIRM, name="Bench Trader", email=EMAIL)
            s.add(trader)
            s.flush()
            create_account(s, firm_id=FIRM, external_id=ACCOUNT, pack_version_id=version.id, trader_id=trader.id)
            users.create_user(s, firm_id=FIRM, email=EMAIL, password=PASSWORD, role="trader", trader_id=trader.id)
        events = _events(trades, dt.datetime.now(UTC) - dt.timedelta(minutes=1))
        for start in range(0, len(events), 2000):
            body = b"".join(json.dumps(e).encode() + b"\n" for e in events[start:start + 2000])
            with Session.begin() as s:
                ingest(s, firm_id=FIRM, source="bench", body=body)
        report = EvaluationWorker(Session).run_until_idle()
        with Session() as s:
            stored = s.scalar(select(func.count()).select_from(m.Trade).where(m.Trade.status == "closed"))
    finally:
        engine.dispose()
    console.print(f"built in {time.perf_counter() - started:.0f} s: {len(events):,} events evaluated "
                  f"({report.events:,}), {stored:,} closed trades in the projection")
    return {"events": len(events), "trades": stored}


def build_leaderboard(url: str, *, traders: int, console: Console, seed: int = 11) -> None:
    """``traders`` opted-in traders with one account each and 2–6 round trips in the last 40 days."""
    started = time.perf_counter()
    rng = random.Random(seed)
    engine = make_engine(url)
    Session = sessions(engine)
    now = dt.datetime.now(UTC) - dt.timedelta(minutes=1)
    try:
        with Session.begin() as s:
            big = s.scalar(select(m.RulePackVersion.id).where(m.RulePackVersion.firm_id == FIRM))
            small = add_pack(s, firm_id=FIRM, pack=load_pack("futures-eod-50k")).id
            bench = s.scalar(select(m.Trader.id).where(m.Trader.firm_id == FIRM, m.Trader.email == EMAIL))
            leaderboard.opt_in(s, firm_id=FIRM, trader_id=bench, pseudonym="Quiet Falcon", actor="bench")
            externals = []
            for i in range(traders):
                trader = m.Trader(firm_id=FIRM, name=f"Board Trader {i:06d}", email=f"board{i:06d}@bench.example")
                s.add(trader)
                s.flush()
                external = f"L-{i:06d}"
                create_account(s, firm_id=FIRM, external_id=external, pack_version_id=small if i % 4 == 0 else big,
                               trader_id=trader.id)
                leaderboard.opt_in(s, firm_id=FIRM, trader_id=trader.id, pseudonym=None, actor="bench")
                externals.append(external)
        events: list[dict] = []
        ts = lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: E731
        for external in externals:
            span = 40 * 86400 - 3600
            moments = sorted(now - dt.timedelta(days=40) + dt.timedelta(seconds=rng.uniform(0, span))
                             for _ in range(rng.randint(2, 6)))
            for k, at in enumerate(moments):
                events.append({"id": f"{external}-o{k}", "type": "trade_opened", "account": external, "ts": ts(at),
                               "position": f"p{k}", "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08"})
                events.append({"id": f"{external}-c{k}", "type": "trade_closed", "account": external,
                               "ts": ts(at + dt.timedelta(minutes=30)), "position": f"p{k}", "lots": "1",
                               "price": "1.081", "profit": str(Decimal(rng.randint(-90000, 120000)) / 100),
                               "commission": "-7.00"})
        for start in range(0, len(events), 2000):
            body = b"".join(json.dumps(e).encode() + b"\n" for e in events[start:start + 2000])
            with Session.begin() as s:
                ingest(s, firm_id=FIRM, source="bench", body=body)
        EvaluationWorker(Session).run_until_idle()
    finally:
        engine.dispose()
    console.print(f"leaderboard: {traders:,} opted-in traders, {len(events):,} events, "
                  f"built in {time.perf_counter() - started:.0f} s")


def time_board(url: str, *, console: Console, runs: int = 5) -> dict[str, float]:
    """Process CPU time of computing the boards afresh (what a request pays when the kept one expired):
    the median of ``runs`` per period, in ms."""
    import statistics

    engine = make_engine(url)
    out: dict[str, float] = {}
    try:
        with sessions(engine)() as s:
            for period in leaderboard.PERIODS:
                samples = []
                for _ in range(runs):
                    begun = time.process_time()
                    board = leaderboard.compute(s, firm_id=FIRM, period=period)
                    samples.append((time.process_time() - begun) * 1000)
                out[period] = statistics.median(samples)
                console.print(f"  board {period} computed afresh: {len(board.rows):,} accounts ranked, "
                              f"median {out[period]:.0f} ms CPU")
    finally:
        engine.dispose()
    return out


def bench_portal(*, trades: int = 10_000, db: str | None = None, requests: int = 100,
                 leaderboard_traders: int = 2_000, console: Console | None = None) -> list[dict[str, Any]]:
    console = console or Console(width=max(Console().width, 150))
    path = Path(db) if db else Path(tempfile.mkdtemp(prefix="propcrm-bench-portal-")) / "portal.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path.resolve()}"
    migrate(url)
    engine = make_engine(url)
    try:
        with sessions(engine)() as s:
            account_id = s.scalar(select(m.Account.id).where(m.Account.firm_id == FIRM, m.Account.external_id == ACCOUNT))
    finally:
        engine.dispose()
    if account_id is None:
        console.print(f"building {url}: one trader with {trades:,} trades")
        build(url, trades=trades, console=console)
    else:
        console.print(f"reusing {url}")
    engine = make_engine(url)
    try:
        with sessions(engine)() as s:
            on_board = s.scalar(select(func.count()).select_from(leaderboard.LeaderboardEntry))
    finally:
        engine.dispose()
    if not on_board and leaderboard_traders:
        build_leaderboard(url, traders=leaderboard_traders, console=console)
    time_board(url, console=console)
    month = dt.datetime.now(UTC).strftime("%Y-%m")
    last = max(trades - 50, 0)
    urls = ["/portal", "/portal/accounts/{id}", "/portal/accounts/{id}/trades",
            f"/portal/accounts/{{id}}/trades?offset={last}", f"/portal/accounts/{{id}}/trades?month={month}",
            "/portal/payouts", "/portal/profile", "/portal/leaderboard", "/portal/leaderboard?period=all",
            "/portal/leaderboard?period=7d&size=100000"]
    results = time_pages(url, urls=urls, requests=requests, n_accounts=1, console=console, email=EMAIL)
    print_pages(console, f"propcrm bench portal — one trader, {trades:,} trades, sequential GETs", results)
    return results


__all__ = ["bench_portal", "build", "build_leaderboard", "time_board"]
