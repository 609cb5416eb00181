"""``propcrm bench web``: response times of the back office's account pages over a big firm.

1. **build** (or reuse, ``--db PATH``) a database with one firm of ``--accounts`` accounts (two per
   trader) and ``--events`` stored events: realistic event bodies (trades opened and closed, equity
   updates; ``status='applied'``) bulk-inserted with the driver directly (``sqlite3`` executemany,
   PostgreSQL ``COPY``), the same events run through the engine to give every account its real state,
   figures and status, the engine's decisions, and a risk score for four accounts in five;
2. **serve** it (``propcrm serve --no-worker`` on a free port), log in as a risk officer;
3. **time** GET requests one after another — ``--requests`` per URL (default: the accounts list with
   several sorts, filters, searches and pages; an account page and its chart data; the JSON API) —
   and print p50/p95/p99/max per URL.

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
from ..services.accounts import FIGURE_COLUMNS, stored_figures
from ..services.catalog import add_pack, ensure_firm
from ..services.outcomes import STATE_ENCODER, account_status

FIRM = "bench"
EMAIL = "risk@bench.example"
PASSWORD = "quiet harbour lanterns at dusk"
UTC = dt.timezone.utc
START = dt.datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
EVENTS_PER_DAY = 8
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
        indexes = list(m.RawEvent.__table__.indexes)
        with engine.begin() as conn:
            for index in indexes:
                index.drop(conn)
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
            for d in runner.feed([DECODER.decode(body) for _, _, _, _, body in chunk]):
                decision_rows.append((FIRM, int(d.account[1:]), int(d.event_id[1:]), d.event_id, d.ts, d.kind, d.rule,
                                      d.phase, d.message, d.value, d.threshold, DECISION_ENCODER.encode(d), now))
            if stored % 2_000_000 < CHUNK:
                console.print(f"  {stored:,} events stored and evaluated ({time.perf_counter() - started:.0f} s)")
        index_started = time.perf_counter()
        with engine.begin() as conn:
            for index in indexes:
                index.create(conn)
        console.print(f"  raw_events indexes built in {time.perf_counter() - index_started:.0f} s")
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

            def fill(template: str) -> str:
                return template.format(id=rng.randint(1, n_accounts), offset=rng.randrange(0, max(n_accounts // 50, 1)) * 50,
                                       trader=f"Trader {rng.randint(1, max(1, n_accounts // 2)):06d}".replace(" ", "+"))

            for template in urls:
                status = client.get(fill(template)).status_code
                for _ in range(4):  # warm-up, not counted
                    client.get(fill(template))
                samples = []
                failures = 0
                for _ in range(requests):
                    target = fill(template)
                    begun = time.perf_counter()
                    got = client.get(target)
                    samples.append((time.perf_counter() - begun) * 1000)
                    failures += got.status_code != 200
                results.append({"url": template, "status": status, "failures": failures, "n": len(samples),
                                "p50": statistics.median(samples), "p95": _pct(samples, 0.95),
                                "p99": _pct(samples, 0.99), "max": max(samples)})
                console.print(f"  {template}: p95 {results[-1]['p95']:.0f} ms")
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    return results


def bench_web(*, accounts: int = 100_000, events: int = 10_000_000, db: str | None = None,
              database_url: str | None = None, requests: int = 200, urls: list[str] | None = None,
              console: Console | None = None) -> list[dict[str, Any]]:
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
    console.print(f"database size: {_size(url) / 1e9:.2f} GB")
    results = time_pages(url, urls=list(urls or DEFAULT_URLS), requests=requests, n_accounts=accounts, console=console)
    print_pages(console, f"propcrm bench web — {accounts:,} accounts, sequential GETs as a risk officer", results)
    return results


def print_pages(console: Console, title: str, results: list[dict]) -> None:
    """The figures of :func:`time_pages` as a table: a page a row, its latencies in ms."""
    table = Table(title=title)
    for column in ("page", "status", "requests", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "page" else "right")
    for r in results:
        status = str(r["status"]) + (f" ({r['failures']} not 200)" if r["failures"] else "")
        table.add_row(r["url"], status, str(r["n"]), f"{r['p50']:.0f}", f"{r['p95']:.0f}", f"{r['p99']:.0f}",
                      f"{r['max']:.0f}")
    console.print(table)


__all__ = ["DEFAULT_URLS", "bench_web", "build", "time_pages"]
