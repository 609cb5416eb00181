"""``propcrm bench ingest``: events per second from signed HTTP requests to persisted decisions.

For each backend (SQLite file, PostgreSQL schema) it seeds a firm, starts the API (``propcrm serve
--no-worker``) and one evaluation worker (``propcrm work``) as separate processes, then:

1. **throughput** — posts the synthetic firm's events in requests of ``--request-size`` lines as fast
   as the API takes them, and measures until every event is evaluated (nothing pending);
2. **latency** — sends a steady ``--rate`` events/s in small requests for ``--seconds`` and measures,
   per request, the time from sending it to the moment all of its events are evaluated (p50, p90, p99,
   max);
3. **client-seen breach** — during the same steady load, every ``PROBE_EVERY`` seconds a request carrying
   one breaching equity event for a fresh probe account, timed from sending it until
   ``GET /api/v1/accounts/{id}`` (a risk officer's token) reads ``breached`` — what a firm sees.

``--mode embedded`` (the default) runs ``propcrm serve`` with its worker in one process — the embedded
deployment, where ingestion wakes the worker in-process; ``--mode separate`` runs ``propcrm serve
--no-worker`` and ``propcrm work`` side by side (the worker then finds events by its fallback poll).
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


PROBES = 400  # probe accounts (one breach each) for the client-seen latency
PROBE_EVERY = 0.2  # seconds between two probes
PROBE_POLL = 0.02  # seconds between two reads of a probe's status (each read is API work the service does too)
PROBE_USER = "risk@bench.example"


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


def seed_probes(url: str, probes: int) -> tuple[list[tuple[int, str]], str]:
    """``probes`` fresh accounts ``(id, external id)`` of the seeded firm (:func:`seed`) and the password
    of a risk officer who reads them through the API."""
    from ..services.passwords import generate_password
    from ..services.users import create_user

    engine = make_engine(url)
    with sessions(engine).begin() as session:
        version_id = session.scalar(select(m.Account.pack_version_id).where(m.Account.firm_id == "bench").limit(1))
        accounts = []
        for n in range(probes):
            row = create_account(session, firm_id="bench", external_id=f"PROBE-{n:04d}", pack_version_id=version_id,
                                 platform="bench")
            session.flush()
            accounts.append((row.id, row.external_id))
        password = generate_password(email=PROBE_USER, firm_id="bench")
        create_user(session, firm_id="bench", email=PROBE_USER, password=password, role="risk")
    engine.dispose()
    return accounts, password


def breaching_line(external_id: str) -> bytes:
    """One equity event that takes a fresh 100k account far below its max-loss level, dated now."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return (f'{{"id":"probe-{external_id}","type":"equity","account":"{external_id}","ts":"{ts}",'
            f'"equity":"1000.00","balance":"1000.00"}}\n').encode()


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of ``values`` (ms), NaN when there are none."""
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")

    return {"p50": statistics.median(ordered) if ordered else float("nan"), "p90": pct(0.90), "p99": pct(0.99),
            "max": ordered[-1] if ordered else float("nan"), "n": len(ordered)}


def signed(key_id: str, secret: str, body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Propcrm-Key": key_id, "X-Propcrm-Timestamp": ts, "X-Propcrm-Signature": f"sha256={mac}",
            "Content-Type": "application/x-ndjson"}


def _reading(engine):
    """A connection for the bench's own looks at the database. On SQLite it begins deferred: a unit of
    work of ``make_engine`` begins ``IMMEDIATE`` (the write lock), and the watcher looks every 2 ms — it
    queued for the lock in SQLite's busy handler behind ingestion and the driver (waits of up to ~0.8 s,
    taken for the server's latency) and held up their commits in turn (docs/benchmarks.md)."""
    return engine.connect().execution_options(sqlite_begin="DEFERRED")


def _pending(engine) -> tuple[int, int | None]:
    with _reading(engine) as conn:
        count = conn.scalar(select(func.count()).select_from(m.RawEvent).where(m.RawEvent.status == "pending"))
        low = conn.scalar(select(func.min(m.RawEvent.seq)).where(m.RawEvent.status == "pending"))
    return count or 0, low


def _top(engine) -> int | None:
    """The highest stored position (what a request just sent stored is at or below it)."""
    with _reading(engine) as conn:
        return conn.scalar(select(func.max(m.RawEvent.seq)))


def start_cli(args: list[str], url: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PROPCRM_DATABASE_URL": url}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "propcrm.cli", *args], env=env, stdout=out, stderr=out)


def _probe(client: httpx.Client, key_id: str, secret: str, token: str, probes: list[tuple[int, str]],
           stop: threading.Event, seen: list[float], failed: list[str]) -> None:
    """Every :data:`PROBE_EVERY` s: breach a fresh probe account and time until the API reads it breached."""
    auth = {"Authorization": f"Bearer {token}"}
    for account_id, external_id in probes:
        if stop.is_set():
            return
        started = time.perf_counter()
        body = breaching_line(external_id)
        response = client.post("/api/v1/events", content=body, headers=signed(key_id, secret, body))
        if response.status_code != 200:
            failed.append(f"{external_id}: {response.status_code}")
            continue
        deadline = started + 30
        while time.perf_counter() < deadline:
            status = client.get(f"/api/v1/accounts/{account_id}", headers=auth).json().get("status")
            if status == "breached":
                seen.append((time.perf_counter() - started) * 1000)
                break
            time.sleep(PROBE_POLL)
        else:
            failed.append(f"{external_id}: not breached after 30 s")
        pause = started + PROBE_EVERY - time.perf_counter()
        if pause > 0 and stop.wait(pause):
            return


def _run_backend(name: str, url: str, *, events: int, accounts: int, request_size: int, rate: int,
                 seconds: float, mode: str, console: Console) -> dict:
    days = max(1, round(events / max(accounts, 1) / 60))
    load = FirmSpec(accounts=accounts, days=min(days, 10), seed=5, equity_every_s=300, account_prefix="T")
    steady = FirmSpec(accounts=max(accounts // 4, 10), days=3, seed=6, equity_every_s=300, account_prefix="L")
    key_id, secret = seed(url, [load, steady])
    probes, password = seed_probes(url, PROBES)
    port = free_port()
    logs = Path(tempfile.mkdtemp(prefix="propcrm-bench-logs-"))
    if mode == "embedded":
        procs = [start_cli(["serve", "--port", str(port)], url, logs / "api.log")]
        worker = procs[0]
    else:
        procs = [start_cli(["serve", "--no-worker", "--port", str(port)], url, logs / "api.log"),
                 start_cli(["work"], url, logs / "worker.log")]
        worker = procs[1]
    console.print(f"{name} ({mode}): API on port {port}, worker running; logs in {logs}")
    base = f"http://127.0.0.1:{port}"
    db = make_engine(url)
    try:
        with httpx.Client(base_url=base, timeout=120) as client, httpx.Client(base_url=base, timeout=120) as prober:
            for _ in range(200):
                try:
                    if client.get("/openapi.json").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            login = prober.post("/api/v1/login", json={"firm": "bench", "email": PROBE_USER, "password": password})
            login.raise_for_status()
            token = login.json()["token"]
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
                    raise RuntimeError(f"the worker stopped or stalled; see {logs}")
                time.sleep(0.05)
            done = time.perf_counter()
            throughput = len(lines) / (done - started)
            ingest_rate = len(lines) / (accepted_at - started)
            # 2. latency at a steady rate, 3. client-seen breaches under it
            steady_lines = list(generate(steady))
            per_request = max(1, rate // 20)
            sent: list[tuple[float, int]] = []  # (send time, highest seq of the request)
            finished: dict[int, float] = {}
            stop = threading.Event()
            probe_stop = threading.Event()
            seen: list[float] = []
            failed: list[str] = []

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
            probing = threading.Thread(target=_probe, args=(prober, key_id, secret, token, probes, probe_stop, seen,
                                                            failed), daemon=True)
            probing.start()
            load_before = os.getloadavg()[0]
            begin = time.perf_counter()
            cursor = 0
            while time.perf_counter() - begin < seconds and cursor < len(steady_lines):
                body = b"".join(steady_lines[cursor : cursor + per_request])
                cursor += per_request
                t0 = time.perf_counter()
                response = client.post("/api/v1/events", content=body, headers=signed(key_id, secret, body))
                response.raise_for_status()
                top = _top(db)
                sent.append((t0, top))
                delay = begin + len(sent) * (per_request / rate) - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            achieved = cursor / (time.perf_counter() - begin)
            probe_stop.set()
            probing.join(timeout=60)
            stop.set()
            watcher.join(timeout=60)
            machine_load = os.getloadavg()[0]
            latencies = [(finished[i] - t0) * 1000 for i, (t0, _) in enumerate(sent) if i in finished]
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        db.dispose()
    if failed:
        console.print(f"[red]{len(failed)} probe(s) failed[/]: {', '.join(failed[:5])}")
    return {
        "backend": name,
        "mode": mode,
        "events": len(lines),
        "ingest_rate": ingest_rate,
        "end_to_end_rate": throughput,
        "steady_rate": achieved,
        "requests": len(latencies),
        "event_to_decision": percentiles(latencies),
        "client_seen": percentiles(seen),
        "load": (load_before, machine_load),
        "cores": os.cpu_count(),
    }


def bench_ingest(*, backends: list[str], events: int, accounts: int, request_size: int, rate: int,
                 seconds: float, mode: str = "embedded") -> list[dict]:
    if mode not in ("embedded", "separate"):
        raise ValueError(f"mode must be embedded or separate, got {mode!r}")
    console = Console(highlight=False, width=200)
    results = []
    for backend in backends:
        if backend == "sqlite":
            directory = tempfile.mkdtemp(prefix="propcrm-bench-")
            url = f"sqlite:///{Path(directory) / 'bench.db'}"
            results.append(_run_backend("SQLite", url, events=events, accounts=accounts, request_size=request_size,
                                        rate=rate, seconds=seconds, mode=mode, console=console))
        else:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(PG_URL)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            url = f"{PG_URL}?options=-csearch_path%3D{schema}"
            try:
                results.append(_run_backend("PostgreSQL", url, events=events, accounts=accounts,
                                            request_size=request_size, rate=rate, seconds=seconds, mode=mode,
                                            console=console))
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    table = Table(title="propcrm bench ingest — signed HTTP → stored → evaluated (1 API process, 1 worker)")
    for column in ("backend", "events", "API accepts", "request → decisions", "steady load", "latency",
                   "p50", "p90", "p99", "max", "n", "load (1 min)"):
        table.add_column(column, justify="right")
    for r in results:
        for label, key in (("request → evaluated", "event_to_decision"), ("breach → API reads it", "client_seen")):
            q = r[key]
            table.add_row(
                f"{r['backend']} {r['mode']}",
                f"{r['events']:,}",
                f"{r['ingest_rate']:,.0f} ev/s",
                f"{r['end_to_end_rate']:,.0f} ev/s",
                f"{r['steady_rate']:,.0f} ev/s",
                label,
                f"{q['p50']:,.0f} ms",
                f"{q['p90']:,.0f} ms",
                f"{q['p99']:,.0f} ms",
                f"{q['max']:,.0f} ms",
                f"{q['n']:,}",
                f"{r['load'][0]:.1f}→{r['load'][1]:.1f} on {r['cores']} cores",
            )
    console.print(table)
    return results


def alert_distance_of(text: str) -> tuple[str | None, str | None]:
    """``"5%"`` → (within_pct "5", None); ``"500"`` → (None, within_amount "500")."""
    text = text.strip()
    return (text[:-1].strip(), None) if text.endswith("%") else (None, text)


def bench_worker(*, accounts: int, requests: int, request_size: int = 250, alert_distance: str | None = None,
                 driver: str = "poll", states: str = "batch") -> dict:
    """``propcrm bench worker``: the evaluation worker's CPU time per request, in one process on SQLite,
    no HTTP — a figure that holds on a shared machine, where wall-clock latency is mostly the wait for
    a core. Seeds the firm of ``bench ingest``, evaluates a backlog of the throughput firm's events, then
    ingests the steady firm's events in requests of ``request_size`` and runs one pass after each;
    prints the CPU milliseconds of ingestion and of the pass per request, the passes' p50/p90/p99/max
    and the accounts a pass evaluates. ``alert_distance`` (``"5%"`` of equity or an amount ``"500"``): the
    firm's near-breach alert distance, so the passes pay for watching the worst points and alerting.
    ``driver``: ``poll`` (the pass worker) or ``log`` (the partition driver over ``raw_events``, with
    ``states`` ``batch`` or ``interval``: see cluster/embedded.py); the backlog's CPU rate is printed too."""
    from ..services.evaluation import EvaluationWorker
    from ..adapters.db.models_lifecycle import NearBreachAlert
    from ..services import near_breach
    from ..services.ingest import ingest

    console = Console(highlight=False, width=200)
    directory = tempfile.mkdtemp(prefix="propcrm-bench-")
    url = f"sqlite:///{Path(directory) / 'bench.db'}"
    load = FirmSpec(accounts=accounts, days=1, seed=5, equity_every_s=300, account_prefix="T")
    steady = FirmSpec(accounts=max(accounts // 4, 10), days=3, seed=6, equity_every_s=300, account_prefix="L")
    seed(url, [load, steady])
    engine = make_engine(url)
    factory = sessions(engine)
    if alert_distance:
        pct, amount = alert_distance_of(alert_distance)
        with factory.begin() as session:
            near_breach.update_settings(session, firm_id="bench", within_pct=pct, within_amount=amount, actor="bench")
    if driver == "log":
        from ..cluster.embedded import LogDriver

        worker = LogDriver(factory, states=states)
    else:
        worker = EvaluationWorker(factory)
    backlog = list(generate(load))[: accounts * 20]
    for start in range(0, len(backlog), 5000):
        with factory.begin() as session:
            ingest(session, firm_id="bench", source="bench", body=b"".join(backlog[start : start + 5000]))
    t0 = time.process_time()
    worker.run_until_idle()
    backlog_cpu = time.process_time() - t0
    lines = list(generate(steady))[: requests * request_size]
    ingest_cpu = 0.0
    passes: list[float] = []
    evaluated = 0
    for start in range(0, len(lines), request_size):
        t0 = time.process_time()
        with factory.begin() as session:
            ingest(session, firm_id="bench", source="bench", body=b"".join(lines[start : start + request_size]))
        t1 = time.process_time()
        evaluated += worker.run_pass().accounts
        passes.append((time.process_time() - t1) * 1000)
        ingest_cpu += t1 - t0
    with factory() as session:
        alerts = session.query(NearBreachAlert).count()
    engine.dispose()
    q = percentiles(passes)
    result = {"requests": len(passes), "ingest_ms": ingest_cpu * 1000 / len(passes),
              "pass_ms": sum(passes) / len(passes), "passes": q, "accounts_per_pass": evaluated / len(passes),
              "cpu_bound_rate": len(lines) / (ingest_cpu + sum(passes) / 1000), "alerts": alerts,
              "process_cpu_s": time.process_time(), "backlog_rate": len(backlog) / max(backlog_cpu, 1e-9)}
    console.print(
        f"bench worker ({driver}{'/' + states if driver == 'log' else ''}): backlog of {len(backlog):,} events "
        f"at {result['backlog_rate']:,.0f} events/s of CPU · {result['requests']} requests of {request_size} events, {accounts:,} + {steady.accounts:,} "
        f"accounts · CPU per request: ingest {result['ingest_ms']:.1f} ms, worker pass {result['pass_ms']:.1f} ms "
        f"(p50 {q['p50']:.0f} · p90 {q['p90']:.0f} · p99 {q['p99']:.0f} · max {q['max']:.0f} ms; "
        f"{result['accounts_per_pass']:.0f} accounts per pass) · one core would take "
        f"{result['cpu_bound_rate']:,.0f} events/s · alert distance {alert_distance or 'none'}: {alerts} alerts · "
        f"process CPU {result['process_cpu_s']:.1f} s · load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return result
