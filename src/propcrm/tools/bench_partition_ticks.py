"""``propcrm bench partition-ticks``: a synthetic firm with prices through a partition store (the
scale-out worker's engine/commit path, no NATS), vector screen on vs off; process CPU per run.

The firm (``accounts`` traders, ``days`` days, a price per symbol per open-market minute) is split into
stream messages as ingestion publishes them (requests of ``request`` lines over ``partitions``
partitions) and applied in batches of ``batch`` messages to a fresh SQLite database per run, each run
twice (``PartitionStore(vector=…)``); both must store the same decisions. Reported: events, ticks,
process CPU (median of ``repeat`` runs), events/s of CPU, and the holders the screen spared from a
Decimal re-valuation.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import tempfile
import time

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from ..adapters.bus.partitions import split_into_messages
from ..adapters.db import models as m
from ..adapters.db.session import make_engine, migrate, sessions
from ..cluster.partition import PartitionStore, StreamMessage
from ..domain.events import DECODER, Price
from ..domain.market import parse_symbol_table
from ..domain.rulepack import load_pack
from ..services.catalog import add_pack, create_account, ensure_firm
from ..services.symbols import set_table
from ..synth.firm import FirmSpec, generate, traders

SYMBOLS = [
    {"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "100000"},
    {"symbol": "GBPUSD", "profit_currency": "USD", "contract_size": "100000"},
    {"symbol": "USDJPY", "profit_currency": "JPY", "contract_size": "100000"},
    {"symbol": "XAUUSD", "profit_currency": "USD", "contract_size": "100"},
    {"symbol": "US30", "profit_currency": "USD", "contract_size": "1"},
]


def _run(lines: list[bytes], spec: FirmSpec, *, vector: bool, partitions: int, request: int,
         batch: int) -> tuple[float, list[bytes], int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{os.path.join(tmp, 'bench.db')}"
        migrate(url)
        db = make_engine(url)
        Session = sessions(db)
        with Session.begin() as s:
            ensure_firm(s, firm_id="bench")
            version = add_pack(s, firm_id="bench", pack=load_pack("two-step-100k"), activate=True)
            for trader in traders(spec):
                create_account(s, firm_id="bench", external_id=trader.account, pack_version_id=version.id,
                               platform="bench")
            set_table(s, firm_id="bench", table=parse_symbol_table(SYMBOLS), actor="bench")
        stream: dict[int, list[StreamMessage]] = {p: [] for p in range(partitions)}
        seq = 0
        for start in range(0, len(lines), request):
            chunk = [(getattr(DECODER.decode(x), "account", None), x) for x in lines[start : start + request]]
            for message in split_into_messages("bench", "bench", chunk, partitions):
                seq += 1
                stream[message.partition].append(StreamMessage(message.partition, seq, {
                    "Propcrm-Firm": "bench", "Propcrm-Source": "bench", "Propcrm-Count": str(message.count)},
                    message.body))
        store = PartitionStore(Session, "S", partitions, "bench", snapshot_interval_s=1.0, vector=vector)
        runs = {p: store.take(p) for p in range(partitions)}
        cpu = time.process_time()
        for p in range(partitions):
            messages = stream[p]
            for i in range(0, len(messages), batch):
                result = store.apply([(runs[p], messages[i : i + batch])])
                if result.failed:
                    raise RuntimeError(result.error)
            store.apply([(runs[p], [])], snapshot=True)
        cpu = time.process_time() - cpu
        marked = sum(e.stats.marked for r in runs.values() for e in r.engines.values())
        exact = sum(e.stats.exact_marked for r in runs.values() for e in r.engines.values())
        with Session() as s:
            decisions = sorted(bytes(b) for b in s.scalars(select(m.Decision.body)))
        db.dispose()
    return cpu, decisions, marked, exact


def bench_partition_ticks(*, accounts: int, days: int, partitions: int, request: int, batch: int,
                          repeat: int) -> None:
    console = Console()
    spec = FirmSpec(accounts=accounts, days=days, start=dt.date(2026, 3, 4), seed=5, prices=True)
    lines = [x.rstrip(b"\n") for x in generate(spec)]
    ticks = sum(1 for x in lines if type(DECODER.decode(x)) is Price)
    table = Table(title=f"partition store, {len(lines):,} events ({ticks:,} ticks), {accounts} accounts, "
                        f"P={partitions}, load {os.getloadavg()[0]:.1f}")
    for column in ("path", "CPU s (median)", "events/s CPU", "holders re-valued", "in Decimal"):
        table.add_column(column, justify="right")
    outputs = {}
    for vector in (False, True):
        cpus = []
        for _ in range(repeat):
            cpu, decisions, marked, exact = _run(lines, spec, vector=vector, partitions=partitions,
                                                 request=request, batch=batch)
            cpus.append(cpu)
        outputs[vector] = decisions
        median = statistics.median(cpus)
        table.add_row("vector" if vector else "exact", f"{median:.2f}", f"{len(lines) / median:,.0f}",
                      f"{marked:,}", f"{exact:,}")
    console.print(table)
    same = outputs[False] == outputs[True]
    console.print(f"decisions: {len(outputs[True]):,}, identical both ways: {same}")
    if not same:
        raise SystemExit(1)
