"""``propcrm bench connector``: what the simulator and the ``mt5-web`` connector cost, in CPU.

No evaluation worker and no dispatcher — only the two ends of issue 20's platform path, so that their
cost can be read apart from the rest of ``bench platforms``:

* **the simulator** runs as its own process (``propcrm platform-sim``, its simulated traders placing
  ``--deals-per-s`` market orders on ``--accounts`` accounts, prices ticking every 50 ms) and is read
  by the connector as at the issue's load; measured: the deals it executed per second and its
  process's CPU seconds per second (1.00 = one core busy: then it executes what one core allows);
* **the connector** — one :class:`~propcrm.adapters.platforms.runner.ConnectorRunner` with the real
  Web API gateway, its accounts read every ``accounts / equity_per_s`` seconds — runs in this process
  with the real database store (``DatabaseStore``: ingestion into a fresh SQLite database, the cursor
  in the same transaction; ``--store none`` drops the lines instead). Measured with the connector
  thread's CPU clock, per stored line (a deal, a fee, an equity reading, a login) and split into
  ``poll`` (the HTTP requests and the decoding and mapping of the answers), ``lines`` (per account
  order, guard, equity ids, NDJSON) and ``commit`` (ingestion and the cursor).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .bench import CONNECTION, FIRM, cpu_seconds, free_port, seed_bench, start_simulator, stop_simulator


def bench_connector(*, accounts: int = 400, deals_per_s: float = 2000, equity_per_s: float = 10_000,
                    seconds: float = 20, warmup: float = 3, store: str = "db", workdir: str | None = None,
                    print_=print) -> dict[str, Any]:
    from ...adapters.db.models_platforms import PlatformConnection
    from ...adapters.db.session import make_engine, migrate, sessions
    from ...adapters.platforms.guard import GuardSettings
    from ...adapters.platforms.metrics import ConnectorMetrics
    from ...adapters.platforms.runner import CommitReport, ConnectorRunner, RunnerSettings
    from ...adapters.platforms.secrets import SecretBox, new_key
    from ...features.platforms.connections import gateway_for
    from ...features.platforms.store import DatabaseStore

    root = Path(workdir or tempfile.mkdtemp(prefix="propcrm-bench-connector-"))
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob("*.db*"):
        stale.unlink()
    url = f"sqlite:///{root / 'propcrm.db'}"
    sim_db = str(root / "sim.db")
    port = free_port()
    readings_s = max(0.02, accounts / equity_per_s) if equity_per_s > 0 else 3600.0
    box = SecretBox(new_key().encode())
    migrate(url)
    connection_id = seed_bench(url, sim_db, accounts, box, f"http://127.0.0.1:{port}", readings_s, 0.02)
    print_(f"bench connector: {accounts} accounts, offered {deals_per_s:,.0f} deals/s, readings every "
           f"{readings_s * 1000:.0f} ms (≤ {equity_per_s:,.0f} equity updates/s), store {store}, {seconds:.0f} s after "
           f"{warmup:.0f} s of warm-up; work dir {root}", flush=True)

    sim = start_simulator(sim_db, port, deals_per_s=deals_per_s, reckless_share=0, reckless_scale=1)

    engine = make_engine(url)
    db = sessions(engine)
    with db() as s:
        row = s.get(PlatformConnection, connection_id)
        s.expunge(row)

    class Dropping:  # --store none: the lines are made and dropped
        name = CONNECTION

        def __init__(self, inner: DatabaseStore) -> None:
            self.inner = inner

        def mapped(self):
            return self.inner.mapped()

        def cursor(self):
            return None

        def views(self, accounts):
            return self.inner.views(accounts)

        def commit(self, lines, cursor):
            return CommitReport(accepted=len(lines))

        def enforce(self, account, command, reason):
            return False

    database = DatabaseStore(db, firm_id=FIRM, connection_id=connection_id, name=CONNECTION)
    chosen = database if store == "db" else Dropping(database)
    runner = ConnectorRunner(gateway_for(row, box), chosen, metrics=ConnectorMetrics(), settings=RunnerSettings(
        # the simulator's database is new: a first sync reading 7 days back (168 hour-long windows) only
        # delayed the measurement
        poll_interval_s=0.02, backoff_initial_s=0.2, start_lookback_s=600, guard=GuardSettings(settle_s=1.0)))

    cpu = {"poll": 0.0, "lines": 0.0, "commit": 0.0}
    counts = {"lines": 0, "steps": 0}
    measuring = threading.Event()
    clock = time.thread_time

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                if measuring.is_set():
                    cpu[name] += clock() - started
        return wrapper

    runner.gateway.poll = timed("poll", runner.gateway.poll)  # type: ignore[method-assign]
    original_lines = runner._lines

    def lines(poll: Any) -> Any:
        started = clock()
        out = original_lines(poll)
        if measuring.is_set():
            cpu["lines"] += clock() - started
            counts["lines"] += len(out[0])
            counts["steps"] += 1
        return out

    runner._lines = lines  # type: ignore[method-assign]
    chosen.commit = timed("commit", chosen.commit)  # type: ignore[method-assign]
    transactions: list[float] = []  # wall seconds of each write transaction (SQLite's write lock held)
    part = getattr(database, "_commit_part", None)  # a step's parts (PROPCRM_CONNECTOR_COMMIT_LINES)
    held = "_commit_part" if part is not None else "commit"
    inner = getattr(database, held)

    def holding(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            if measuring.is_set():
                transactions.append(time.perf_counter() - started)

    if store == "db":
        setattr(database, held, holding)

    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), name="connector", daemon=True)
    thread.start()
    time.sleep(warmup)
    sim_deals_start = _sim_deals(sim_db)
    cpu_start = cpu_seconds([thread], sim.pid)
    load_start = os.getloadavg()[0]
    measuring.set()
    started = time.time()
    time.sleep(seconds)
    measuring.clear()
    span = time.time() - started
    cpu_end = cpu_seconds([thread], sim.pid)
    load_end = os.getloadavg()[0]
    sim_deals_end = _sim_deals(sim_db)
    stop.set()
    thread.join(timeout=10)
    stop_simulator(sim)
    engine.dispose()

    n = max(counts["lines"], 1)
    result = {
        "accounts": accounts, "store": store, "seconds": span,
        "deals_per_s_offered": deals_per_s, "deals_per_s_simulator": (sim_deals_end - sim_deals_start) / span,
        "simulator_cpu_per_s": (cpu_end.get("simulator", 0) - cpu_start.get("simulator", 0)) / span,
        "lines_per_s": counts["lines"] / span, "steps": counts["steps"],
        "connector_cpu_per_s": (cpu_end.get("connector", 0) - cpu_start.get("connector", 0)) / span,
        "us_per_line": {k: round(v / n * 1e6, 1) for k, v in cpu.items()},
        "load": (round(load_start, 1), round(load_end, 1)),
    }
    result["us_per_line"]["total"] = round(sum(cpu.values()) / n * 1e6, 1)
    transactions.sort()
    result["transactions_ms"] = ({"n": len(transactions), "p50": round(transactions[len(transactions) // 2] * 1e3),
                                  "p99": round(transactions[int(len(transactions) * 0.99)] * 1e3),
                                  "max": round(transactions[-1] * 1e3)} if transactions else None)
    result["simulator_cpu_us_per_deal"] = (result["simulator_cpu_per_s"] / result["deals_per_s_simulator"] * 1e6
                                           if result["deals_per_s_simulator"] else None)
    us = result["us_per_line"]
    print_(f"simulator: {result['deals_per_s_simulator']:,.0f} deals/s executed (offered {deals_per_s:,.0f}), "
           f"{result['simulator_cpu_per_s']:.2f} CPU-s/s, {result['simulator_cpu_us_per_deal'] or 0:,.0f} µs CPU per deal "
           "(with the connector's requests)")
    print_(f"connector: {result['lines_per_s']:,.0f} lines/s stored in {counts['steps']:,} steps, "
           f"{result['connector_cpu_per_s']:.2f} CPU-s/s; per line: poll {us['poll']} µs, lines {us['lines']} µs, "
           f"commit {us['commit']} µs, total {us['total']} µs")
    if result["transactions_ms"]:
        t = result["transactions_ms"]
        print_(f"write transactions: {t['n']:,}, wall p50 {t['p50']} ms, p99 {t['p99']} ms, max {t['max']} ms")
    print_(f"load average {result['load'][0]} → {result['load'][1]}")
    return result


def connector_cpu(*, accounts: int = 400, steps: int = 200, orders_per_step: int = 80, print_=print) -> dict[str, Any]:
    """The connector's CPU per line alone, steady and repeatable on a loaded machine: the simulator in
    this process (no database, its Web API on a port), its traders driven between the connector's steps
    — ``orders_per_step`` orders and a price tick, then one step reading every account: at the issue's
    mix, 2,000 deals : 10,000 equity readings a second. Measured with this thread's CPU clock around
    ``runner.step()`` (the simulator's HTTP thread is not counted), lines made but not stored."""
    import contextlib
    import datetime as dt

    from ...adapters.platforms.guard import GuardSettings
    from ...adapters.platforms.metrics import ConnectorMetrics
    from ...adapters.platforms.mt5.webapi import Mt5WebGateway, Mt5WebSettings
    from ...adapters.platforms.runner import CommitReport, ConnectorRunner, RunnerSettings
    from ...adapters.platforms.secrets import Secret
    from .main import Simulator
    from .robots import Robots

    sim = Simulator(None, "1000", "Bench#Manager1", zone="+02:00").start(feed=False)
    try:
        server = sim.server
        logins = []
        for i in range(accounts):
            account = server.add_user(group="bench\\challenge", name=f"Bench {i + 1}", leverage=100)
            server.balance_operation(account.login, 100_000_00, "pc init bench")
            logins.append(account.login)
        robots = Robots(server, logins, orders_per_s=1, reckless_share=0.0, reckless_scale=1.0, seed=11)

        class Counting:
            name = CONNECTION
            lines = 0

            def mapped(self):
                return {str(login): f"B{i + 1}" for i, login in enumerate(logins)}

            def cursor(self):
                return None

            def views(self, accounts):
                return {}

            def commit(self, lines, cursor):
                Counting.lines += len(lines)
                return CommitReport(accepted=len(lines))

            def enforce(self, account, command, reason):
                return False

        settings = Mt5WebSettings(url=sim.url, manager="1000", server_timezone="+02:00", groups="bench\\*",
                                  readings_interval_s=0, users_interval_s=3600)
        gateway = Mt5WebGateway(settings, {"password": Secret("Bench#Manager1")})
        runner = ConnectorRunner(gateway, Counting(), metrics=ConnectorMetrics(), settings=RunnerSettings(
            poll_interval_s=0, start_lookback_s=600, guard=GuardSettings(settle_s=0)))

        def trade() -> None:
            with server.batch() if hasattr(server, "batch") else contextlib.nullcontext():  # (older simulators)
                for _ in range(orders_per_step):
                    robots.act(robots._rng.choice(robots.robots))
            server.tick(0.02)

        runner.connect()
        runner.sync()
        for _ in range(20):  # warm-up: positions open, the cursor's overlap filled
            trade()
            runner.step()
        Counting.lines = 0
        cpu = 0.0
        blocks: list[float] = []  # µs per line of each block of 20 steps (the spread says how noisy the machine is)
        block_cpu, block_lines = 0.0, 0
        for i in range(steps):
            trade()
            before = Counting.lines
            started = time.thread_time()
            runner.step()
            spent = time.thread_time() - started
            cpu += spent
            block_cpu += spent
            block_lines += Counting.lines - before
            if i % 20 == 19:
                blocks.append(block_cpu / max(block_lines, 1) * 1e6)
                block_cpu, block_lines = 0.0, 0
        runner.disconnect()
    finally:
        sim.close()
    lines = Counting.lines
    blocks.sort()
    result = {"steps": steps, "lines": lines, "cpu_s": cpu, "us_per_line": cpu / max(lines, 1) * 1e6,
              "us_per_line_best_block": blocks[0] if blocks else None,
              "us_per_line_median_block": blocks[len(blocks) // 2] if blocks else None,
              "load": round(os.getloadavg()[0], 1), "at": dt.datetime.now(dt.timezone.utc).strftime("%H:%M")}
    print_(f"connector in process: {steps} steps ({orders_per_step} orders and {accounts} account readings each), "
           f"{lines:,} lines, {cpu:.2f} CPU s: {result['us_per_line']:.1f} µs CPU per line (poll and lines, not "
           f"stored; blocks of 20 steps: best {blocks[0]:.1f}, median {blocks[len(blocks) // 2]:.1f}); "
           f"load average {result['load']}")
    return result


def _sim_deals(path: str) -> int:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM deals").fetchone()[0]
    finally:
        conn.close()


__all__ = ["bench_connector", "connector_cpu"]
