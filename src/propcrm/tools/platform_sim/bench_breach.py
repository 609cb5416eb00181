"""``propcrm bench breach``: from a breach to the simulator refusing the account's orders, alone.

``bench platforms`` measures it under a trading load, where the time is mostly the wait for a core;
this one measures the path itself, as ``propcrm serve`` runs it: the simulator in this process (its
MT5 Web API on a port, no price feed), the ``mt5-web`` command connection, the evaluation worker
woken by committed events and the outbox dispatcher woken by committed outbox rows (the loops of
``serve``), on a fresh SQLite database. For each of ``--breaches`` accounts, one after another: an
equity event far below the max-loss floor is ingested and committed (as a connector's commit does);
measured is the breach decision's ``created_at`` → the simulator's wall clock when it disabled
trading on the account (``Account.disabled_at``; its orders are refused from then on), and the
commit of the event → the same moment.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

UTC = dt.timezone.utc
FIRM, CONNECTION, MANAGER, PASSWORD = "bench", "sim", "1000", "Bench#Manager1"


def bench_breach(*, breaches: int = 20, gap_s: float = 0.3, workdir: str | None = None, print_=print) -> dict[str, Any]:
    from ...adapters.db import models as m
    from ...adapters.db.session import make_engine, migrate, sessions
    from ...adapters.platforms.secrets import SecretBox, new_key
    from ...domain.rulepack import load_pack
    from ...features.platforms.commands import PlatformCommands
    from ...features.platforms.connections import add_connection, map_login
    from ...services.catalog import add_pack, create_account, ensure_firm
    from ...services.dispatch import build_dispatcher, dispatch_loop
    from ...services.evaluation import EvaluationWorker
    from ...services.ingest import ingest
    from ...services.wakeup import EVENTS, OUTBOX
    from .main import Simulator

    root = Path(workdir or tempfile.mkdtemp(prefix="propcrm-bench-breach-"))
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob("*.db*"):
        stale.unlink()
    url = f"sqlite:///{root / 'propcrm.db'}"
    migrate(url)
    sim = Simulator(str(root / "sim.db"), MANAGER, PASSWORD, zone="+02:00").start(feed=False)
    box = SecretBox(new_key().encode())
    engine = make_engine(url)
    db = sessions(engine)
    logins = []
    for i in range(breaches):
        account = sim.server.add_user(group="bench\\challenge", name=f"Bench {i + 1}", leverage=100)
        sim.server.balance_operation(account.login, 100_000_00, "pc init bench")
        logins.append(str(account.login))
    start = dt.datetime.now(UTC) - dt.timedelta(minutes=10)
    with db.begin() as s:
        ensure_firm(s, firm_id=FIRM, name="Bench Prop")
        version = add_pack(s, firm_id=FIRM, pack=load_pack("two-step-100k"), activate=True)
        add_connection(s, firm_id=FIRM, name=CONNECTION, family_name="mt5-web",
                       settings={"url": sim.url, "manager": MANAGER, "server_timezone": "+02:00",
                                 "groups_by_phase": {"*": "bench\\challenge"}},
                       secrets={"password": PASSWORD}, actor="bench", box=box)
        for i, login in enumerate(logins):
            create_account(s, firm_id=FIRM, external_id=f"B{i + 1}", pack_version_id=version.id, platform=CONNECTION)
            s.flush()
            map_login(s, firm_id=FIRM, connection=CONNECTION, login=login, account=f"B{i + 1}", actor="bench")

    def line(n: int, account: str, equity: str, at: dt.datetime) -> bytes:
        return json.dumps({"id": f"e{n}-{account}", "type": "equity", "account": account, "equity": equity,
                           "balance": "100000", "ts": at.isoformat().replace("+00:00", "Z")}).encode() + b"\n"

    with db.begin() as s:  # every account has a state first (a first evaluation), so only the breach is timed
        ingest(s, firm_id=FIRM, source=CONNECTION,
               body=b"".join(line(0, f"B{i + 1}", "100000", start) for i in range(breaches)))
    EvaluationWorker(db).run_until_idle()

    dispatcher = build_dispatcher(db, {})
    dispatcher.connectors.router = PlatformCommands(db, fallback=None, box=box)
    stop = threading.Event()
    worker = EvaluationWorker(db)

    def worker_loop() -> None:  # as `propcrm serve` runs it (cli/serve.py)
        while not stop.is_set():
            seen = EVENTS.generation
            report = worker.run_pass()
            if report.accounts == 0 and report.set_aside == 0 and report.stale == 0:
                EVENTS.wait(seen, 1.0)

    threads = [threading.Thread(target=worker_loop, name="worker", daemon=True),
               threading.Thread(target=dispatch_loop, args=(dispatcher, stop), kwargs={"fallback": 0.5},
                                name="dispatch", daemon=True)]
    for thread in threads:
        thread.start()
    committed_at: dict[str, float] = {}
    try:
        time.sleep(1.0)
        for i, login in enumerate(logins):
            with db.begin() as s:
                ingest(s, firm_id=FIRM, source=CONNECTION, body=line(1, f"B{i + 1}", "80000", dt.datetime.now(UTC)))
            committed_at[login] = time.time()
            deadline = time.time() + 30
            while sim.server.accounts[int(login)].disabled_at is None and time.time() < deadline:
                time.sleep(0.002)
            time.sleep(gap_s)
    finally:
        stop.set()
        EVENTS.notify()
        OUTBOX.notify()
        for thread in threads:
            thread.join(timeout=10)
        dispatcher.close()
    with db() as s:
        created = {login: at.timestamp() for login, at in s.execute(
            select(m.Account.login, m.Decision.created_at).join(m.Account, m.Account.id == m.Decision.account_id)
            .where(m.Decision.firm_id == FIRM, m.Decision.kind == "breach"))}
    disabled = {login: sim.server.accounts[int(login)].disabled_at for login in logins}
    sim.close()
    engine.dispose()
    from_decision = sorted(disabled[l] - created[l] for l in logins if disabled[l] and l in created)
    from_commit = sorted(disabled[l] - committed_at[l] for l in logins if disabled[l] and l in committed_at)

    def pct(values: list[float], p: float) -> float | None:
        return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 1) if values else None

    result = {"breaches": breaches, "refused": len(from_decision),
              "decision_p50_ms": pct(from_decision, 0.5), "decision_p99_ms": pct(from_decision, 0.99),
              "decision_max_ms": round(max(from_decision) * 1000, 1) if from_decision else None,
              "commit_p50_ms": pct(from_commit, 0.5), "commit_p99_ms": pct(from_commit, 0.99),
              "commit_max_ms": round(max(from_commit) * 1000, 1) if from_commit else None}
    print_(f"bench breach: {result['refused']} of {breaches} breached accounts refused by the simulator")
    print_(f"  breach decision → orders refused: p50 {result['decision_p50_ms']} ms, p99 {result['decision_p99_ms']} ms,"
           f" max {result['decision_max_ms']} ms")
    print_(f"  event committed → orders refused: p50 {result['commit_p50_ms']} ms, p99 {result['commit_p99_ms']} ms,"
           f" max {result['commit_max_ms']} ms")
    return result


__all__ = ["bench_breach"]
