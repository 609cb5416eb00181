"""``propcrm bench login``: what a password-guessing crowd does to ingestion.

Starts ``propcrm serve`` (API, evaluation worker and dispatcher in one process, SQLite in a temporary
directory) with a seeded firm, then runs two phases of ``--seconds`` each:

1. **quiet** — signed ingestion requests of ``--events-per-request`` events at ``--rate`` requests/s;
2. **under attack** — the same, while ``--threads`` anonymous clients post wrong passwords to
   ``POST /api/v1/login`` as fast as they are answered (half of them at one real account, half at
   made-up e-mails, all from this machine's address).

It prints, per phase, the ingestion requests' latency (p50, p95, max), the login attempts answered per
second by status (401 refused, 429 throttled) and how many login audit entries were written per
second. An ingestion request that fails (503: the database stayed locked past its 30 s busy timeout)
is counted as failed, with its time. The figures depend on the machine: run it on a quiet one, and compare phases of one run.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from ..adapters.db import models as m
from ..adapters.db.session import make_engine, migrate, sessions
from .bench_service import free_port, signed
from ..domain.rulepack import load_pack
from ..services.apikeys import create_key
from ..services.catalog import add_pack, create_account, ensure_firm
from ..synth.firm import FirmSpec, generate, traders

FIRM = "bench"
EMAIL = "admin@bench.example"


def _recent_monday(today: dt.date) -> dt.date:
    """A Monday three weeks back: the synthetic history lies in the past, as a platform's would."""
    day = today - dt.timedelta(days=21)
    return day - dt.timedelta(days=day.weekday())


def seed(url: str, spec: FirmSpec) -> tuple[str, str]:
    from ..services.users import create_user

    migrate(url)
    engine = make_engine(url)
    with sessions(engine).begin() as session:
        ensure_firm(session, firm_id=FIRM)
        version = add_pack(session, firm_id=FIRM, pack=load_pack("two-step-100k"), activate=True)
        for trader in traders(spec):
            create_account(session, firm_id=FIRM, external_id=trader.account, pack_version_id=version.id)
        key_id, secret = create_key(session, firm_id=FIRM, platform="bench")
        create_user(session, firm_id=FIRM, email=EMAIL, password=secrets.token_urlsafe(18), role="admin")
    engine.dispose()
    return key_id, secret


def _login_entries(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(m.AuditEntry)
                           .where(m.AuditEntry.action.like("user.login%"))) or 0


def _attack(base: str, index: int, stop: threading.Event, answers: Counter, lock: threading.Lock) -> None:
    with httpx.Client(base_url=base, timeout=60) as client:
        n = 0
        while not stop.is_set():
            n += 1
            email = EMAIL if index % 2 == 0 else f"guess{index}-{n}@bench.example"
            try:
                status = client.post("/api/v1/login", json={"firm": FIRM, "email": email,
                                                            "password": f"wrong-guess-{index}-{n}"}).status_code
            except httpx.HTTPError:
                status = 0
            with lock:
                answers[status] += 1


def bench_login(*, threads: int = 8, seconds: float = 20.0, rate: float = 10.0, events_per_request: int = 20,
                accounts: int = 200) -> list[dict]:
    console = Console(highlight=False, width=max(Console().width, 150))
    directory = Path(tempfile.mkdtemp(prefix="propcrm-bench-login-"))
    url = f"sqlite:///{directory / 'bench.db'}"
    spec = FirmSpec(accounts=accounts, days=5, seed=11, start=_recent_monday(dt.datetime.now(dt.timezone.utc).date()),
                    equity_every_s=300, account_prefix="L")
    key_id, secret = seed(url, spec)
    lines = iter(generate(spec))
    port = free_port()
    env = {**os.environ, "PROPCRM_DATABASE_URL": url, "PROPCRM_DATA_DIR": str(directory)}
    log = directory / "serve.log"
    with open(log, "ab") as out:
        server = subprocess.Popen([sys.executable, "-m", "propcrm.cli", "serve", "--port", str(port)], env=env,
                                  stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    console.print(f"server on port {port} (SQLite, worker in process); log {log}")
    db = make_engine(url)
    results = []
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            for _ in range(300):
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            else:
                raise RuntimeError(f"the server did not start; see {log}")
            for phase, attackers in (("quiet", 0), (f"{threads} login threads", threads)):
                stop = threading.Event()
                answers: Counter = Counter()
                lock = threading.Lock()
                crowd = [threading.Thread(target=_attack, args=(base, i, stop, answers, lock), daemon=True)
                         for i in range(attackers)]
                entries_before = _login_entries(db)
                for thread in crowd:
                    thread.start()
                latencies = []
                failed: Counter = Counter()
                begin = time.perf_counter()
                while time.perf_counter() - begin < seconds:
                    body = b"".join(line for _, line in zip(range(events_per_request), lines))
                    if not body:
                        break
                    t0 = time.perf_counter()
                    response = client.post("/api/v1/events", content=body, headers=signed(key_id, secret, body))
                    latencies.append((time.perf_counter() - t0) * 1000)
                    if response.status_code != 200:  # 503: the database stayed locked past its busy timeout
                        failed[response.status_code] += 1
                    delay = begin + len(latencies) / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                elapsed = time.perf_counter() - begin
                stop.set()
                for thread in crowd:
                    thread.join(timeout=60)
                entries = _login_entries(db) - entries_before
                latencies.sort()
                results.append({
                    "phase": phase,
                    "requests": len(latencies),
                    "p50_ms": statistics.median(latencies),
                    "p95_ms": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
                    "max_ms": latencies[-1],
                    "logins_per_s": sum(answers.values()) / elapsed,
                    "answers": dict(sorted(answers.items())),
                    "audit_per_s": entries / elapsed,
                    "ingest_failed": dict(failed),
                })
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        db.dispose()
    table = Table(title=f"propcrm bench login — ingestion ({rate:g} requests/s of {events_per_request} events) "
                        f"while anonymous clients guess passwords")
    for column in ("phase", "ingest requests", "failed", "p50", "p95", "max", "login answers/s", "by status",
                   "login audit rows/s"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(r["phase"], f"{r['requests']:,}",
                      ", ".join(f"{k}: {v:,}" for k, v in sorted(r["ingest_failed"].items())) or "0",
                      f"{r['p50_ms']:,.0f} ms", f"{r['p95_ms']:,.0f} ms", f"{r['max_ms']:,.0f} ms",
                      f"{r['logins_per_s']:,.1f}", ", ".join(f"{k}: {v:,}" for k, v in r["answers"].items()) or "—",
                      f"{r['audit_per_s']:,.2f}")
    console.print(table)
    return results
