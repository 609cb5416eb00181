"""``propcrm bench rebind``: how long the re-bind's what-if and the move take (SQLite, embedded worker).

A firm of ``accounts`` accounts on ``bench-rebind`` v1 (phase 1's daily loss 4% of 100,000) with ``events``
equity reports each, evaluated by the worker; half of them drift down far enough to be breached under v1
and not under v2 (5%). Times the preview of moving them all to v2, then the move itself.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import msgspec

from ..adapters.db.session import make_engine, migrate, sessions
from ..domain.rulepack import load_pack
from ..services import rebind
from ..services.catalog import add_pack, create_account, ensure_firm
from ..services.evaluation import EvaluationWorker
from ..services.ingest import ingest
from ..services.rulepacks import read_pack


def _pack(version: int, daily_pct: int):
    data = msgspec.to_builtins(load_pack("two-step-100k"))
    data["id"], data["version"] = "bench-rebind", version
    data["phases"][0]["rules"][0] = {**data["phases"][0]["rules"][0], "amount": {"pct_initial": daily_pct}}
    return read_pack(msgspec.json.encode(data))


def bench_rebind(*, accounts: int = 100, events: int = 500) -> None:
    url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench-rebind.db'}"
    migrate(url)
    engine = make_engine(url)
    factory = sessions(engine)
    with factory.begin() as s:
        ensure_firm(s, firm_id="bench")
        v1 = add_pack(s, firm_id="bench", pack=_pack(1, 4), activate=True).id
        v2 = add_pack(s, firm_id="bench", pack=_pack(2, 5)).id
        for i in range(accounts):
            create_account(s, firm_id="bench", external_id=f"A{i}", pack_version_id=v1)
    start = dt.datetime(2026, 3, 2, 8, tzinfo=dt.timezone.utc)
    lines = []
    for i in range(accounts):
        step = 10 if i % 2 else 2  # odd accounts fall 4.5% over 450 reports: breached under v1 only
        lines += [json.dumps({"id": f"e{i}-{k}", "type": "equity", "account": f"A{i}",
                              "ts": (start + dt.timedelta(seconds=30 * k)).isoformat(),
                              "equity": str(100000 - min(k, 450) * step), "balance": "100000"})
                  for k in range(events)]
    with factory.begin() as s:
        ingest(s, firm_id="bench", source="mt5", body=("\n".join(lines) + "\n").encode())
    EvaluationWorker(factory).run_until_idle()
    selection = rebind.Selection(from_version_id=v1)
    with factory() as s:
        began = time.perf_counter()
        plan = rebind.preview(s, firm_id="bench", version_id=v2, selection=selection)
        preview_s = time.perf_counter() - began
    replayed = sum(mv.events for mv in plan.moves)
    changed = sum(mv.changed for mv in plan.moves)
    with factory.begin() as s:
        began = time.perf_counter()
        rebind.apply(s, firm_id="bench", version_id=v2, selection=selection, reason="bench", actor="bench")
        apply_s = time.perf_counter() - began
    engine.dispose()
    print(f"re-bind what-if: {len(plan.moves):,} accounts, {replayed:,} events replayed, {changed:,} changed: "
          f"{preview_s:.2f} s ({replayed / preview_s:,.0f} events/s)")
    print(f"re-bind move (replay again, lock, write states, decisions, outbox, audit): {apply_s:.2f} s")
