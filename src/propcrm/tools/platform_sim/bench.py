"""``propcrm bench platforms``: deals and equity through the MT5 Web API connector into decisions.

The layout is the embedded default's: the simulator runs as its own process (``propcrm platform-sim``,
simulated traders placing ``--deals-per-s`` market orders — every order is one deal — on ``--accounts``
accounts, prices ticking every 50 ms); this process runs what ``propcrm serve`` runs — the connector
(one :class:`~propcrm.adapters.platforms.runner.ConnectorRunner`), the evaluation worker and the outbox
dispatcher — on a fresh SQLite database. The connector reads the accounts every
``accounts / equity_per_s`` seconds, so that equity updates arrive at ``--equity-per-s``.

Measured, over the run after a warm-up:

* **deal → decision**: from the simulator's wall clock when it executed a deal (``Deal.wall_ms``, kept in
  its database) to the moment propcrm has evaluated the deal's event (its raw event is no longer
  pending — the decisions of that event are committed in the same transaction). A sampler reads the
  evaluated watermark (every event up to it is evaluated) every 10 ms, so figures are at most 10 ms
  pessimistic;
* **equity → decision**: the same from the moment the connector read the account;
* **breach → refusing orders**: from a breach decision's ``created_at`` to the simulator's wall clock
  when trading was disabled on the account (``Account.disabled_at``); after it, the simulator refuses
  the account's orders (10017).

The worker and the dispatcher run as in ``propcrm serve``: the worker is woken by the connector's
commits (services/wakeup.py ``EVENTS``), the dispatcher by the worker's outbox rows (``OUTBOX``); their
fallback polls (1 s, 0.5 s) only matter for work written by other processes. (``wake`` is accepted and
ignored: it chose between these and fixed idle waits before the service itself was event-driven.)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

UTC = dt.timezone.utc
FIRM, CONNECTION, MANAGER = "bench", "sim", "1000"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


@dataclass
class Sampler:
    """The evaluated watermark over time: (monotonic-free wall time, seq) pairs."""

    engine: Any
    samples: list[tuple[float, int]] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        query = text("SELECT (SELECT min(seq) FROM raw_events WHERE status = 'pending' AND account_id IS NOT NULL), "
                     "(SELECT max(seq) FROM raw_events)")
        # a deferred (read) transaction: on SQLite every other unit of work takes the write lock up front,
        # and a sampler queueing for it would stamp its samples late by a commit's length
        with self.engine.execution_options(sqlite_begin="DEFERRED").connect() as conn:
            while not stop.wait(0.01):
                low, high = conn.execute(query).one()
                conn.commit()
                if high is None:
                    continue
                self.samples.append((time.time(), (low - 1) if low is not None else high))

    def evaluated_at(self, seqs: list[tuple[int, float]]) -> list[float]:
        """For (seq, origin time) pairs sorted by seq: seconds from origin to the first sample covering seq."""
        out, i = [], 0
        for seq, origin in seqs:
            while i < len(self.samples) and self.samples[i][1] < seq:
                i += 1
            if i == len(self.samples):
                break
            out.append(self.samples[i][0] - origin)
        return out


def seed_bench(url: str, sim_db: str, accounts: int, box: Any, sim_url: str, readings_s: float, poll_s: float) -> int:
    from ...adapters.db import models as m
    from ...adapters.db.session import make_engine, sessions
    from ...domain.rulepack import load_pack
    from ...features.platforms.connections import add_connection, map_login
    from ...services.catalog import add_pack, create_account, ensure_firm
    from .server import SimServer

    server = SimServer(sim_db, zone="+02:00")
    logins = []
    for i in range(accounts):
        account = server.add_user(group="bench\\challenge", name=f"Bench {i + 1}", leverage=100)
        server.balance_operation(account.login, 100_000_00, "pc init bench")
        logins.append(account.login)
    server.close()
    engine = make_engine(url)
    db = sessions(engine)
    with db.begin() as s:
        ensure_firm(s, firm_id=FIRM, name="Bench Prop")
        version = add_pack(s, firm_id=FIRM, pack=load_pack("two-step-100k"), activate=True)
        row = add_connection(s, firm_id=FIRM, name=CONNECTION, family_name="mt5-web",
                             settings={"url": sim_url, "manager": MANAGER, "server_timezone": "+02:00",
                                       "groups_by_phase": {"*": "bench\\challenge"}, "groups": "bench\\*",
                                       "poll_interval_s": poll_s,
                                       "readings_interval_s": readings_s, "users_interval_s": 5.0},
                             secrets={"password": "bench-manager"}, actor="bench", box=box)
        trader = m.Trader(firm_id=FIRM, name="Bench trader", email="bench@traders.example")
        s.add(trader)
        s.flush()
        for i, login in enumerate(logins):
            create_account(s, firm_id=FIRM, external_id=f"B{i + 1}", pack_version_id=version.id, platform=CONNECTION,
                           trader_id=trader.id)
            s.flush()
            map_login(s, firm_id=FIRM, connection=CONNECTION, login=str(login), account=f"B{i + 1}", actor="bench")
        connection_id = row.id
    engine.dispose()
    return connection_id


def start_simulator(sim_db: str, port: int, *, deals_per_s: float, reckless_share: float, reckless_scale: float,
                    env: dict[str, str] | None = None) -> subprocess.Popen:
    """The simulator in a process of its own (``propcrm platform-sim``), once it says it listens; its log
    is drained by a thread from then on."""
    env = {**os.environ, "PROPCRM_SIM_MANAGER_PASSWORD": "bench-manager", **(env or {})}
    sim = subprocess.Popen([sys.executable, "-m", "propcrm.cli", "platform-sim", "--db", sim_db, "--port", str(port),
                            "--zone", "+02:00", "--tick", "0.05", "--orders-per-s", str(deals_per_s),
                            "--reckless-share", str(reckless_share), "--reckless-scale", str(reckless_scale)],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in sim.stdout:  # its log, then the line that says it listens
        seen.append(line.strip())
        if line.startswith("platform simulator:"):
            break
    else:
        sim.kill()
        raise RuntimeError("the simulator did not start: " + " / ".join(seen[-5:]))
    threading.Thread(target=lambda: [None for _ in sim.stdout], daemon=True).start()  # drain its log
    return sim


def stop_simulator(sim: subprocess.Popen) -> None:
    """Stop it as an operator would (SIGINT: it closes its database), killed if it has not gone in 20 s."""
    sim.send_signal(signal.SIGINT)
    try:
        sim.wait(timeout=20)
    except subprocess.TimeoutExpired:
        sim.kill()


def bench_platforms(*, accounts: int = 400, deals_per_s: float = 2000, equity_per_s: float = 10_000,
                    seconds: float = 30, warmup: float = 5, reckless_share: float = 0.05, wake: bool = False,
                    workdir: str | None = None, print_=print) -> dict[str, Any]:
    from ...adapters.db import models as m
    from ...adapters.db.models_platforms import PlatformConnection
    from ...adapters.db.session import make_engine, migrate, sessions
    from ...adapters.platforms.guard import GuardSettings
    from ...adapters.platforms.metrics import ConnectorMetrics
    from ...adapters.platforms.runner import ConnectorRunner, RunnerSettings
    from ...adapters.platforms.secrets import SecretBox, new_key
    from ...features.platforms.connections import gateway_for
    from ...features.platforms.store import DatabaseStore
    from ...services.dispatch import build_dispatcher
    from ...services.evaluation import EvaluationWorker

    root = Path(workdir or tempfile.mkdtemp(prefix="propcrm-bench-platforms-"))
    root.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{root / 'propcrm.db'}"
    sim_db = str(root / "sim.db")
    for stale in root.glob("*.db*"):
        stale.unlink()
    port = free_port()
    sim_url = f"http://127.0.0.1:{port}"
    readings_s = max(0.02, accounts / equity_per_s) if equity_per_s > 0 else 3600.0
    box = SecretBox(new_key().encode())
    migrate(url)
    print_(f"bench platforms: {accounts} accounts, offered {deals_per_s:,.0f} deals/s and {equity_per_s:,.0f} equity "
           f"updates/s (readings every {readings_s * 1000:.0f} ms), {seconds:.0f} s after {warmup:.0f} s of warm-up; "
           f"worker and dispatcher woken by commits, as in `serve`; work dir {root}",
           flush=True)
    connection_id = seed_bench(url, sim_db, accounts, box, sim_url, readings_s, 0.02)

    sim = start_simulator(sim_db, port, deals_per_s=deals_per_s, reckless_share=reckless_share, reckless_scale=60)

    engine = make_engine(url)
    db = sessions(engine)
    with db() as s:
        row = s.get(PlatformConnection, connection_id)
        s.expunge(row)
    metrics = ConnectorMetrics()
    store = DatabaseStore(db, firm_id=FIRM, connection_id=connection_id, name=CONNECTION)
    runner = ConnectorRunner(gateway_for(row, box), store, metrics=metrics, settings=RunnerSettings(
        # the simulator's database is new: a first sync reading 7 days back (168 hour-long windows) only
        # delayed the measurement
        poll_interval_s=0.02, backoff_initial_s=0.2, start_lookback_s=600, guard=GuardSettings(settle_s=1.0)))
    saved_env = {k: os.environ.pop(k) for k in ("PROPCRM_PLATFORM_BRIDGE_URL", "PROPCRM_PLATFORM_BRIDGE_SECRET")
                 if k in os.environ}
    dispatcher = build_dispatcher(db, {})
    from ...features.platforms.commands import PlatformCommands
    from ...services.dispatch import dispatch_loop
    from ...services.wakeup import EVENTS, OUTBOX

    dispatcher.connectors.router = PlatformCommands(db, fallback=None, box=box)  # the bench's own key
    stop = threading.Event()
    worker = EvaluationWorker(db)
    passes = {"worker": 0, "dispatch": 0}
    run_once = dispatcher.run_once

    def counted_pass(*args: Any, **kwargs: Any) -> Any:
        passes["dispatch"] += 1
        return run_once(*args, **kwargs)

    dispatcher.run_once = counted_pass  # type: ignore[method-assign]

    def worker_loop() -> None:  # what `propcrm serve` runs (cli/serve.py): woken by committed events
        while not stop.is_set():
            seen = EVENTS.generation
            report = worker.run_pass()
            passes["worker"] += 1
            if report.accounts == 0 and report.set_aside == 0 and report.stale == 0:
                EVENTS.wait(seen, 1.0)

    def dispatch_loop_() -> None:  # likewise: woken by committed outbox rows, 0.5 s poll otherwise
        dispatch_loop(dispatcher, stop, fallback=0.5)

    sampler = Sampler(engine)
    threads = [threading.Thread(target=runner.run, args=(stop,), name="connector", daemon=True),
               threading.Thread(target=worker_loop, name="worker", daemon=True),
               threading.Thread(target=dispatch_loop_, name="dispatch", daemon=True),
               threading.Thread(target=sampler.run, args=(stop,), name="sampler", daemon=True)]
    for thread in threads:
        thread.start()
    time.sleep(warmup)
    cpu_start = cpu_seconds(threads, sim.pid)
    load_start = os.getloadavg()[0]
    window_start = time.time()
    time.sleep(seconds)
    window_end = time.time()
    cpu_end = cpu_seconds(threads, sim.pid)
    load_end = os.getloadavg()[0]
    sim.send_signal(signal.SIGUSR1)  # the traders stop; the platform serves on while what they did is drained
    drained_by = time.time() + 30
    with engine.execution_options(sqlite_begin="DEFERRED").connect() as conn:
        while time.time() < drained_by:
            pending = conn.execute(text("SELECT count(*) FROM raw_events WHERE status = 'pending' "
                                        "AND account_id IS NOT NULL")).scalar()
            commands = conn.execute(text("SELECT count(*) FROM outbox WHERE status = 'pending' "
                                         "AND kind = 'platform_command'")).scalar()
            conn.commit()
            if not pending and not commands and time.time() - window_end > 3:
                break
            time.sleep(0.2)
    stop.set()
    EVENTS.notify()
    OUTBOX.notify()
    for thread in threads:
        thread.join(timeout=10)
    stop_simulator(sim)
    dispatcher.close()
    os.environ.update(saved_env)

    # ---------------------------------------------------------------- figures
    sim_conn = sqlite3.connect(sim_db)
    deals_wall: dict[str, float] = {}
    for (body,) in sim_conn.execute("SELECT body FROM deals"):
        deal = json.loads(body)
        deals_wall[f"deal-{deal['Deal']}"] = deal["wall_ms"] / 1000
    disabled: dict[str, float] = {}
    for (body,) in sim_conn.execute("SELECT body FROM accounts"):
        account = json.loads(body)
        if account.get("disabled_at"):
            disabled[str(account["login"])] = account["disabled_at"]
    sim_conn.close()
    in_window = [w for w in deals_wall.values() if window_start <= w < window_end]
    deal_seqs, equity_seqs = [], []
    with db() as s:
        for seq, event_id, kind, body in s.execute(
                select(m.RawEvent.seq, m.RawEvent.event_id, m.RawEvent.type, m.RawEvent.body)
                .where(m.RawEvent.firm_id == FIRM, m.RawEvent.account_id.is_not(None)).order_by(m.RawEvent.seq)):
            if kind == "equity":
                event = json.loads(body)
                observed = dt.datetime.fromisoformat(str(event.get("platform_ts") or event["ts"]).replace("Z", "+00:00"))
                origin = observed.timestamp()
                if window_start <= origin < window_end:
                    equity_seqs.append((seq, origin))
            else:
                origin = deals_wall.get(event_id)
                if origin is not None and window_start <= origin < window_end:
                    deal_seqs.append((seq, origin))
        breaches = list(s.execute(select(m.Account.login, m.Decision.created_at)
                                  .join(m.Account, m.Account.id == m.Decision.account_id)
                                  .where(m.Decision.firm_id == FIRM, m.Decision.kind == "breach")))
        status_counts = dict(s.execute(text("SELECT status, count(*) FROM raw_events GROUP BY status")).all())
    deal_lat = sampler.evaluated_at(deal_seqs)
    equity_lat = sampler.evaluated_at(equity_seqs)
    breach_lat = [disabled[login] - created.timestamp() for login, created in breaches if login in disabled]
    span = window_end - window_start
    poll = metrics.poll_seconds.labels(CONNECTION)
    commit = metrics.commit_seconds.labels(CONNECTION)

    def mean_of(hist: Any) -> float | None:
        samples = {s.name.rsplit("_", 1)[-1]: s.value for s in hist.collect()[0].samples if not s.labels.get("le")}
        return samples["sum"] / samples["count"] if samples.get("count") else None

    result = {
        "accounts": accounts, "seconds": span, "wake": wake,
        "deals_per_s_offered": deals_per_s, "deals_per_s_simulator": len(in_window) / span,
        "deals_per_s_evaluated": len(deal_lat) / span, "equity_per_s_offered": equity_per_s,
        "equity_per_s_evaluated": len(equity_lat) / span,
        "deal_p50_ms": _ms(_pct(deal_lat, 0.5)), "deal_p99_ms": _ms(_pct(deal_lat, 0.99)),
        "equity_p50_ms": _ms(_pct(equity_lat, 0.5)), "equity_p99_ms": _ms(_pct(equity_lat, 0.99)),
        "breaches": len(breaches), "breaches_disabled": len(breach_lat),
        "breach_p50_ms": _ms(_pct(breach_lat, 0.5)), "breach_p99_ms": _ms(_pct(breach_lat, 0.99)),
        "breach_max_ms": _ms(max(breach_lat) if breach_lat else None),
        "poll_mean_ms": _ms(mean_of(poll)), "commit_mean_ms": _ms(mean_of(commit)),
        "cpu_per_s": {name: round((cpu_end[name] - cpu_start[name]) / span, 3) for name in cpu_end
                      if name in cpu_start},
        "load": (round(load_start, 1), round(load_end, 1)),
        "worker_passes": passes["worker"], "dispatch_passes": passes["dispatch"], "raw_events": status_counts,
    }
    engine.dispose()
    _print(result, print_)
    return result


def cpu_seconds(threads: list[threading.Thread], sim_pid: int) -> dict[str, float]:
    """CPU seconds so far of each of the bench's threads and of the simulator's process (Linux)."""
    out: dict[str, float] = {}
    for thread in threads:
        try:
            out[thread.name] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, AttributeError, TypeError):
            pass
    try:
        fields = Path(f"/proc/{sim_pid}/stat").read_text().rsplit(")", 1)[1].split()
        out["simulator"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _print(r: dict[str, Any], print_) -> None:
    def f(v: Any, unit: str = " ms") -> str:
        return "—" if v is None else f"{v:,.0f}{unit}"

    print_("")
    print_(f"{'':34}{'offered':>12}{'achieved':>12}{'p50':>10}{'p99':>10}")
    print_(f"{'deals → decisions (per s)':34}{r['deals_per_s_offered']:>12,.0f}{r['deals_per_s_evaluated']:>12,.0f}"
           f"{f(r['deal_p50_ms']):>10}{f(r['deal_p99_ms']):>10}")
    print_(f"{'   (executed by the simulator)':34}{'':>12}{r['deals_per_s_simulator']:>12,.0f}")
    print_(f"{'equity → decisions (per s)':34}{r['equity_per_s_offered']:>12,.0f}{r['equity_per_s_evaluated']:>12,.0f}"
           f"{f(r['equity_p50_ms']):>10}{f(r['equity_p99_ms']):>10}")
    print_(f"{'breach → orders refused':34}{r['breaches']:>12}{r['breaches_disabled']:>12}"
           f"{f(r['breach_p50_ms']):>10}{f(r['breach_p99_ms']):>10}  (max {f(r['breach_max_ms'])})")
    print_(f"connector: mean poll {f(r['poll_mean_ms'])}, mean commit {f(r['commit_mean_ms'])}; "
           f"worker passes {r['worker_passes']:,}, dispatcher passes {r['dispatch_passes']:,}; raw events {r['raw_events']}")
    print_("CPU seconds per second of the window: " + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_per_s"].items())
           + f"; load average {r['load'][0]} → {r['load'][1]}")


__all__ = ["bench_platforms", "cpu_seconds", "free_port", "seed_bench", "start_simulator", "stop_simulator"]
