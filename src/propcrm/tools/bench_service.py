"""``propcrm bench ingest``: events per second from signed HTTP requests to persisted decisions.

For each backend (SQLite file, PostgreSQL schema) it seeds a firm, starts the API (``propcrm serve
--no-worker``) and one evaluation worker (``propcrm work``) as separate processes, then:

1. **throughput** — posts the synthetic firm's events in requests of ``--request-size`` lines as fast
   as the API takes them, and measures until every event is evaluated (nothing pending);
2. **latency** — sends a steady ``--rate`` events/s in small requests for ``--seconds`` and measures,
   per request, the time from sending it to the moment all of its events are evaluated (p50, p99).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, func, select, text

from ..adapters.db import models as m
from ..adapters.db.session import make_engine, migrate, sessions
from ..domain.rulepack import load_pack
from ..services.apikeys import create_key
from ..services.catalog import add_pack, create_account, ensure_firm
from ..synth.firm import FirmSpec, generate, traders

PG_URL = os.environ.get("PROPCRM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed(url: str, specs: list[FirmSpec]) -> tuple[str, str]:
    migrate(url)
    engine = make_engine(url)
    with sessions(engine).begin() as session:
        ensure_firm(session, firm_id="bench")
        version = add_pack(session, firm_id="bench", pack=load_pack("two-step-100k"), activate=True)
        for spec in specs:
            for trader in traders(spec):
                create_account(session, firm_id="bench", external_id=trader.account, pack_version_id=version.id,
                               platform="bench")  # the key below writes only to its platform's accounts
        key_id, secret = create_key(session, firm_id="bench", platform="bench")
    engine.dispose()
    return key_id, secret


def signed(key_id: str, secret: str, body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Propcrm-Key": key_id, "X-Propcrm-Timestamp": ts, "X-Propcrm-Signature": f"sha256={mac}",
            "Content-Type": "application/x-ndjson"}


def _pending(engine) -> tuple[int, int | None]:
    with engine.connect() as conn:
        count = conn.scalar(select(func.count()).select_from(m.RawEvent).where(m.RawEvent.status == "pending"))
        low = conn.scalar(select(func.min(m.RawEvent.seq)).where(m.RawEvent.status == "pending"))
    return count or 0, low


def start_cli(args: list[str], url: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PROPCRM_DATABASE_URL": url}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "propcrm.cli", *args], env=env, stdout=out, stderr=out)


def _run_backend(name: str, url: str, *, events: int, accounts: int, request_size: int, rate: int,
                 seconds: float, console: Console) -> dict:
    days = max(1, round(events / max(accounts, 1) / 60))
    load = FirmSpec(accounts=accounts, days=min(days, 10), seed=5, equity_every_s=300, account_prefix="T")
    steady = FirmSpec(accounts=max(accounts // 4, 10), days=3, seed=6, equity_every_s=300, account_prefix="L")
    key_id, secret = seed(url, [load, steady])
    port = free_port()
    logs = Path(tempfile.mkdtemp(prefix="propcrm-bench-logs-"))
    api = start_cli(["serve", "--no-worker", "--port", str(port)], url, logs / "api.log")
    worker = start_cli(["work"], url, logs / "worker.log")
    console.print(f"{name}: API on port {port}, worker running; logs in {logs}")
    base = f"http://127.0.0.1:{port}"
    db = make_engine(url)
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            for _ in range(200):
                try:
                    if client.get("/openapi.json").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            # 1. throughput
            lines = list(generate(load))[:events]
            started = time.perf_counter()
            for start in range(0, len(lines), request_size):
                body = b"".join(lines[start : start + request_size])
                response = client.post("/api/v1/events", content=body, headers=signed(key_id, secret, body))
                response.raise_for_status()
            accepted_at = time.perf_counter()
            deadline = time.perf_counter() + 600
            while _pending(db)[0]:
                if worker.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(f"the worker stopped or stalled; see {logs / 'worker.log'}")
                time.sleep(0.05)
            done = time.perf_counter()
            throughput = len(lines) / (done - started)
            ingest_rate = len(lines) / (accepted_at - started)
            # 2. latency at a steady rate
            steady_lines = list(generate(steady))
            per_request = max(1, rate // 20)
            sent: list[tuple[float, int]] = []  # (send time, highest seq of the request)
            finished: dict[int, float] = {}
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set() or len(finished) < len(sent):
                    count, low = _pending(db)
                    now = time.perf_counter()
                    for index, (_, top) in enumerate(sent):
                        if index not in finished and top and (count == 0 or (low is not None and low > top)):
                            finished[index] = now
                    if stop.is_set() and count == 0:
                        break
                    time.sleep(0.002)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            begin = time.perf_counter()
            cursor = 0
            while time.perf_counter() - begin < seconds and cursor < len(steady_lines):
                body = b"".join(steady_lines[cursor : cursor + per_request])
                cursor += per_request
                t0 = time.perf_counter()
                response = client.post("/api/v1/events", content=body, headers=signed(key_id, secret, body))
                response.raise_for_status()
                with db.connect() as conn:
                    top = conn.scalar(select(func.max(m.RawEvent.seq)))
                sent.append((t0, top))
                delay = begin + len(sent) * (per_request / rate) - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            achieved = cursor / (time.perf_counter() - begin)
            stop.set()
            watcher.join(timeout=60)
            latencies = sorted((finished[i] - t0) * 1000 for i, (t0, _) in enumerate(sent) if i in finished)
    finally:
        for proc in (api, worker):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        db.dispose()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    return {
        "backend": name,
        "events": len(lines),
        "ingest_rate": ingest_rate,
        "end_to_end_rate": throughput,
        "steady_rate": achieved,
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": pct(0.99),
        "requests": len(latencies),
    }


def bench_ingest(*, backends: list[str], events: int, accounts: int, request_size: int, rate: int,
                 seconds: float) -> list[dict]:
    console = Console(highlight=False)
    results = []
    for backend in backends:
        if backend == "sqlite":
            directory = tempfile.mkdtemp(prefix="propcrm-bench-")
            url = f"sqlite:///{Path(directory) / 'bench.db'}"
            results.append(_run_backend("SQLite", url, events=events, accounts=accounts, request_size=request_size,
                                        rate=rate, seconds=seconds, console=console))
        else:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(PG_URL)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            url = f"{PG_URL}?options=-csearch_path%3D{schema}"
            try:
                results.append(_run_backend("PostgreSQL", url, events=events, accounts=accounts,
                                            request_size=request_size, rate=rate, seconds=seconds, console=console))
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    table = Table(title="propcrm bench ingest — signed HTTP → stored → evaluated (1 API process, 1 worker)")
    for column in ("backend", "events", "API accepts", "request → decisions", f"steady load", "p50", "p99"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r["backend"],
            f"{r['events']:,}",
            f"{r['ingest_rate']:,.0f} ev/s",
            f"{r['end_to_end_rate']:,.0f} ev/s",
            f"{r['steady_rate']:,.0f} ev/s",
            f"{r['p50_ms']:,.0f} ms",
            f"{r['p99_ms']:,.0f} ms",
        )
    console.print(table)
    return results
