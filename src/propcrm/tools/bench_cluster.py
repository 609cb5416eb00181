"""``propcrm bench pipeline``: the scale-out pipeline on the real NATS JetStream and PostgreSQL.

For each worker count W (default 1 and 2), on a fresh PostgreSQL schema and a fresh stream:

1. **end to end** — W ``propcrm worker`` processes own the partitions; the benchmark, acting as the
   ingest node (the same code path as ``POST /api/v1/events`` in bus mode: decode and validate every
   line, resolve the accounts, quarantine, split by partition, publish with de-duplication ids),
   sends the synthetic firm's events in requests of ``--request-size`` and measures until every
   partition's checkpoint has passed the last message: events/s from ingest to committed decisions.
2. **raw JetStream** — the very same batch messages published to a scratch stream and consumed back
   (a pull consumer per partition, no evaluation): what the bus itself moves on this machine.
3. **latency** — (with the largest W) a steady ``--rate`` events/s in requests every 10 ms; each
   message's latency is from its publish to the worker's commit notice for its partition (one clock,
   the benchmark's); p50/p99 per event.
4. **recovery** — one worker is SIGKILLed and a firm-wide ``clock`` event (it goes to every partition)
   is published at once; the time until every partition has committed it is the time to recover the
   killed worker's partitions (lease TTL + rebalance + takeover + replay).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, select, text

from ..adapters.bus.jetstream import BusConfig, EventPublisher, connect, delete_stream
from ..adapters.bus.partitions import split_into_messages
from ..adapters.db.models_cluster import PartitionCheckpoint
from ..adapters.db.session import make_engine, sessions
from .bench_service import PG_URL, seed
from ..domain.events import DECODER
from ..services.ingest import prepare_for_bus
from ..synth.firm import FirmSpec, generate

FIRM = "bench"


class _Deployment:
    """A fresh schema, a fresh stream and W worker processes."""

    def __init__(self, base_url: str, nats_url: str, partitions: int, specs: list[FirmSpec], logs: Path) -> None:
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"
        self.admin = create_engine(base_url)
        with self.admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        sep = "&" if "?" in base_url else "?"
        self.url = f"{base_url}{sep}options=-csearch_path%3D{self.schema}"
        seed(self.url, specs)
        self.bus = BusConfig(url=nats_url, stream=f"BENCH_{uuid.uuid4().hex[:8].upper()}", partitions=partitions,
                             lease_ttl_s=3.0)
        self.db = make_engine(self.url)
        self.sessions = sessions(self.db)
        self.logs = logs
        self.workers: list[subprocess.Popen] = []

    def start_worker(self) -> subprocess.Popen:
        env = {**os.environ, **self.bus.as_env(), "PROPCRM_DATABASE_URL": self.url}
        index = len(self.workers)
        with open(self.logs / f"{self.bus.stream}-worker{index}.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "propcrm.cli", "worker"], env=env, stdout=out, stderr=out)
        self.workers.append(proc)
        return proc

    def committed(self) -> dict[int, int]:
        with self.sessions() as s:
            return dict(s.execute(select(PartitionCheckpoint.partition, PartitionCheckpoint.seq)
                                  .where(PartitionCheckpoint.stream == self.bus.stream)).all())

    def owners(self) -> int:
        with self.sessions() as s:
            return len(s.execute(select(PartitionCheckpoint.partition)
                                 .where(PartitionCheckpoint.stream == self.bus.stream)).all())

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

        async def clean() -> None:
            nc, js = await connect(self.bus)
            await delete_stream(js, self.bus)
            await nc.close()

        try:
            asyncio.run(clean())
        except Exception:  # noqa: BLE001
            pass
        self.db.dispose()
        with self.admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.admin.dispose()


def _settled(deployment: _Deployment, workers: int, timeout: float = 60) -> None:
    """Every partition leased, by as many distinct workers as were started (the rebalance is over)."""
    from ..adapters.bus.jetstream import Leases

    async def owners() -> dict[int, str]:
        nc, js = await connect(deployment.bus)
        try:
            return await (await Leases.open(js, deployment.bus)).owners()
        finally:
            await nc.close()

    began = time.perf_counter()
    while True:
        current = asyncio.run(owners())
        if len(current) == deployment.bus.partitions and len(set(current.values())) == workers \
                and deployment.owners() == deployment.bus.partitions:
            time.sleep(1.0)
            return
        if time.perf_counter() - began > timeout:
            raise RuntimeError(f"the workers did not settle: {current}")
        time.sleep(0.25)


def _wait(predicate, timeout: float, what: str, poll: float = 0.02) -> float:
    began = time.perf_counter()
    while not predicate():
        if time.perf_counter() - began > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(poll)
    return time.perf_counter()


def _done(deployment: _Deployment, targets: dict[int, int]):
    def check() -> bool:
        committed = deployment.committed()
        return all(committed.get(p, 0) >= seq for p, seq in targets.items())
    return check


async def _ingest(deployment: _Deployment, requests: list[bytes]) -> tuple[float, dict[int, int]]:
    """The ingest node's work for every request; returns (seconds, last seq per partition)."""
    nc, js = await connect(deployment.bus)
    publisher = EventPublisher(js, deployment.bus)
    targets: dict[int, int] = {}
    began = time.perf_counter()
    try:
        for body in requests:
            with deployment.sessions.begin() as session:
                prepared = prepare_for_bus(session, firm_id=FIRM, source="bench", body=body)
            published = await publisher.publish(prepared.firm_id, prepared.source,
                                                [(account, raw) for _, account, raw, _ in prepared.lines])
            for p in published:
                targets[p.message.partition] = max(targets.get(p.message.partition, 0), p.seq)
    finally:
        await nc.close()
    return time.perf_counter() - began, targets


def _end_to_end(base_url: str, nats_url: str, partitions: int, spec: FirmSpec, requests: list[bytes], events: int,
                workers: int, logs: Path, console: Console) -> dict:
    deployment = _Deployment(base_url, nats_url, partitions, [spec], logs)
    try:
        for _ in range(workers):
            deployment.start_worker()
        _settled(deployment, workers)
        began = time.perf_counter()
        ingest_seconds, targets = asyncio.run(_ingest(deployment, requests))
        finished = _wait(_done(deployment, targets), 900, "the workers to commit everything", 0.02)
        seconds = finished - began
        console.print(f"  {workers} worker(s): {events:,} events in {seconds:.2f}s end to end "
                      f"(ingest node done after {ingest_seconds:.2f}s)")
        return {"workers": workers, "events": events, "seconds": seconds, "rate": events / seconds,
                "ingest_rate": events / ingest_seconds}
    finally:
        deployment.close()


async def _publish_all(bus: BusConfig, messages: list) -> dict[int, int]:
    nc, js = await connect(bus)
    publisher = EventPublisher(js, bus)
    targets: dict[int, int] = {}
    try:
        for start in range(0, len(messages), 256):
            for p in await publisher.publish_messages(FIRM, "bench", messages[start : start + 256]):
                targets[p.message.partition] = max(targets.get(p.message.partition, 0), p.seq)
    finally:
        await nc.close()
    return targets


def _drain(base_url: str, nats_url: str, partitions: int, spec: FirmSpec, messages: list, events: int, workers: int,
           logs: Path, console: Console) -> dict:
    """The workers alone: the batches go on the stream at the bus's speed (checked beforehand), and the
    clock runs until every partition has committed them — what W workers can evaluate and commit."""
    deployment = _Deployment(base_url, nats_url, partitions, [spec], logs)
    try:
        for _ in range(workers):
            deployment.start_worker()
        _settled(deployment, workers)
        began = time.perf_counter()
        targets = asyncio.run(_publish_all(deployment.bus, messages))
        finished = _wait(_done(deployment, targets), 900, "the workers to commit everything", 0.02)
        seconds = finished - began
        console.print(f"  {workers} worker(s), backlog drain: {events:,} events committed in {seconds:.2f}s")
        return {"workers": workers, "seconds": seconds, "rate": events / seconds}
    finally:
        deployment.close()


async def _raw_jetstream(nats_url: str, partitions: int, requests: list[bytes], accounts_of: list[list]) -> dict:
    """Publish the same batch messages to a scratch stream and consume them back."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    config = BusConfig(url=nats_url, stream=f"RAW_{uuid.uuid4().hex[:8].upper()}", partitions=partitions)
    messages = []
    for lines in accounts_of:
        messages.extend(split_into_messages(FIRM, "bench", lines, partitions))
    events = sum(m.count for m in messages)
    nc, js = await connect(config)
    publisher = EventPublisher(js, config)
    try:
        began = time.perf_counter()
        step = 256
        for start in range(0, len(messages), step):  # bounded in flight, like a busy ingest node
            await publisher.publish_messages(FIRM, "bench", messages[start : start + step])
        published = time.perf_counter() - began
        per_partition: dict[int, int] = {}
        for m in messages:
            per_partition[m.partition] = per_partition.get(m.partition, 0) + 1
        began = time.perf_counter()
        consumed = 0

        async def drain(p: int) -> int:
            sub = await js.pull_subscribe(config.subject(p), stream=config.stream, config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=10.0))
            got = count = 0
            while count < per_partition[p]:
                for msg in await sub.fetch(256, timeout=5):
                    count += 1
                    got += int(msg.headers.get("Propcrm-Count", "1"))
            await sub.unsubscribe()
            return got

        for got in await asyncio.gather(*(drain(p) for p in per_partition)):
            consumed += got
        consume_seconds = time.perf_counter() - began
        assert consumed == events, (consumed, events)
    finally:
        await delete_stream(js, config)
        await nc.close()
    return {"events": events, "messages": len(messages), "publish_rate": events / published,
            "consume_rate": events / consume_seconds, "events_per_message": events / len(messages)}


async def _steady(deployment: _Deployment, lines: list[bytes], rate: int, seconds: float, tick_s: float) -> dict:
    """Send ``rate`` events/s in a request every ``tick_s``; per message, the latency from its publish to
    the worker's commit notice for its partition (acknowledgements are awaited off the sending path)."""
    import bisect

    from ..adapters.bus.partitions import HEADER_COUNT, HEADER_FIRM, HEADER_MSG_ID, HEADER_PUBLISHED, HEADER_SOURCE

    nc, js = await connect(deployment.bus)
    waiting: dict[int, list[tuple[int, float, int]]] = {}  # partition -> sorted [(seq, publish time, events)]
    committed: dict[int, int] = {}
    latencies: list[tuple[float, int]] = []

    async def on_commit(msg) -> None:
        now = time.perf_counter()
        notice = json.loads(msg.data)
        for p_text, seq in notice["committed"].items():
            p = int(p_text)
            committed[p] = max(committed.get(p, 0), seq)
            pending = waiting.get(p)
            while pending and pending[0][0] <= seq:
                _, sent, count = pending.pop(0)
                latencies.append((now - sent, count))

    async def register(partition: int, future, sent: float, count: int) -> None:
        ack = await future
        if ack.seq <= committed.get(partition, 0):  # committed before the ack got here
            latencies.append((time.perf_counter() - sent, count))
        else:
            bisect.insort(waiting.setdefault(partition, []), (ack.seq, sent, count))

    # The ingest node's checks (decode, accounts, quarantine) are done for every request first, off the
    # clock: the latency measured is the pipeline's, from the publish of a message to its commit.
    per_tick = max(1, round(rate * tick_s))
    ticks = []
    for cursor in range(0, min(len(lines), int(rate * seconds) + per_tick), per_tick):
        with deployment.sessions.begin() as session:
            prepared = prepare_for_bus(session, firm_id=FIRM, source="bench",
                                       body=b"\n".join(lines[cursor : cursor + per_tick]))
        ticks.append(split_into_messages(FIRM, "bench", [(account, raw) for _, account, raw, _ in prepared.lines],
                                         deployment.bus.partitions))
    sub = await nc.subscribe(deployment.bus.commits_subject, cb=on_commit)
    sent_events = 0
    acks: list[asyncio.Task] = []
    began = time.perf_counter()
    tick = 0
    try:
        for messages in ticks:
            sent = time.perf_counter()
            stamp = str(time.time_ns())
            for message in messages:
                future = await js.publish_async(deployment.bus.subject(message.partition), message.body, headers={
                    HEADER_MSG_ID: message.msg_id, HEADER_FIRM: FIRM, HEADER_SOURCE: "bench",
                    HEADER_COUNT: str(message.count), HEADER_PUBLISHED: stamp})
                acks.append(asyncio.ensure_future(register(message.partition, future, sent, message.count)))
                sent_events += message.count
            tick += 1
            delay = began + tick * tick_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
        achieved = sent_events / (time.perf_counter() - began)
        await asyncio.gather(*acks)
        deadline = time.perf_counter() + 60
        while any(waiting.values()) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await sub.unsubscribe()
        await nc.close()
    weighted = sorted(latencies)
    total = sum(n for _, n in weighted)

    def pct(q: float) -> float:
        target, run = q * total, 0
        for value, n in weighted:
            run += n
            if run >= target:
                return value * 1000
        return float("nan")

    return {"rate": achieved, "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0),
            "messages": len(latencies), "unfinished": sum(len(v) for v in waiting.values()), "tick_ms": tick_s * 1000}


async def _publish_clock(deployment: _Deployment, ts: str) -> dict[int, int]:
    nc, js = await connect(deployment.bus)
    try:
        line = b'{"id":"bench-failover-%s","type":"clock","ts":"%s"}' % (uuid.uuid4().hex[:8].encode(), ts.encode())
        published = await EventPublisher(js, deployment.bus).publish(FIRM, "bench", [(None, line)])
        return {p.message.partition: p.seq for p in published}
    finally:
        await nc.close()


def _latency_and_recovery(base_url: str, nats_url: str, partitions: int, spec: FirmSpec, workers: int,
                          rate: int, seconds: float, tick_s: float, logs: Path, console: Console) -> tuple[dict, dict]:
    deployment = _Deployment(base_url, nats_url, partitions, [spec], logs)
    try:
        for _ in range(workers):
            deployment.start_worker()
        _settled(deployment, workers)
        lines = [x.rstrip(b"\n") for x in generate(spec)]
        latency = asyncio.run(_steady(deployment, lines, rate, seconds, tick_s))
        console.print(f"  steady load: {latency['rate']:,.0f} events/s reached (a request every "
                      f"{tick_s * 1000:.0f} ms), p50 {latency['p50_ms']:.1f} ms, p90 {latency['p90_ms']:.1f} ms, "
                      f"p99 {latency['p99_ms']:.1f} ms, "
                      f"max {latency['max_ms']:.1f} ms ({latency['messages']:,} messages)")
        # recovery: kill one worker, publish a clock to every partition, time until all committed it
        last_ts = DECODER.decode(lines[-1]).ts.isoformat().replace("+00:00", "Z")
        if workers == 1:  # someone must be there to take over
            deployment.start_worker()
            time.sleep(2 * deployment.bus.lease_ttl_s + 1)
        victim = deployment.workers[0]
        killed = time.perf_counter()
        os.kill(victim.pid, signal.SIGKILL)
        targets = asyncio.run(_publish_clock(deployment, last_ts))
        recovered = _wait(_done(deployment, targets), 60, "the killed worker's partitions to recover", 0.02)
        recovery = {"seconds": recovered - killed, "workers_before": workers, "lease_ttl": deployment.bus.lease_ttl_s}
        console.print(f"  recovery: every partition committed again {recovery['seconds']:.2f}s after the SIGKILL")
        return latency, recovery
    finally:
        deployment.close()


def bench_pipeline(*, events: int, accounts: int, workers: list[int], rate: int, seconds: float, partitions: int,
                   request_size: int, nats_url: str, database_url: str | None, tick_ms: float = 10.0,
                   skip_throughput: bool = False) -> dict:
    console = Console(highlight=False)
    base_url = database_url or PG_URL
    logs = Path(tempfile.mkdtemp(prefix="propcrm-bench-pipeline-"))
    days = max(1, min(30, round(events / max(accounts, 1) / 60)))
    spec = FirmSpec(accounts=accounts, days=days, seed=5, equity_every_s=300, account_prefix="T")
    lines = [x.rstrip(b"\n") for x in generate(spec)][:events]
    requests = [b"\n".join(lines[i : i + request_size]) for i in range(0, len(lines), request_size)]
    console.print(f"propcrm bench pipeline: {len(lines):,} events of {accounts:,} accounts in {len(requests)} requests "
                  f"of {request_size:,}; P={partitions}; logs in {logs}")

    accounts_of = []
    for i in range(0, len(lines), request_size):
        chunk = lines[i : i + request_size]
        accounts_of.append([(getattr(DECODER.decode(x), "account", None), x) for x in chunk])
    raw = asyncio.run(_raw_jetstream(nats_url, partitions, requests, accounts_of))
    console.print(f"  raw JetStream: publish {raw['publish_rate']:,.0f} ev/s, consume {raw['consume_rate']:,.0f} ev/s "
                  f"({raw['messages']:,} messages, {raw['events_per_message']:.0f} events each)")
    runs = [] if skip_throughput else [
        _end_to_end(base_url, nats_url, partitions, spec, requests, len(lines), w, logs, console) for w in workers]
    messages = []
    for chunk in accounts_of:
        messages.extend(split_into_messages(FIRM, "bench", chunk, partitions))
    drains = [] if skip_throughput else [
        _drain(base_url, nats_url, partitions, spec, messages, len(lines), w, logs, console) for w in workers]
    steady_days = max(2, round((rate * seconds * 1.2) / max(accounts, 1) / 60))
    steady_spec = FirmSpec(accounts=accounts, days=min(30, steady_days), seed=6, equity_every_s=300,
                           account_prefix="T")
    latency, recovery = _latency_and_recovery(base_url, nats_url, partitions, steady_spec, max(workers), rate,
                                              seconds, tick_ms / 1000, logs, console)

    table = Table(title="propcrm bench pipeline — ingest → JetStream → workers → PostgreSQL (one 2-core machine)")
    for column in ("measure", "figure"):
        table.add_column(column, justify="right" if column == "figure" else "left")
    table.add_row("raw JetStream publish (same batches)", f"{raw['publish_rate']:,.0f} ev/s")
    table.add_row("raw JetStream consume (same batches)", f"{raw['consume_rate']:,.0f} ev/s")
    for r in runs:
        table.add_row(f"end to end (1 ingest process → decisions), {r['workers']} worker(s)", f"{r['rate']:,.0f} ev/s")
        table.add_row(f"  of which the ingest node's own rate", f"{r['ingest_rate']:,.0f} ev/s")
    for r in drains:
        table.add_row(f"workers alone (backlog on the stream → decisions), {r['workers']} worker(s)",
                      f"{r['rate']:,.0f} ev/s")
    table.add_row(f"steady load (target {rate:,} ev/s, a request every {tick_ms:.0f} ms), {max(workers)} workers",
                  f"{latency['rate']:,.0f} ev/s")
    table.add_row("  event-to-decision p50", f"{latency['p50_ms']:,.1f} ms")
    table.add_row("  event-to-decision p90", f"{latency['p90_ms']:,.1f} ms")
    table.add_row("  event-to-decision p99", f"{latency['p99_ms']:,.1f} ms")
    table.add_row("recovery after SIGKILL of a worker", f"{recovery['seconds']:.2f} s (lease TTL {recovery['lease_ttl']:.0f} s)")
    console.print(table)
    return {"raw": raw, "runs": runs, "drains": drains, "latency": latency, "recovery": recovery}


__all__ = ["bench_pipeline"]
