"""``propcrm bench web``: response times of the back office's account pages over a big firm.

1. **build** (or reuse, ``--db PATH``) a database with one firm of ``--accounts`` accounts (two per
   trader) and ``--events`` stored events: realistic event bodies (trades opened and closed, equity
   updates; ``status='applied'``) bulk-inserted with the driver directly (``sqlite3`` executemany,
   PostgreSQL ``COPY``), the same events run through the engine to give every account its real state,
   figures and status, the engine's decisions, and a risk score for four accounts in five; beside the
   engine, the worker's projections (trades, closes, activity, chart points: :class:`_Projections`); then
   (:func:`fill_crm`, also on a database built before it) the CRM, support, payouts, cases and audit at a
   big firm's proportions;
2. **serve** it (``propcrm serve --no-worker`` on a free port), log in as a risk officer;
3. **time** GET requests one after another — ``--requests`` per URL (default: the accounts list with
   several sorts, filters, searches and pages; an account page and its chart data; the JSON API; with
   ``roles``, every role's daily pages as that role: :data:`ROLE_PAGES`) — and print p50/p95/p99/max per
   URL and the server's CPU per request.

URL templates may use ``{id}`` (a random account id), ``{offset}`` (a random page offset) and
``{trader}`` (a random trader's name).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select, text

from ..adapters.db import models as m
from ..adapters.db.session import make_engine, migrate, sessions
from ..domain.decisions import ENCODER as DECISION_ENCODER
from ..domain.events import DECODER
from ..domain.program import compile_pack
from ..domain.rulepack import load_pack
from ..engine.runner import Engine
from ..services import users
from ..domain.events import TradeClosed, TradeOpened
from ..services.accounts import FIGURE_COLUMNS, stored_figures
from ..services.equity_points import DECISIONS_MAX, minute_of, point_of
from ..services.catalog import add_pack, ensure_firm
from ..services.outcomes import STATE_ENCODER, account_status

FIRM = "bench"
EMAIL = "risk@bench.example"
PASSWORD = "quiet harbour lanterns at dusk"
UTC = dt.timezone.utc
START = dt.datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
EVENTS_PER_DAY = 8
PORTAL_TRADER = 1  # the trader whose portal is timed (accounts 1 and 2): a ``trader`` login
PORTAL_EMAIL = "trader000001@mail.example"
CHUNK = 200_000

DEFAULT_URLS = (
    "/office/accounts",
    "/office/accounts?sort=-daily_distance",
    "/office/accounts?sort=max_loss_distance&offset={offset}",
    "/office/accounts?status=active&sort=-risk_score",
    "/office/accounts?near=2&sort=daily_distance",
    "/office/accounts?near_amount=500&sort=daily_distance",  # issue 16: the absolute distance filter
    "/office/accounts?sort=-target_pct&limit=200",
    "/office/accounts?q={trader}",
    "/office/accounts/{id}",
    "/office/accounts/{id}/series.json",
    "/office/traders",  # issue 16: the CRM list, a search, a late page
    "/office/traders?q={trader}",
    "/office/traders?offset={offset}",
    "/api/v1/accounts?sort=-trading_days&offset={offset}",
    "/api/v1/accounts/{id}",
)

#: the pages each role opens in a working day (issue 16), timed logged in as that role; ``{…}`` as above
#: plus ``{trader_id}``, ``{case}``, ``{conversation}``, ``{payout}``, ``{offset_small}`` and, in the
#: portal, ``{own}`` (one of the trader's two accounts). ``.csv`` URLs are timed to their first bytes
#: (a streamed export), and once in full.
ROLE_PAGES: dict[str, tuple[str, ...]] = {
    EMAIL: (  # risk
        "/office/dashboard",
        "/office/dashboard?from=2026-01-01&to=2026-06-29",
        "/office/alerts",
        "/office/alerts?view=unseen",
        "/office/alerts?offset={offset_small}",
        "/office/decisions",
        "/office/decisions?kind=breach&offset={offset_small}",
        "/office/cases",
        "/office/cases?status=all&page=20",
        "/office/cases/{case}",
        "/office/halts",
        "/office/leaderboard",
        "/office/leaderboard?period=all",
        "/office/audit",
        "/office/audit?entity=account&entity_id={id}",
        "/office/audit?action=payout.",
        "/office/accounts/{id}/trades",
        "/office/trades.csv",
        "/office/kyc",
    ),
    "support@bench.example": (
        "/office/support",
        "/office/support?view=mine",
        "/office/support?view=closed&offset={offset_small}",
        "/office/support/{conversation}",
        "/office/traders",
        "/office/traders?q={trader}",
        "/office/traders?offset={offset}",
        "/office/traders/{trader_id}",
        "/office/kyc",
        "/office/tasks",
        "/office/tasks?view=mine",
        "/office/tasks?view=done&offset={offset_small}",
        "/office/leads",
        "/office/leads?status=new&offset={offset}",
    ),
    "finance@bench.example": (
        "/office/payouts",
        "/office/payouts?status=all&page=50",
        "/office/payouts/{payout}",
        "/office/payouts.csv",
        "/office/dashboard",
        "/office/products",
        "/office/products?codes_offset={offset_small}",
        "/office/scalings",
    ),
    "admin@bench.example": (
        "/office/users",
        "/office/api-keys",
        "/office/firm",
        "/office/products",
        "/office/leads",
        "/office/tasks",
        "/office/dashboard",
        "/office/traders.csv",
        "/office/audit.csv",
    ),
    PORTAL_EMAIL: (
        "/portal",
        "/portal/accounts/{own}",
        "/portal/accounts/{own}/trades",
        "/portal/accounts/{own}/why",
        "/portal/accounts/{own}/series.json",
        "/portal/payouts",
        "/portal/certificates",
        "/portal/profile",
        "/portal/messages",
        "/portal/leaderboard",
        "/portal/leaderboard?period=all",
    ),
}


# --------------------------------------------------------------------------------------------------
# bulk writing: the driver directly


class _Bulk:
    """Bulk inserts with the driver: sqlite3 ``executemany`` or PostgreSQL ``COPY``."""

    def __init__(self, url: str, engine) -> None:
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self.conn = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
            for pragma in ("journal_mode=WAL", "synchronous=OFF", "cache_size=-1000000", "temp_store=MEMORY"):
                self.conn.execute(f"PRAGMA {pragma}")
        else:
            self.raw = engine.raw_connection()
            self.conn = self.raw.driver_connection

    def value(self, v: Any) -> Any:
        if self.sqlite:
            if isinstance(v, dt.datetime):
                return v.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
            if isinstance(v, Decimal):
                return format(v, "f")
        return v

    def insert(self, table: str, columns: tuple[str, ...], rows: Iterable[tuple], *, converted: bool = False) -> int:
        """Insert ``rows``; ``converted``: the values are in the driver's form already (SQLite: text times)."""
        n = 0
        if self.sqlite:
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            self.conn.execute("BEGIN")
            batch: list[tuple] = []
            value = self.value
            for row in rows:
                batch.append(row if converted else tuple(value(v) for v in row))
                if len(batch) >= 50_000:
                    self.conn.executemany(sql, batch)
                    n += len(batch)
                    batch.clear()
            if batch:
                self.conn.executemany(sql, batch)
                n += len(batch)
            self.conn.execute("COMMIT")
            return n
        with self.conn.cursor() as cur:
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    n += 1
        self.conn.commit()
        return n

    def execute_many(self, sql: str, rows: list[tuple]) -> None:
        if self.sqlite:
            self.conn.execute("BEGIN")
            self.conn.executemany(sql, [tuple(self.value(v) for v in row) for row in rows])
            self.conn.execute("COMMIT")
        else:
            with self.conn.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), rows)
            self.conn.commit()

    def close(self) -> None:
        if self.sqlite:
            self.conn.close()
        else:
            self.raw.close()



# --------------------------------------------------------------------------------------------------
# the worker's projections, computed beside the engine and bulk-inserted


TRADE_COLUMNS = ("id", "firm_id", "account_id", "position", "symbol", "side", "lots", "open_ts", "open_price",
                 "open_event_id", "order_ts", "as_sent", "closed_lots", "close_ts", "close_price", "profit",
                 "commission", "swap", "net", "closes", "held_s", "status")
CLOSE_COLUMNS = ("firm_id", "account_id", "trade_id", "event_id", "event_seq", "ts", "lots", "price", "profit",
                 "commission", "swap", "net", "reason", "as_sent")
ACTIVITY_COLUMNS = ("firm_id", "account_id", "kind", "ts", "ip", "device")
POINT_COLUMNS = ("firm_id", "account_id", "minute", "ts", "equity", "balance", "daily_floor", "max_loss", "decisions")
PROJECTION_TABLES = ("trades", "trade_closes", "account_activity", "equity_points")


class _Projections:
    """The rows the evaluation write path writes for a batch (:func:`propcrm.services.trades.record`,
    :func:`propcrm.services.equity_points.record`), computed from the same accepted events and engine
    states, for a stream whose positions are opened once and closed whole, with no logins, and whose
    account-minutes hold one event each (so the downsampling keeps every point). ``test_bench_web``
    holds them equal to what the write path stores for the same events."""

    def __init__(self, bulk: _Bulk, firm_id: str, program) -> None:
        self.bulk, self.firm_id, self.program = bulk, firm_id, program
        self.open: dict[tuple[int, str], list] = {}
        self.next_trade = 1
        self.counts = dict.fromkeys(PROJECTION_TABLES, 0)
        sqlite = bulk.sqlite
        self.t = bulk.value if sqlite else (lambda v: v)
        self.money = (lambda v: None if v is None else format(v, "f")) if sqlite else (lambda v: v)

    def watch(self, events, states, noted: list):
        """Yield ``events`` to the engine, noting (event, point) after each has been applied."""
        program = self.program
        for ev in events:
            yield ev
            st = states.get(ev.account)
            if st is not None:
                noted.append((ev, point_of(st, program, ev.ts)))

    def write(self, noted: list, seqs: dict[str, int], decisions: list) -> None:
        firm, t, money = self.firm_id, self.t, self.money
        by_event: dict[str, list[str]] = {}
        for d in decisions:
            by_event.setdefault(d.event_id, []).append(f"{d.kind}: {d.rule}")
        trades, closes, activity, points = [], [], [], []
        for ev, p in noted:
            account_id = int(ev.account[1:])
            ts = t(ev.ts)
            lines = by_event.get(ev.id)
            text = None
            if lines:
                while len("\n".join(lines)) > DECISIONS_MAX and len(lines) > 1:
                    lines.pop()
                text = "\n".join(lines)[:DECISIONS_MAX]
            points.append((firm, account_id, minute_of(ev.ts), ts, money(p.equity), money(p.balance),
                           money(p.daily_floor), money(p.max_loss), text))
            kind = type(ev)
            if kind is TradeOpened:
                activity.append((firm, account_id, "opened", ts, None, None))
                sent = f"{ev.lots} {ev.price}"
                self.open[(account_id, ev.position)] = [
                    self.next_trade, firm, account_id, ev.position, ev.symbol, ev.side, ev.lots, ev.ts, ev.price,
                    ev.id, ev.order_ts, sent if len(sent) <= 80 else None]
                self.next_trade += 1
            elif kind is TradeClosed:
                activity.append((firm, account_id, "closed", ts, None, None))
                row = self.open.pop((account_id, ev.position))
                trade_id, lots, open_ts = row[0], row[6], row[7]
                net = ev.profit + ev.commission + ev.swap
                held = max(int((ev.ts - open_ts).total_seconds()), 0)
                trades.append((*row[:6], money(lots), t(open_ts), money(row[8]), row[9], t(row[10]), row[11],
                               money(ev.lots), ts, money(ev.price), money(ev.profit), money(ev.commission),
                               money(ev.swap), money(net), 1, held, "closed" if ev.lots >= lots else "open"))
                sent = f"{ev.lots} {ev.price}"
                closes.append((firm, account_id, trade_id, ev.id, seqs[ev.id], ts, money(ev.lots), money(ev.price),
                               money(ev.profit), money(ev.commission), money(ev.swap), money(net), ev.reason,
                               sent if len(sent) <= 80 else None))
        bulk = self.bulk
        for table, columns, rows in (("trades", TRADE_COLUMNS, trades), ("trade_closes", CLOSE_COLUMNS, closes),
                                     ("account_activity", ACTIVITY_COLUMNS, activity),
                                     ("equity_points", POINT_COLUMNS, points)):
            if rows:
                self.counts[table] += bulk.insert(table, columns, rows, converted=True)

    def finish(self) -> None:
        """The positions still open: ``open`` rows."""
        t, money, zero = self.t, self.money, Decimal(0)
        rows = [(*row[:6], money(row[6]), t(row[7]), money(row[8]), row[9], t(row[10]), row[11], money(zero), None,
                 None, money(zero), money(zero), money(zero), money(zero), 0, None, "open")
                for row in self.open.values()]
        if rows:
            self.counts["trades"] += self.bulk.insert("trades", TRADE_COLUMNS, rows, converted=True)
        self.open.clear()

# --------------------------------------------------------------------------------------------------
# the firm


def _trading_day(day: int) -> dt.datetime:
    """The ``day``-th weekday from START."""
    weeks, rest = divmod(day, 5)
    return START + dt.timedelta(days=weeks * 7 + rest)


def _events(n_accounts: int, per_account: int, first_seq: int, seed: int = 7):
    """(seq, account index, type, ts, body) in stored order: round after round over all accounts, each
    account trading two positions a day (opened, equity, closed, equity) on a random walk of its own."""
    rng = random.Random(seed)
    sigma = [rng.choice((30, 80, 150, 300, 600, 1100, 1800)) for _ in range(n_accounts)]  # dollars
    drift = [rng.uniform(-0.15, 0.25) for _ in range(n_accounts)]
    balance = [10_000_000] * n_accounts  # cents
    floating = [0] * n_accounts
    seq = first_seq
    gauss = rng.gauss
    for r in range(per_account):
        day, slot = divmod(r, EVENTS_PER_DAY)
        base = _trading_day(day) + dt.timedelta(hours=8)
        kind = slot % 4
        for i in range(n_accounts):
            ts = base + dt.timedelta(seconds=slot * 2700 + i % 600)
            stamp = ts.strftime("%Y-%m-%dT%H:%M:%SZ")
            account = f"T{i + 1:06d}"
            eid = f"e{seq:010d}"
            position = f"p{day}-{slot // 4}"
            if kind == 0:
                body = (f'{{"id":"{eid}","type":"trade_opened","account":"{account}","ts":"{stamp}",'
                        f'"position":"{position}","symbol":"EURUSD","side":"{"buy" if i % 2 else "sell"}",'
                        f'"lots":"{1 + i % 3}","price":"1.08512"}}')
                etype = "trade_opened"
            elif kind == 2:
                profit = int(gauss(drift[i], 1.0) * sigma[i] * 100)
                balance[i] += profit
                floating[i] = 0
                body = (f'{{"id":"{eid}","type":"trade_closed","account":"{account}","ts":"{stamp}",'
                        f'"position":"{position}","lots":"{1 + i % 3}","price":"1.08601",'
                        f'"profit":"{profit / 100:.2f}","commission":"-7.00"}}')
                balance[i] -= 700
                etype = "trade_closed"
            else:
                if kind == 1:
                    floating[i] = int(gauss(0, 0.7) * sigma[i] * 100)
                equity = balance[i] + floating[i]
                body = (f'{{"id":"{eid}","type":"equity","account":"{account}","ts":"{stamp}",'
                        f'"equity":"{equity / 100:.2f}","balance":"{balance[i] / 100:.2f}"}}')
                etype = "equity"
            yield seq, i, etype, ts, body.encode()
            seq += 1


def build(url: str, *, n_accounts: int, n_events: int, console: Console) -> dict[str, Any]:
    """A firm of ``n_accounts`` accounts and ``n_events`` stored, evaluated events."""
    started = time.perf_counter()
    migrate(url)
    engine = make_engine(url)
    pack = load_pack("two-step-100k")
    with sessions(engine).begin() as s:
        ensure_firm(s, firm_id=FIRM)
        version_id = add_pack(s, firm_id=FIRM, pack=pack, activate=True).id
        users.create_user(s, firm_id=FIRM, email=EMAIL, password=PASSWORD, role="risk")
    program = compile_pack(pack).phase(None)
    now = dt.datetime.now(UTC)
    bulk = _Bulk(url, engine)
    try:
        n_traders = max(1, (n_accounts + 1) // 2)
        countries = ("GB", "DE", "FR", "ES", "IT", "NL", "PL", "US", "CA", "AU")
        bulk.insert("traders", ("id", "firm_id", "name", "email", "country", "kyc_status", "created_at"), (
            (t + 1, FIRM, f"Trader {t + 1:06d}", f"trader{t + 1:06d}@mail.example", countries[t % 10], "approved", now)
            for t in range(n_traders)))
        bulk.insert("accounts", ("id", "firm_id", "external_id", "platform", "login", "trader_id", "pack_version_id",
                                 "phase", "status", "created_at"), (
            (i + 1, FIRM, f"T{i + 1:06d}", "mt5", f"{5_000_000 + i}", i // 2 + 1, version_id, program.name, "active",
             now - dt.timedelta(seconds=n_accounts - i))
            for i in range(n_accounts)))
        console.print(f"  {n_traders:,} traders, {n_accounts:,} accounts ({time.perf_counter() - started:.0f} s)")
        # raw_events: secondary indexes dropped during the load and built once after it (much faster)
        # and so the projections' (the worker's trades, closes, activity and chart points)
        indexes = [index for table in ("raw_events", *PROJECTION_TABLES) for index in m.Base.metadata.tables[table].indexes]
        with engine.begin() as conn:
            for index in indexes:
                index.drop(conn)
        projections = _Projections(bulk, FIRM, program)
        per_account = max(1, n_events // n_accounts)
        runner = Engine(lambda _external: program, dedupe=False)
        last_seq = [0] * n_accounts
        decision_rows: list[tuple] = []
        stored = 0
        stream = _events(n_accounts, per_account, 1)
        columns = ("seq", "firm_id", "source", "event_id", "account_id", "type", "ts", "body", "received_at", "status")
        while True:
            chunk = [row for _, row in zip(range(CHUNK), stream)]
            if not chunk:
                break
            received = bulk.value(now)
            stored += bulk.insert("raw_events", columns, (
                (seq, FIRM, "mt5", f"e{seq:010d}", i + 1, etype, bulk.value(ts), body, received, "applied")
                for seq, i, etype, ts, body in chunk), converted=True)
            for seq, i, _, _, _ in chunk:
                last_seq[i] = seq
            noted: list = []
            decided = runner.feed(projections.watch([DECODER.decode(body) for _, _, _, _, body in chunk],
                                                    runner.states, noted))
            for d in decided:
                decision_rows.append((FIRM, int(d.account[1:]), int(d.event_id[1:]), d.event_id, d.ts, d.kind, d.rule,
                                      d.phase, d.message, d.value, d.threshold, DECISION_ENCODER.encode(d), now))
            projections.write(noted, {f"e{seq:010d}": seq for seq, _, _, _, _ in chunk}, decided)
            if stored % 2_000_000 < CHUNK:
                console.print(f"  {stored:,} events stored and evaluated ({time.perf_counter() - started:.0f} s)")
        projections.finish()
        console.print("  projections: " + ", ".join(f"{t} {n:,}" for t, n in projections.counts.items())
                      + f"; events the engine rejected (none expected: all projected): {len(runner.rejected)}")
        index_started = time.perf_counter()
        with engine.begin() as conn:
            for index in indexes:
                index.create(conn)
        console.print(f"  raw_events and projection indexes built in {time.perf_counter() - index_started:.0f} s")
        bulk.insert("decisions", ("firm_id", "account_id", "event_seq", "event_id", "ts", "kind", "rule", "phase",
                                  "message", "value", "threshold", "body", "created_at"), decision_rows)
        states = []
        statuses = []
        for i in range(n_accounts):
            st = runner.states.get(f"T{i + 1:06d}")
            if st is None:
                continue
            figures = stored_figures(program, st)
            states.append((i + 1, FIRM, STATE_ENCODER.encode(st), last_seq[i], st.balance, st.equity, now,
                           *(figures[c] for c in FIGURE_COLUMNS)))
            status = account_status(st.status, program)
            if status != "active":
                statuses.append((status, i + 1))
        bulk.insert("account_states", ("account_id", "firm_id", "state", "last_seq", "balance", "equity", "updated_at",
                                       *FIGURE_COLUMNS), states)
        if statuses:
            bulk.execute_many("UPDATE accounts SET status = ? WHERE id = ?", statuses)
        rng = random.Random(11)
        bulk.insert("risk_scores", ("account_id", "firm_id", "score", "explanation", "computed_at"), (
            (i + 1, FIRM, min(100, int(rng.expovariate(1 / 18))), json.dumps({"features": []}), now)
            for i in range(n_accounts) if rng.random() < 0.8))
        if bulk.sqlite:
            bulk.conn.execute("ANALYZE")
            bulk.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            for table in ("traders", "accounts", "raw_events"):
                column = "seq" if table == "raw_events" else "id"
                bulk.conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                                  f"(SELECT max({column}) FROM {table}))")
            bulk.conn.execute("ANALYZE")
            bulk.conn.commit()
    finally:
        bulk.close()
        engine.dispose()
    by_kind: dict[str, int] = {}
    for row in decision_rows:
        by_kind[row[5]] = by_kind.get(row[5], 0) + 1
    return {"seconds": time.perf_counter() - started, "events": stored, "decisions": len(decision_rows),
            "by_kind": by_kind, "statuses": len(statuses)}


# --------------------------------------------------------------------------------------------------
# the firm's CRM, support, payouts, cases and audit at a big firm's proportions

STAFF = (("admin@bench.example", "admin"), ("finance@bench.example", "finance"), ("support@bench.example", "support"),
         *((f"support{n}@bench.example", "support") for n in range(1, 9)),
         *((f"risk{n}@bench.example", "risk") for n in range(1, 5)),
         *((f"finance{n}@bench.example", "finance") for n in range(1, 3)))


def fill_crm(url: str, *, n_accounts: int, console: Console, seed: int = 5) -> dict[str, int]:
    """Give the built firm what its staff work on, at the proportions of a firm of its size: staff users
    and API keys (through :mod:`propcrm.services.users`), products, discount codes, an order per account,
    leads (a third converted), trader stages, communications, support conversations, KYC documents,
    payouts (a few hundred open), staff tasks, near-breach alerts, cases with their accounts and notes,
    halts, notifications, leaderboard entries, and audit entries (appended through
    :func:`propcrm.services.audit.append_many`, so the chain verifies). Everything but users and audit is
    bulk-inserted with the driver. Returns the rows per table."""
    from ..services import audit

    started = time.perf_counter()
    rng = random.Random(seed)
    engine = make_engine(url)
    now = dt.datetime.now(UTC).replace(microsecond=0)
    n_traders = max(1, (n_accounts + 1) // 2)
    counts: dict[str, int] = {}
    with sessions(engine).begin() as s:
        version_id = s.scalar(select(m.RulePackVersion.id).where(m.RulePackVersion.firm_id == FIRM))
        staff_ids = {}
        for email, role in STAFF:
            staff_ids[email] = users.create_user(s, firm_id=FIRM, email=email, password=PASSWORD, role=role).id
        users.create_user(s, firm_id=FIRM, email=PORTAL_EMAIL, password=PASSWORD, role="trader",
                          trader_id=PORTAL_TRADER)
    risk_id = None
    with sessions(engine)() as s:
        risk_id = s.scalar(select(m.User.id).where(m.User.firm_id == FIRM, m.User.email == EMAIL))
    staff = [risk_id, *staff_ids.values()]
    support_staff = [staff_ids[e] for e, r in STAFF if r == "support"]
    bulk = _Bulk(url, engine)

    def ago(days: float) -> dt.datetime:
        return now - dt.timedelta(days=days)

    def put(table: str, columns: tuple[str, ...], rows) -> None:
        counts[table] = counts.get(table, 0) + bulk.insert(table, columns, rows)

    try:
        put("api_keys", ("id", "firm_id", "platform", "secret", "active", "created_at", "last_used_at"), (
            (f"bench-key-{k}", FIRM, ("mt5", "ctrader", "dxtrade", "matchtrader")[k % 4], f"{rng.getrandbits(128):032x}",
             k < 6, ago(300 - k), ago(0.01) if k < 6 else None) for k in range(8)))
        products = [(1, "Challenge 10k", "10000", "99"), (2, "Challenge 25k", "25000", "199"),
                    (3, "Challenge 50k", "50000", "299"), (4, "Challenge 100k", "100000", "499")]
        base = bulk.value(now)
        put("products", ("id", "firm_id", "name", "pack_version_id", "account_size", "price", "currency", "active"),
            ((pid, FIRM, name, version_id, Decimal(size), Decimal(price), "USD", True)
             for pid, name, size, price in products))
        put("discount_codes", ("id", "firm_id", "code", "percent_off", "amount_off", "max_uses", "uses", "active",
                               "expires_at", "created_at"), (
            (c + 1, FIRM, f"BENCH{c + 1:04d}", Decimal(10 + c % 4 * 5) if c % 3 else None,
             None if c % 3 else Decimal(25), 500 if c % 2 else None, c % 300, c % 10 != 0,
             ago(-30 + c % 60) if c % 5 == 0 else None, ago(365 - c % 365)) for c in range(2_000)))
        put("orders", ("id", "firm_id", "trader_id", "product_id", "kind", "list_price", "discount_code_id", "discount",
                       "amount", "currency", "status", "provider_ref", "platform", "account_id", "created_at",
                       "paid_at"), (
            (i + 1, FIRM, i // 2 + 1, 4, "purchase", Decimal(499), (i % 2_000) + 1 if i % 4 == 0 else None,
             Decimal(50) if i % 4 == 0 else Decimal(0), Decimal(449) if i % 4 == 0 else Decimal(499), "USD", "paid",
             f"pay_{i + 1:08d}", "mt5", i + 1, ago(200 - i * 200 / n_accounts), ago(200 - i * 200 / n_accounts))
            for i in range(n_accounts)))
        # leads: every trader came from one (converted), and twice as many did not buy (yet)
        countries = ("GB", "DE", "FR", "ES", "IT", "NL", "PL", "US", "CA", "AU")
        sources = ("web", "affiliate:alpha", "affiliate:beta", "webinar", "referral")
        n_leads = n_traders * 3
        put("leads", ("id", "firm_id", "name", "email", "country", "source", "consent", "consent_text", "status",
                      "lost_reason", "trader_id", "created_at"), (
            (k + 1, FIRM, f"Trader {k + 1:06d}" if k < n_traders else f"Lead {k + 1:06d}",
             f"trader{k + 1:06d}@mail.example" if k < n_traders else f"lead{k + 1:06d}@mail.example",
             countries[k % 10], sources[k % 5], k % 7 != 0, "I agree to be contacted" if k % 7 else None,
             "converted" if k < n_traders else ("lost" if k % 8 == 0 else "new"),
             "not interested" if k >= n_traders and k % 8 == 0 else None, k + 1 if k < n_traders else None,
             ago(400 - k * 400 / n_leads)) for k in range(n_leads)))
        put("trader_stages", ("trader_id", "firm_id", "stage", "reason", "updated_at"), (
            (t + 1, FIRM, "evaluation", f"challenge account T{2 * t + 1:06d} is in its phase", now)
            for t in range(n_traders)))
        # communications: notifications, a note, messages both ways (the support conversations' traders)
        kinds = ("notification", "notification", "notification", "note", "message_in", "message_out")

        def communications():
            for t in range(n_traders):
                for j, kind in enumerate(kinds):
                    if kind.startswith("message") and t % 2:
                        continue
                    yield (FIRM, t + 1, kind, f"{kind} {j}", f"Body of the {kind} number {j} for trader {t + 1}.",
                           "system" if kind == "notification" else "user:support@bench.example",
                           ago(180 - j * 20 - t % 20))
        put("communications", ("firm_id", "trader_id", "kind", "subject", "body", "author", "created_at"),
            communications())
        # support: every other trader wrote once; one in ten of those waits for an answer
        put("support_conversations", ("id", "firm_id", "trader_id", "status", "assigned_user_id", "last_message_at",
                                      "waiting_on", "closed_at", "updated_at"), (
            (c + 1, FIRM, 2 * c + 1, "open" if c % 10 == 0 else "closed",
             support_staff[c % len(support_staff)] if c % 20 else None, ago(60 - c * 60 / n_traders),
             "firm" if c % 10 == 0 else "trader", None if c % 10 == 0 else ago(59 - c * 60 / n_traders),
             ago(60 - c * 60 / n_traders)) for c in range(n_traders // 2)))
        # KYC: two documents a trader, reviewed; the last 3% pending (the review queue)
        doc_kinds = ("id_document", "proof_of_address")

        def documents():
            for t in range(n_traders):
                pending = t >= n_traders * 0.97
                for j, kind in enumerate(doc_kinds):
                    yield (FIRM, t + 1, kind, f"{kind}.pdf", "application/pdf", 180_000 + t % 9_000,
                           f"{rng.getrandbits(256):064x}", f"bench/{t + 1}/{j}", "pending" if pending else "approved",
                           f"trader:{t + 1}", None if pending else "user:support@bench.example",
                           ago(300 - t * 300 / n_traders), None if pending else ago(299 - t * 300 / n_traders))
        put("kyc_documents", ("firm_id", "trader_id", "kind", "filename", "content_type", "size", "sha256",
                              "storage_key", "status", "uploaded_by", "reviewed_by", "created_at", "reviewed_at"),
            documents())
        # payouts: one in six accounts paid out once; 400 requests open (one per account), some rejected
        n_payouts = n_accounts // 6

        def payouts():
            for p in range(n_payouts):
                account = 6 * p + 1
                status = ("requested" if p % 2 else "prepared") if p >= n_payouts - 400 else (
                    "rejected" if p % 17 == 0 else "approved")
                open_ = status in ("requested", "prepared")
                profit = Decimal(200 + p % 3_000)
                yield (p + 1, FIRM, account, (account - 1) // 2 + 1, f"T{account:06d}", status, 1 if open_ else None,
                       "trader:" + str((account - 1) // 2 + 1), profit, Decimal(0), Decimal(0), Decimal(80),
                       profit * Decimal("0.8"), profit * Decimal("0.2"), profit * Decimal("0.8"),
                       2 if profit > 2_500 else 1, ("bank_transfer", "wise", "paypal", "crypto_usdt")[p % 4],
                       f"IBAN GB{p:020d}", ago(150 - p * 150 / n_payouts),
                       None if status == "requested" else ago(149 - p * 150 / n_payouts),
                       None if open_ else ago(148 - p * 150 / n_payouts),
                       "not eligible" if status == "rejected" else None)
        put("payouts", ("id", "firm_id", "account_id", "trader_id", "lineage", "status", "open_slot", "requested_by",
                        "profit", "penalties", "manual_deduction", "split_pct", "trader_amount", "firm_amount",
                        "withdrawal", "approvals_needed", "method", "destination", "created_at", "prepared_at",
                        "decided_at", "reason"), payouts())
        # staff tasks: a tenth open
        n_tasks = n_traders * 4 // 5
        put("staff_tasks", ("id", "firm_id", "title", "details", "trader_id", "account_id", "assigned_user_id", "due_on",
                            "status", "created_by", "created_at", "done_by", "done_at"), (
            (k + 1, FIRM, f"Follow up {k + 1}", "Call the trader back about the account", k % n_traders + 1,
             2 * (k % n_traders) + 1, staff[k % len(staff)], (now - dt.timedelta(days=200 - k * 200 // n_tasks)).date(),
             "open" if k % 10 == 0 else "done", "user:risk@bench.example", ago(201 - k * 200 / n_tasks),
             None if k % 10 == 0 else "user:risk@bench.example", None if k % 10 == 0 else ago(200 - k * 200 / n_tasks))
            for k in range(n_tasks)))
        put("near_breach_settings", ("firm_id", "within_pct", "within_amount", "updated_by", "updated_at"),
            [(FIRM, Decimal(1), None, "user:risk@bench.example", now)])
        # near-breach alerts: 60 trading days of a few hundred accounts near a limit each day
        put("near_breach_alerts", ("firm_id", "account_id", "limit_rule", "trading_day", "equity", "level", "distance",
                                   "created_at", "seen_by", "seen_at"), (
            (FIRM, (d * 7919 + a * 104_729) % n_accounts + 1, ("daily_loss", "max_loss")[a % 2],
             (now - dt.timedelta(days=60 - d)).date(), Decimal(96_000 + a), Decimal(95_500), Decimal(500 + a % 400),
             ago(60 - d - a / 2_000), "user:risk@bench.example" if d < 59 else None, ago(60 - d) if d < 59 else None)
            for d in range(60) for a in range(n_accounts // 100)))
        # cases: one per 30 accounts, a tenth open, two or three accounts and two notes each
        n_cases = n_accounts // 30
        detectors = ("linkage", "hedging", "copy", "latency", "risk_score")
        put("cases", ("id", "firm_id", "detector", "fingerprint", "status", "title", "summary", "score", "evidence",
                      "assigned_user_id", "resolution", "opened_at", "updated_at", "closed_at"), (
            (c + 1, FIRM, detectors[c % 5], f"bench-{c + 1}", ("open", "under_review")[c % 2] if c % 10 == 0 else
             ("confirmed", "dismissed")[c % 2], f"{detectors[c % 5]} between accounts", "Found by the analysis",
             40 + c % 60, json.dumps({"pairs": []}), staff[c % len(staff)] if c % 3 else None,
             None if c % 10 == 0 else "reviewed", ago(200 - c * 200 / n_cases), ago(199 - c * 200 / n_cases),
             None if c % 10 == 0 else ago(199 - c * 200 / n_cases)) for c in range(n_cases)))
        put("case_accounts", ("case_id", "account_id", "firm_id"), (
            (c + 1, (c * 30 + j * 7) % n_accounts + 1, FIRM) for c in range(n_cases) for j in range(2 + c % 2)))
        put("case_notes", ("case_id", "firm_id", "author_user_id", "kind", "text", "created_at"), (
            (c + 1, FIRM, staff[c % len(staff)] if j else None, ("evidence", "note")[j], f"note {j} of case {c + 1}",
             ago(200 - c * 200 / n_cases)) for c in range(n_cases) for j in range(2)))
        put("trading_halts", ("id", "firm_id", "scope", "reason", "actor", "accounts", "created_at", "resumed_at",
                               "resumed_by", "resume_reason", "resumed"), (
            (h + 1, FIRM, json.dumps({"everything": False, "product_id": None, "pack_id": None, "pack_version_id": None,
                                      "phase": None, "accounts": [f"T{h * 97 + 1:06d}"]}),
             "news event", "user:risk@bench.example", 1, ago(300 - h * 7), ago(299.9 - h * 7), "user:risk@bench.example",
             "over", 1) for h in range(40)))
        put("notifications", ("firm_id", "user_id", "title", "body", "created_at", "read_at"), (
            (FIRM, staff[k % len(staff)], f"Notice {k}", "Something to look at", ago(90 - k * 90 / 20_000),
             ago(89 - k * 90 / 20_000) if k % 5 else None) for k in range(20_000)))
        put("leaderboard_entries", ("firm_id", "trader_id", "pseudonym", "pseudonym_key", "opted_in", "opted_in_at",
                                    "updated_at"), (
            (FIRM, t + 1, f"Falcon{t + 1}", f"falcon{t + 1}", True, ago(100), ago(100)) for t in range(0, n_traders, 5)))
        if bulk.sqlite:
            bulk.conn.execute("ANALYZE")
        else:
            bulk.conn.execute("ANALYZE")
            bulk.conn.commit()
    finally:
        bulk.close()
    # audit: what the staff's and the traders' actions above appended, through the chain
    n_audit = n_accounts * 4
    actions = (("order.paid", "order"), ("kyc_document.reviewed", "kyc_document"), ("payout.approved", "payout"),
               ("task.done", "staff_task"), ("support.closed", "support_conversation"), ("case.status", "case"),
               ("trader.stage", "trader"), ("account.created", "account"))
    step = 20_000
    for start in range(0, n_audit, step):
        with sessions(engine).begin() as s:
            audit.append_many(s, [
                {"actor": "user:risk@bench.example" if k % 3 else "system", "action": actions[k % 8][0],
                 "entity": actions[k % 8][1], "entity_id": str(k % n_accounts + 1), "firm_id": FIRM,
                 "before": {"status": "open"}, "after": {"status": "done", "n": k},
                 "ts": ago(365 - k * 365 / n_audit)}
                for k in range(start, min(n_audit, start + step))])
    counts["audit_log"] = n_audit
    engine.dispose()
    console.print(f"  CRM filled in {time.perf_counter() - started:.0f} s: "
                  + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    return counts


def _size(url: str) -> int:
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            schema = conn.scalar(text("select current_schema()"))
            return int(conn.scalar(text(
                "select coalesce(sum(pg_total_relation_size(c.oid)), 0) from pg_class c "
                "join pg_namespace n on n.oid = c.relnamespace where n.nspname = :s and c.relkind = 'r'"),
                {"s": schema}) or 0)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------------
# timing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) a process has used so far (Linux ``/proc``; 0 elsewhere): on a shared
    machine the server's CPU per request says what a page costs when wall times are the machine's load."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def time_pages(url: str, *, urls: list[str], requests: int, n_accounts: int, console: Console,
               seed: int = 3, email: str = EMAIL) -> list[dict[str, Any]]:
    port = _free_port()
    log = Path(tempfile.mkdtemp(prefix="propcrm-bench-web-")) / "serve.log"
    env = {**os.environ, "PROPCRM_DATABASE_URL": url}
    with open(log, "ab") as out:
        server = subprocess.Popen([sys.executable, "-m", "propcrm.cli", "serve", "--no-worker", "--port", str(port)],
                                  env=env, stdout=out, stderr=out)
    rng = random.Random(seed)
    results = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for _ in range(600):
                try:
                    if client.get("/login").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    raise RuntimeError(f"the server stopped; see {log}")
                time.sleep(0.1)
            response = client.post("/api/v1/login", json={"firm": FIRM, "email": email, "password": PASSWORD})
            response.raise_for_status()
            console.print(f"server on port {port} (log {log}); logged in as {email}")

            n_traders = max(1, n_accounts // 2)

            def fill(template: str) -> str:
                return template.format(id=rng.randint(1, n_accounts), offset=rng.randrange(0, max(n_accounts // 50, 1)) * 50,
                                       trader=f"Trader {rng.randint(1, n_traders):06d}".replace(" ", "+"),
                                       trader_id=rng.randint(1, n_traders), case=rng.randint(1, max(1, n_accounts // 30)),
                                       conversation=rng.randint(1, max(1, n_traders // 2)),
                                       payout=rng.randint(1, max(1, n_accounts // 6)),
                                       offset_small=rng.randrange(0, 200) * 50, own=rng.randint(1, 2))

            def get(target: str) -> tuple[int, float]:
                """Status and milliseconds: to the whole answer, or to a CSV export's first bytes."""
                begun = time.perf_counter()
                if ".csv" not in target:
                    got = client.get(target)
                    return got.status_code, (time.perf_counter() - begun) * 1000
                with client.stream("GET", target) as got:
                    for _ in got.iter_bytes():
                        break
                    return got.status_code, (time.perf_counter() - begun) * 1000

            for template in urls:
                status = get(fill(template))[0]
                for _ in range(4):  # warm-up, not counted
                    get(fill(template))
                samples = []
                failures = 0
                cpu_before = _cpu_seconds(server.pid)
                for _ in range(requests):
                    code, ms = get(fill(template))
                    samples.append(ms)
                    failures += code != 200
                cpu = (_cpu_seconds(server.pid) - cpu_before) * 1000 / max(1, len(samples))
                result = {"url": template, "status": status, "failures": failures, "n": len(samples),
                          "p50": statistics.median(samples), "p95": _pct(samples, 0.95),
                          "p99": _pct(samples, 0.99), "max": max(samples), "role": email, "cpu": cpu}
                if ".csv" in template:  # and once in full
                    begun = time.perf_counter()
                    got = client.get(fill(template))
                    result["full_s"] = time.perf_counter() - begun
                    result["full_bytes"] = len(got.content)
                results.append(result)
                console.print(f"  {template}: p95 {result['p95']:.0f} ms, server CPU {cpu:.0f} ms a request"
                              + (f" (first bytes; whole export {result['full_bytes'] / 1e6:.1f} MB in "
                                 f"{result['full_s']:.1f} s)" if "full_s" in result else ""))
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    return results


def bench_web(*, accounts: int = 100_000, events: int = 10_000_000, db: str | None = None,
              database_url: str | None = None, requests: int = 200, urls: list[str] | None = None,
              roles: bool = False, role: str | None = None, console: Console | None = None) -> list[dict[str, Any]]:
    """Build or reuse the firm, then time ``urls`` as the risk officer, or (``roles``) the accounts pages
    and every role's daily pages (:data:`ROLE_PAGES`), or one ``role``'s (a login e-mail of it)."""
    console = console or Console(width=max(Console().width, 150))
    if database_url:
        url = database_url
    else:
        path = Path(db) if db else Path(tempfile.mkdtemp(prefix="propcrm-bench-web-")) / "web.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path.resolve()}"
    migrate(url)
    engine = make_engine(url)
    try:
        with sessions(engine)() as s:
            existing = s.scalar(select(func.count()).select_from(m.Account).where(m.Account.firm_id == FIRM)) or 0
            stored = s.scalar(select(func.count()).select_from(m.RawEvent).where(m.RawEvent.firm_id == FIRM)) if existing else 0
    finally:
        engine.dispose()
    if existing:
        console.print(f"reusing {url}: {existing:,} accounts, {stored:,} events")
        accounts = existing
    else:
        console.print(f"building {url}: {accounts:,} accounts, {events:,} events")
        report = build(url, n_accounts=accounts, n_events=events, console=console)
        kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(report["by_kind"].items()))
        console.print(f"built in {report['seconds']:.0f} s: {report['events']:,} events, {report['decisions']:,} "
                      f"decisions ({kinds}), {report['statuses']:,} accounts not active")
    engine = make_engine(url)
    try:
        with sessions(engine)() as s:
            crm = s.scalar(select(func.count()).select_from(m.User).where(m.User.firm_id == FIRM)) or 0
    finally:
        engine.dispose()
    if crm <= 1:  # built before the CRM was: extend it
        fill_crm(url, n_accounts=accounts, console=console)
    console.print(f"database size: {_size(url) / 1e9:.2f} GB")
    if urls:
        groups = {role or EMAIL: tuple(urls)}
    elif role:
        groups = {role: ROLE_PAGES[role]}
    elif roles:
        groups = {**ROLE_PAGES, EMAIL: DEFAULT_URLS + ROLE_PAGES[EMAIL]}
    else:
        groups = {EMAIL: DEFAULT_URLS}
    results = []
    for email, pages in groups.items():
        results += time_pages(url, urls=list(pages), requests=requests, n_accounts=accounts, console=console,
                              email=email)
    print_pages(console, f"propcrm bench web — {accounts:,} accounts, sequential GETs by role", results)
    return results


def print_pages(console: Console, title: str, results: list[dict]) -> None:
    """The figures of :func:`time_pages` as a table: a page a row, its latencies in ms."""
    table = Table(title=title)
    for column in ("as", "page", "status", "requests", "p50 ms", "p95 ms", "p99 ms", "max ms", "server CPU ms"):
        table.add_column(column, justify="left" if column in ("as", "page") else "right")
    for r in results:
        status = str(r["status"]) + (f" ({r['failures']} not 200)" if r["failures"] else "")
        page = r["url"] + (f" (first bytes; all {r['full_bytes'] / 1e6:.1f} MB in {r['full_s']:.1f} s)"
                           if "full_s" in r else "")
        table.add_row(r.get("role", EMAIL).split("@")[0], page, status, str(r["n"]), f"{r['p50']:.0f}",
                      f"{r['p95']:.0f}", f"{r['p99']:.0f}", f"{r['max']:.0f}", f"{r.get('cpu', 0):.0f}")
    console.print(table)


__all__ = ["DEFAULT_URLS", "ROLE_PAGES", "bench_web", "build", "fill_crm", "time_pages"]
