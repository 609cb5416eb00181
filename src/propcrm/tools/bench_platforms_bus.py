"""``propcrm bench platforms --nats-url …``: the platform connector in the scale-out deployment.

The layout is the cluster's, on the real NATS JetStream and PostgreSQL (a fresh schema and a fresh
stream, both removed afterwards): the platform simulator as its own process (``propcrm platform-sim``,
simulated traders placing ``--deals-per-s`` market orders on ``--accounts`` accounts); ``--workers``
``propcrm worker`` processes owning the partitions; one ``propcrm cluster dispatch`` process, woken by
the workers' outbox commits (``NOTIFY``, services/wakeup.py) with its poll left at 0.5 s as a
fallback; and in this process the MT5 Web API connector (one
:class:`~propcrm.adapters.platforms.runner.ConnectorRunner`) whose store publishes every step to the
partitions (:class:`~propcrm.features.platforms.store.BusStore`).

Measured, over the run after a warm-up, on one clock (this machine's wall clock):

* **deal → decision**: from the simulator's wall clock when it executed a deal (``Deal.wall_ms``) to
  the first commit notice of the worker owning the deal's partition (``<stream>.committed``, sent
  right after the batch's transaction committed) at or past the stream sequence of the message that
  carried the deal's event;
* **equity → decision**: the same from the moment the connector read the account;
* **breach → refused**: from a breach decision's ``created_at`` to the simulator's wall clock when it
  disabled trading on the account (its orders are refused from then on).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text

from .platform_sim.bench import CONNECTION, FIRM, seed_bench, start_simulator

UTC = dt.timezone.utc


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1)


class _Notices:
    """The workers' commit notices, (wall time, partition, seq), gathered on a loop of its own."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.seen: list[tuple[float, int, int]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, name="notices", daemon=True)

    def start(self) -> None:
        from ..adapters.bus.jetstream import connect

        self.thread.start()

        async def go() -> Any:
            nc, _ = await connect(self.bus, name="propcrm-bench-notices")

            async def on(msg) -> None:
                now = time.time()
                for partition, seq in json.loads(msg.data)["committed"].items():
                    self.seen.append((now, int(partition), int(seq)))

            await nc.subscribe(self.bus.commits_subject, cb=on)
            return nc

        self.nc = asyncio.run_coroutine_threadsafe(go(), self.loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.nc.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def committed_at(self, partition: int, seq: int, index: dict[int, list[tuple[float, int]]]) -> float | None:
        for at, done in index.get(partition, ()):
            if done >= seq:
                return at
        return None


def bench_platforms_bus(*, nats_url: str, database_url: str | None = None, accounts: int = 400,
                        deals_per_s: float = 2000, equity_per_s: float = 10_000, seconds: float = 30,
                        warmup: float = 5, reckless_share: float = 0.05, workers: int = 2, partitions: int = 16,
                        workdir: str | None = None, print_=print) -> dict[str, Any]:
    from ..adapters.bus.jetstream import BusConfig, connect, delete_stream
    from ..adapters.db import models as m
    from ..adapters.db.models_platforms import PlatformConnection
    from ..adapters.db.session import make_engine, migrate, sessions
    from ..adapters.platforms.guard import GuardSettings
    from ..adapters.platforms.metrics import ConnectorMetrics
    from ..adapters.platforms.runner import ConnectorRunner, RunnerSettings
    from ..adapters.platforms.secrets import SecretBox, new_key
    from ..features.platforms.connections import gateway_for
    from ..features.platforms.store import BusStore
    from .bench_service import PG_URL, free_port

    root = Path(workdir or tempfile.mkdtemp(prefix="propcrm-bench-platforms-bus-"))
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob("*.db*"):
        stale.unlink()
    base_url = database_url or PG_URL
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{base_url}{'&' if '?' in base_url else '?'}options=-csearch_path%3D{schema}"
    bus = BusConfig(url=nats_url, stream=f"BENCHP_{uuid.uuid4().hex[:8].upper()}", partitions=partitions,
                    lease_ttl_s=3.0)
    key = new_key()
    box = SecretBox(key.encode())
    sim_db = str(root / "sim.db")
    port = free_port()
    readings_s = max(0.02, accounts / equity_per_s) if equity_per_s > 0 else 3600.0
    migrate(url)
    print_(f"bench platforms (bus): {accounts} accounts, offered {deals_per_s:,.0f} deals/s and {equity_per_s:,.0f} "
           f"equity updates/s (readings every {readings_s * 1000:.0f} ms), {seconds:.0f} s after {warmup:.0f} s of "
           f"warm-up; {workers} worker process(es) on {partitions} partitions, 1 dispatcher process (woken by NOTIFY); "
           f"stream {bus.stream}, schema {schema}, work dir {root}", flush=True)
    connection_id = seed_bench(url, sim_db, accounts, box, f"http://127.0.0.1:{port}", readings_s, poll_s=0.02)
    env = {**os.environ, **bus.as_env(), "PROPCRM_DATABASE_URL": url, "PROPCRM_SECRET_KEY": key,
           "PROPCRM_SIM_MANAGER_PASSWORD": "bench-manager"}
    for name in ("PROPCRM_PLATFORM_BRIDGE_URL", "PROPCRM_PLATFORM_BRIDGE_SECRET"):
        env.pop(name, None)
    procs: dict[str, subprocess.Popen] = {}
    sim = start_simulator(sim_db, port, deals_per_s=deals_per_s, reckless_share=reckless_share, reckless_scale=60,
                          env=env)
    procs["simulator"] = sim
    for i in range(workers):
        with open(root / f"worker{i}.log", "ab") as out:
            procs[f"worker{i}"] = subprocess.Popen([sys.executable, "-m", "propcrm.cli", "worker"], env=env,
                                                   stdout=out, stderr=out)
    with open(root / "dispatcher.log", "ab") as out:
        procs["dispatcher"] = subprocess.Popen([sys.executable, "-m", "propcrm.cli", "cluster", "dispatch",
                                                "--interval", "0.5"], env=env, stdout=out, stderr=out)
    notices = _Notices(bus)
    notices.start()
    from ..services.wakeup import Signal, listen_outbox

    class Stamped(Signal):  # when outbox commits were announced (NOTIFY), as a dispatcher hears them
        def __init__(self) -> None:
            super().__init__()
            self.at: list[float] = []

        def notify(self) -> None:
            self.at.append(time.time())
            super().notify()

    heard = Stamped()
    listening_stop = threading.Event()
    listen_engine = make_engine(url)
    listen_outbox(listen_engine, listening_stop, signal=heard)

    engine = make_engine(url)
    db = sessions(engine)
    with db() as s:
        row = s.get(PlatformConnection, connection_id)
        s.expunge(row)
    published: list[tuple[int, int, bytes, float]] = []  # (partition, stream seq, body, acknowledged at)

    class RecordingStore(BusStore):
        async def _publish(self, prepared):  # the messages' sequences, to time each event to its commit
            from ..adapters.bus.jetstream import EventPublisher
            from ..adapters.bus.partitions import HEADER_ONCE

            if self._publisher is None:
                self._nc, js = await connect(self.bus, name="propcrm-bench-connector")
                self._publisher = EventPublisher(js, self.bus, headers={HEADER_ONCE: "platform"})
            acks = await self._publisher.publish(prepared.firm_id, prepared.source,
                                                 [(account, raw) for _, account, raw, _ in prepared.lines])
            now = time.time()
            published.extend((a.message.partition, a.seq, a.message.body, now) for a in acks)
            from ..services.ingest import IngestReport, LineOutcome

            return IngestReport([LineOutcome(n, "accepted", id=i) for n, _, _, i in prepared.lines])

    metrics = ConnectorMetrics()
    store = RecordingStore(db, firm_id=FIRM, connection_id=connection_id, name=CONNECTION, bus=bus)
    runner = ConnectorRunner(gateway_for(row, box), store, metrics=metrics, settings=RunnerSettings(
        poll_interval_s=0.02, backoff_initial_s=0.2, guard=GuardSettings(settle_s=1.0)))
    deadline = time.time() + 180  # the workers own every partition before the connector starts
    while True:
        with engine.connect() as conn:
            owned = conn.execute(text("SELECT count(*) FROM cluster_checkpoints WHERE stream = :s"),
                                 {"s": bus.stream}).scalar()
        if owned >= partitions:
            break
        if time.time() > deadline:
            raise RuntimeError(f"the workers did not take the partitions (see {root}/worker*.log)")
        time.sleep(0.25)
    stop = threading.Event()
    connector = threading.Thread(target=runner.run, args=(stop,), name="connector", daemon=True)
    connector.start()
    try:
        time.sleep(warmup)
        cpu_start = _cpu(connector, procs)
        load_start = os.getloadavg()[0]
        window_start = time.time()
        time.sleep(seconds)
        window_end = time.time()
        cpu_end = _cpu(connector, procs)
        load_end = os.getloadavg()[0]
        sim.send_signal(signal.SIGUSR1)  # the traders stop; what they did is drained
        time.sleep(2)
        drained_by = time.time() + 60
        while time.time() < drained_by:  # every message published is committed
            last: dict[int, int] = {}
            for partition, seq, _, _ in list(published):
                last[partition] = max(last.get(partition, 0), seq)
            done: dict[int, int] = {}
            for _, partition, seq in list(notices.seen):
                done[partition] = max(done.get(partition, 0), seq)
            if all(done.get(p, 0) >= seq for p, seq in last.items()):
                break
            time.sleep(0.2)
        with engine.connect() as conn:
            drained_by = time.time() + 30
            while time.time() < drained_by and conn.execute(text(
                    "SELECT count(*) FROM outbox WHERE status = 'pending' AND kind = 'platform_command'")).scalar():
                conn.commit()
                time.sleep(0.2)
    finally:
        stop.set()
        connector.join(timeout=10)
        store.close()
        for name, proc in procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if name == "simulator" else signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        notices.close()
        listening_stop.set()

    # ---------------------------------------------------------------- figures
    sim_conn = sqlite3.connect(sim_db)
    deals_wall = {f"deal-{d['Deal']}": d["wall_ms"] / 1000
                  for d in (json.loads(b) for (b,) in sim_conn.execute("SELECT body FROM deals"))}
    disabled = {str(a["login"]): a["disabled_at"]
                for a in (json.loads(b) for (b,) in sim_conn.execute("SELECT body FROM accounts")) if a.get("disabled_at")}
    sim_conn.close()
    index: dict[int, list[tuple[float, int]]] = {}
    for at, partition, seq in sorted(notices.seen):
        index.setdefault(partition, []).append((at, seq))
    deal_lat, equity_lat, bus_lat = [], [], []
    for partition, seq, body, acked in published:
        done = notices.committed_at(partition, seq, index)
        if done is None:
            continue
        if window_start <= acked < window_end:
            bus_lat.append(done - acked)
        for raw in body.split(b"\n"):
            event = json.loads(raw)
            if event.get("type") == "equity":
                origin = dt.datetime.fromisoformat(
                    str(event.get("platform_ts") or event["ts"]).replace("Z", "+00:00")).timestamp()
                if window_start <= origin < window_end:
                    equity_lat.append(done - origin)
            else:
                origin = deals_wall.get(event.get("id"))
                if origin is not None and window_start <= origin < window_end:
                    deal_lat.append(done - origin)
    with db() as s:
        breaches = list(s.execute(select(m.Account.login, m.Decision.created_at)
                                  .join(m.Account, m.Account.id == m.Decision.account_id)
                                  .where(m.Decision.firm_id == FIRM, m.Decision.kind == "breach")))
        letters = s.scalar(text("SELECT count(*) FROM cluster_dead_letters"))
        commands = s.execute(select(m.OutboxMessage.created_at, m.OutboxMessage.sent_at, m.OutboxMessage.attempts)
                             .where(m.OutboxMessage.kind == "platform_command")).all()
    queued = sorted((sent - created).total_seconds() for created, sent, _ in commands if sent is not None)
    retried = sum(1 for *_, attempts in commands if attempts > 1)
    breach_lat = [disabled[login] - created.timestamp() for login, created in breaches if login in disabled]
    # the breach's commit as the dispatcher could first know it: the first NOTIFY heard after the decision
    announced = sorted(heard.at)
    commit_lat, wake_lat = [], []
    for login, created in breaches:
        at = next((t for t in announced if t >= created.timestamp()), None)
        if at is not None and login in disabled:
            commit_lat.append(at - created.timestamp())
            wake_lat.append(disabled[login] - at)
    listen_engine.dispose()
    span = window_end - window_start
    in_window = sum(1 for w in deals_wall.values() if window_start <= w < window_end)
    result = {
        "accounts": accounts, "workers": workers, "partitions": partitions, "seconds": round(span, 1),
        "deals_per_s_offered": deals_per_s, "deals_per_s_simulator": round(in_window / span),
        "deals_per_s_decided": round(len(deal_lat) / span), "equity_per_s_offered": equity_per_s,
        "equity_per_s_decided": round(len(equity_lat) / span),
        "deal_p50_ms": _pct(deal_lat, 0.5), "deal_p90_ms": _pct(deal_lat, 0.9), "deal_p99_ms": _pct(deal_lat, 0.99),
        "equity_p50_ms": _pct(equity_lat, 0.5), "equity_p90_ms": _pct(equity_lat, 0.9),
        "equity_p99_ms": _pct(equity_lat, 0.99),
        "acked_p50_ms": _pct(bus_lat, 0.5), "acked_p90_ms": _pct(bus_lat, 0.9), "acked_p99_ms": _pct(bus_lat, 0.99),
        "breaches": len(breaches), "breaches_refused": len(breach_lat), "breach_p50_ms": _pct(breach_lat, 0.5),
        "breach_p90_ms": _pct(breach_lat, 0.9), "breach_p99_ms": _pct(breach_lat, 0.99),
        "notify_p50_ms": _pct(commit_lat, 0.5), "notify_p90_ms": _pct(commit_lat, 0.9),
        "notify_p99_ms": _pct(commit_lat, 0.99), "refused_p50_ms": _pct(wake_lat, 0.5),
        "refused_p90_ms": _pct(wake_lat, 0.9), "refused_p99_ms": _pct(wake_lat, 0.99),
        "command_p50_ms": _pct(queued, 0.5), "command_p99_ms": _pct(queued, 0.99), "commands_retried": retried,
        "dead_letters": letters, "messages": len(published), "connector": runner.health.to_dict(),
        "cpu_per_s": {k: round((cpu_end[k] - cpu_start[k]) / span, 2) for k in cpu_end if k in cpu_start},
        "load": (round(load_start, 1), round(load_end, 1)),
    }
    engine.dispose()

    async def clean() -> None:
        nc, js = await connect(bus)
        await delete_stream(js, bus)
        await nc.close()

    try:
        asyncio.run(clean())
    except Exception:  # noqa: BLE001
        pass
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
    _print(result, print_)
    return result


def _cpu(connector: threading.Thread, procs: dict[str, subprocess.Popen]) -> dict[str, float]:
    """CPU seconds so far of the connector thread and of each process (Linux)."""
    out: dict[str, float] = {}
    try:
        out["connector"] = time.clock_gettime(time.pthread_getcpuclockid(connector.ident))
    except (OSError, AttributeError, TypeError):
        pass
    for name, proc in procs.items():
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    return out


def _print(r: dict[str, Any], print_) -> None:
    def f(v: Any) -> str:
        return "—" if v is None else f"{v:,.0f} ms"

    print_("")
    print_(f"{'':30}{'offered':>10}{'achieved':>10}{'p50':>10}{'p90':>10}{'p99':>10}")
    print_(f"{'deal → decision (per s)':30}{r['deals_per_s_offered']:>10,.0f}{r['deals_per_s_decided']:>10,}"
           f"{f(r['deal_p50_ms']):>10}{f(r['deal_p90_ms']):>10}{f(r['deal_p99_ms']):>10}")
    print_(f"{'   (executed by the simulator)':30}{'':>10}{r['deals_per_s_simulator']:>10,}")
    print_(f"{'equity → decision (per s)':30}{r['equity_per_s_offered']:>10,.0f}{r['equity_per_s_decided']:>10,}"
           f"{f(r['equity_p50_ms']):>10}{f(r['equity_p90_ms']):>10}{f(r['equity_p99_ms']):>10}")
    print_(f"{'   (publish acked → committed)':30}{'':>10}{'':>10}"
           f"{f(r['acked_p50_ms']):>10}{f(r['acked_p90_ms']):>10}{f(r['acked_p99_ms']):>10}")
    print_(f"{'breach → orders refused':30}{r['breaches']:>10}{r['breaches_refused']:>10}"
           f"{f(r['breach_p50_ms']):>10}{f(r['breach_p90_ms']):>10}{f(r['breach_p99_ms']):>10}")
    print_(f"{'   (decision → NOTIFY heard)':30}{'':>10}{'':>10}"
           f"{f(r['notify_p50_ms']):>10}{f(r['notify_p90_ms']):>10}{f(r['notify_p99_ms']):>10}")
    print_(f"{'   (NOTIFY heard → refused)':30}{'':>10}{'':>10}"
           f"{f(r['refused_p50_ms']):>10}{f(r['refused_p90_ms']):>10}{f(r['refused_p99_ms']):>10}")
    # created_at is stamped inside the worker's transaction (outcomes.write_outcomes), sent_at is the start of
    # the dispatch pass that claimed the row: this span is mostly the worker's transaction still open, not
    # the dispatcher (issue 20; the breach split above is the dispatcher's share)
    print_(f"platform commands: row written in the worker's transaction → its dispatch pass p50 "
           f"{f(r['command_p50_ms'])}, p99 {f(r['command_p99_ms'])}; "
           f"{r['commands_retried']} needed more than one attempt")
    print_(f"connector: {r['messages']:,} messages published, health {r['connector']}")
    print_(f"dead letters {r['dead_letters']}; CPU seconds per second of the window: "
           + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_per_s"].items())
           + f"; load average {r['load'][0]} → {r['load'][1]}")


__all__ = ["bench_platforms_bus"]
