"""``propcrm worker``: an engine worker that owns partitions of the event stream through leases.

One asyncio loop does the bus work — heartbeats, leases, rebalancing, fetching — and one thread does
the evaluation and the database work (:mod:`propcrm.cluster.partition`), so heartbeats keep going
while a batch is being committed.

* **Membership and leases** (:class:`propcrm.adapters.bus.jetstream.Leases`): every
  ``heartbeat_s`` the worker refreshes its member key and each of its partition leases
  (compare-and-set on the revision it last wrote). Keys expire after the bucket's TTL.
* **Rebalancing**: each worker computes the same assignment from the live members (rendezvous
  hashing with a cap of ⌈P / members⌉ per worker, so joining or leaving moves few partitions). A
  worker gives up the partitions no longer assigned to it (after its in-flight batch) and tries to
  take those that are (``create`` succeeds only once the previous holder released or expired).
* **Consuming**: per owned partition an ordered push consumer (flow control, no acks: the position
  is the checkpoint in the database) from the snapshot's position + 1; nats-py re-creates it from the
  last delivered sequence on any gap. ``PROPCRM_CONSUMER=pull`` uses pull consumers instead, which
  check the consumer sequence themselves and restart the partition from its checkpoint on a gap.
  Push needs no request round trip per fetch, which matters under CPU contention (see docs/cluster.md).
* **Applying**: the processing thread takes what has been fetched, up to ``max_batch_events``, from
  all partitions, and commits it in one transaction fenced per partition. A failed or fenced batch
  is rolled back and its partitions are reloaded from their checkpoints.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import math
import os
import signal
import socket
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..adapters.bus.jetstream import BusConfig, Leases, connect
from ..adapters.db.session import make_engine, migrate, sessions
from .metrics import WorkerMetrics, serve_http
from .partition import BatchResult, PartitionRun, PartitionStore, StreamMessage

log = logging.getLogger("propcrm.worker")


def assign(members: list[str], partitions: int) -> dict[str, set[int]]:
    """The same answer on every worker for the same members: partition → worker, balanced."""
    members = sorted(set(members))
    out: dict[str, set[int]] = {m: set() for m in members}
    if not members:
        return out
    cap = math.ceil(partitions / len(members))
    for p in range(partitions):
        ranked = sorted(members, key=lambda m: hashlib.blake2b(f"{m}/{p}".encode(), digest_size=8).digest(),
                        reverse=True)
        for member in ranked:
            if len(out[member]) < cap:
                out[member].add(p)
                break
    return out


@dataclass
class Owned:
    partition: int
    revision: int
    epoch: int
    run: PartitionRun | None = None
    sub: object | None = None
    fetcher: asyncio.Task | None = None
    queued: int = 0


class ClusterWorker:
    def __init__(self, *, bus: BusConfig, database_url: str, worker_id: str | None = None,
                 metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                 max_batch_events: int = 20_000, fetch_batch: int = 64, heartbeat_s: float | None = None,
                 snapshot_interval_s: float = 2.0, push: bool = True) -> None:
        self.bus = bus
        self.database_url = database_url
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.max_batch_events = max_batch_events
        self.fetch_batch = fetch_batch
        self.heartbeat_s = heartbeat_s or max(0.25, bus.lease_ttl_s / 4)
        self.snapshot_interval_s = snapshot_interval_s  # Settings.snapshot_interval (PROPCRM_SNAPSHOT_INTERVAL)
        self.push = push  # Settings.push_consumer (PROPCRM_CONSUMER=pull: pull consumers)
        self.metrics = WorkerMetrics()
        self.owned: dict[int, Owned] = {}
        self._epochs = 0
        self._applying: asyncio.Future | None = None
        self._queue: asyncio.Queue | None = None
        self._nc = None
        self._js = None
        self._leases: Leases | None = None
        self._store: PartitionStore | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="apply")
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self.started_at = time.time()

    # ------------------------------------------------------------------ lifecycle
    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        await loop.run_in_executor(self._executor, _migrate_with_retry, self.database_url)
        db = make_engine(self.database_url)
        self._store = PartitionStore(sessions(db), self.bus.stream, self.bus.partitions, self.worker_id,
                                     snapshot_interval_s=self.snapshot_interval_s)
        self._nc, self._js = await connect(self.bus, name=f"propcrm-worker {self.worker_id}")
        self._leases = await Leases.open(self._js, self.bus)
        self._queue = asyncio.Queue(maxsize=512)
        http = None
        if self.metrics_port is not None:
            http = serve_http(self.metrics_host, self.metrics_port, self.metrics.registry, self.health)
        log.info("worker %s: stream %s, %d partitions, lease TTL %.1fs, heartbeat %.2fs", self.worker_id,
                 self.bus.stream, self.bus.partitions, self.bus.lease_ttl_s, self.heartbeat_s)
        tasks = [asyncio.create_task(self._heartbeat_loop(stop), name="heartbeat"),
                 asyncio.create_task(self._apply_loop(), name="apply"),
                 asyncio.create_task(self._lag_loop(), name="lag")]
        try:
            await stop.wait()
        finally:
            self._stopping = True
            log.info("worker %s: stopping, giving back %d partitions", self.worker_id, len(self.owned))
            for p in list(self.owned):
                await self._stop_partition(p, release=True)
            stopping = [t for t in self._tasks if t.get_name().startswith(("release-", "drop-"))]
            if stopping:  # partitions being given up by the heartbeat: let them hand over too
                await asyncio.wait(stopping, timeout=10)
            for task in tasks + list(self._tasks):
                task.cancel()
            await asyncio.gather(*tasks, *self._tasks, return_exceptions=True)
            try:
                await self._nc.close()
            except Exception:  # noqa: BLE001
                pass
            if http is not None:
                http.shutdown()
            self._executor.shutdown(wait=True)
            db.dispose()

    def health(self) -> tuple[bool, dict]:
        connected = bool(self._nc is not None and self._nc.is_connected)
        return connected and not self._stopping, {
            "role": "worker", "worker": self.worker_id, "nats_connected": connected,
            "partitions": sorted(p for p, o in self.owned.items() if o.run is not None),
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ leases and rebalancing
    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        assert self._leases is not None
        info = {"host": socket.gethostname(), "pid": os.getpid(), "started": self.started_at}
        while not stop.is_set():
            began = time.monotonic()
            try:
                await self._leases.heartbeat(self.worker_id, info)
                for p, owned in list(self.owned.items()):
                    revision = await self._leases.renew(p, self.worker_id, owned.revision)
                    current = self.owned.get(p)
                    if current is not owned:
                        # reloaded meanwhile (a rolled-back batch): the fresh holder copied the lease
                        # revision renewed here, and must have the new one or its next renewal fails
                        if current is not None and revision is not None and current.revision == owned.revision:
                            current.revision = revision
                        continue
                    if revision is None:
                        log.warning("worker %s: lease of partition %d lost; giving it up", self.worker_id, p)
                        self._spawn(self._stop_partition(p, release=False), f"drop-{p}")
                    else:
                        owned.revision = revision
                members = await self._leases.members()
                if self.worker_id not in members:
                    members.append(self.worker_id)
                mine = assign(members, self.bus.partitions)[self.worker_id]
                # Stopping waits for the batch in flight and writes a final snapshot: not on this loop,
                # whose other leases would expire meanwhile. (_stop_partition takes p out of
                # self.owned before its first wait.)
                for p in sorted(set(self.owned) - mine):
                    self._spawn(self._stop_partition(p, release=True), f"release-{p}")
                for p in sorted(mine - set(self.owned)):
                    revision = await self._leases.acquire(p, self.worker_id)
                    if revision is not None:
                        self._epochs += 1
                        self.owned[p] = Owned(p, revision, self._epochs)
                        self._spawn(self._start_partition(self.owned[p]), f"take-{p}")
                self.metrics.owned.set(len(self.owned))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - NATS hiccup: try again next beat
                log.warning("worker %s: heartbeat failed: %s: %s", self.worker_id, type(exc).__name__, exc)
            await asyncio.sleep(max(0.0, self.heartbeat_s - (time.monotonic() - began)))

    async def _start_partition(self, owned: Owned) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            run = await loop.run_in_executor(self._executor, self._store.take, owned.partition, owned.epoch)
            if self.owned.get(owned.partition) is not owned:
                return
            owned.run = run
            if self.push:
                owned.sub = await self._js.subscribe(
                    self.bus.subject(owned.partition), stream=self.bus.stream, cb=self._on_message(owned),
                    ordered_consumer=True, idle_heartbeat=2.0,
                    config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                          opt_start_seq=run.applied + 1, inactive_threshold=30.0))
            else:
                owned.sub = await self._js.pull_subscribe(
                    self.bus.subject(owned.partition), stream=self.bus.stream,
                    config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                          opt_start_seq=run.applied + 1, ack_policy=AckPolicy.NONE,
                                          inactive_threshold=30.0, max_waiting=4))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - give the partition back; it is taken again later
            log.error("worker %s: could not take partition %d: %s: %s", self.worker_id, owned.partition,
                      type(exc).__name__, exc)
            if self.owned.get(owned.partition) is owned:
                await self._stop_partition(owned.partition, release=True)
            return
        if self.owned.get(owned.partition) is not owned:
            return
        seconds = time.perf_counter() - started
        self.metrics.takeovers.inc()
        self.metrics.takeover_seconds.observe(seconds)
        self.metrics.position.labels(str(owned.partition)).set(run.seq)
        log.info("worker %s: took partition %d at seq %d in %.0f ms", self.worker_id, owned.partition, run.seq,
                 seconds * 1000)
        if not self.push:
            owned.fetcher = asyncio.create_task(self._fetch_loop(owned), name=f"fetch-{owned.partition}")

    async def _stop_partition(self, p: int, *, release: bool) -> None:
        owned = self.owned.pop(p, None)
        if owned is None:
            return
        if owned.fetcher is not None:
            owned.fetcher.cancel()
        if owned.sub is not None:
            try:
                await owned.sub.unsubscribe()
            except Exception:  # noqa: BLE001
                pass
        if self._applying is not None:  # let a batch that holds this partition finish first
            try:
                await asyncio.shield(self._applying)
            except Exception:  # noqa: BLE001
                pass
        if release and owned.run is not None and not owned.run.stale:
            # hand over a fresh snapshot: the next owner replays nothing (a stale run, ahead of the
            # database after a rolled-back batch, is never snapshotted)
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(self._executor, functools.partial(
                    self._store.apply, [(owned.run, [])], snapshot=True))
                if result.failed:
                    log.warning("partition %d: final snapshot not written (%s)", p, result.error)
            except Exception as exc:  # noqa: BLE001 - the next owner replays from the last snapshot instead
                log.warning("partition %d: final snapshot failed: %s", p, exc)
        if release and self._leases is not None:
            await self._leases.release(p, owned.revision)
        try:
            self.metrics.lag.remove(str(p))
        except KeyError:
            pass
        log.info("worker %s: %s partition %d", self.worker_id, "released" if release else "dropped", p)

    async def _restart_partition(self, p: int) -> None:
        """The engines are ahead of the database (a batch rolled back) or a delivery was lost: reload."""
        owned = self.owned.get(p)
        if owned is None:
            return
        if owned.fetcher is not None:
            owned.fetcher.cancel()
        if owned.sub is not None:
            try:
                await owned.sub.unsubscribe()
            except Exception:  # noqa: BLE001
                pass
        self._epochs += 1
        fresh = Owned(p, owned.revision, self._epochs)
        self.owned[p] = fresh
        await self._start_partition(fresh)

    # ------------------------------------------------------------------ fetching and applying
    def _on_message(self, owned: Owned):
        """Push mode: an ordered consumer (flow control, no acks; the client re-creates it from the last
        delivered sequence on any gap). Waiting on the bounded queue holds back the flow-control reply,
        so the server stops sending while the worker is behind."""

        async def deliver(msg) -> None:
            if self.owned.get(owned.partition) is not owned:
                return
            meta = msg.metadata
            owned.queued += 1
            await self._queue.put((owned.partition, owned.epoch, [
                StreamMessage(owned.partition, meta.sequence.stream, dict(msg.headers or {}), msg.data)]))

        return deliver

    async def _fetch_loop(self, owned: Owned) -> None:
        expected = 1
        busy = False
        while True:
            try:
                # nats-py's fetch(n) waits, once a first message came, for n of them or the timeout:
                # idle, wait for one (it returns at once); busy, take what is there within 5 ms.
                if busy:
                    messages = await owned.sub.fetch(self.fetch_batch, timeout=0.005)
                else:
                    messages = await owned.sub.fetch(1, timeout=1.0)
            except asyncio.TimeoutError:
                busy = False
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - connection trouble: wait and go on
                log.debug("partition %d: fetch failed: %s", owned.partition, exc)
                await asyncio.sleep(0.5)
                continue
            busy = True
            batch = []
            for msg in messages:
                meta = msg.metadata
                if meta.sequence.consumer != expected:
                    log.warning("partition %d: delivery gap (consumer seq %d, expected %d); restarting from the "
                                "checkpoint", owned.partition, meta.sequence.consumer, expected)
                    self._spawn(self._restart_partition(owned.partition), f"restart-{owned.partition}")
                    return
                expected += 1
                batch.append(StreamMessage(owned.partition, meta.sequence.stream, dict(msg.headers or {}), msg.data))
            if batch:
                owned.queued += len(batch)
                await self._queue.put((owned.partition, owned.epoch, batch))

    async def _apply_loop(self) -> None:
        while True:
            try:
                first = await asyncio.wait_for(self._queue.get(), timeout=self.snapshot_interval_s)
            except asyncio.TimeoutError:
                await self._snapshot_idle()
                continue
            items = [first]
            events = _events_in(items[0][2])
            while events < self.max_batch_events and not self._queue.empty():
                item = self._queue.get_nowait()
                items.append(item)
                events += _events_in(item[2])
            groups: dict[int, list[StreamMessage]] = {}
            for p, epoch, messages in items:
                owned = self.owned.get(p)
                if owned is None or owned.epoch != epoch or owned.run is None:
                    continue  # from a partition since given up or reloaded
                owned.queued -= len(messages)
                groups.setdefault(p, []).extend(messages)
            if not groups:
                continue
            batch = [(self.owned[p].run, messages) for p, messages in groups.items()]
            await self._apply(batch)

    async def _snapshot_idle(self) -> None:
        """A partition that has gone quiet still gets its snapshot: the stored states (what payouts,
        lists and the account page read) catch up with the committed position within about two
        snapshot intervals, instead of waiting for the partition's next message."""
        now = time.monotonic()
        runs = [owned.run for owned in self.owned.values() if owned.run is not None and not owned.run.stale
                and owned.run.dirty and now - owned.run.last_snapshot >= self.snapshot_interval_s]
        if runs:
            await self._apply([(run, []) for run in runs], snapshot=True)

    async def _apply(self, batch: list, *, snapshot: bool = False) -> None:
        loop = asyncio.get_running_loop()
        groups = {run.partition for run, _ in batch}
        self._applying = loop.run_in_executor(self._executor, functools.partial(
            self._store.apply, batch, snapshot=snapshot))
        try:
            result: BatchResult = await asyncio.shield(self._applying)
        except Exception as exc:  # noqa: BLE001 - a dead loop would keep the leases and commit nothing
            log.exception("worker %s: applying a batch raised", self.worker_id)
            for run, _ in batch:
                run.stale = True
            result = BatchResult(failed=set(groups), error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        finally:
            self._applying = None
        self._observe(result)
        if result.failed:
            log.warning("worker %s: batch of partitions %s rolled back (%s); reloading them from their "
                        "checkpoints", self.worker_id, sorted(result.failed), result.error)
            for p in sorted(result.failed):
                await self._restart_partition(p)
        if result.committed:
            try:
                await self._nc.publish(self.bus.commits_subject, json.dumps(
                    {"worker": self.worker_id, "committed": result.committed, "events": result.events}).encode())
            except Exception:  # noqa: BLE001 - a notice only
                pass

    def _observe(self, result: BatchResult) -> None:
        metrics = self.metrics
        metrics.events.inc(result.events)
        metrics.messages.inc(result.messages)
        metrics.redeliveries.inc(result.skipped)
        metrics.dead_letters.inc(result.dead_letters)
        if result.failed:
            metrics.failed_batches.inc()
            return
        metrics.commit.observe(result.commit_seconds)
        for kind, n in result.decisions.items():
            metrics.decisions.labels(kind).inc(n)
        for seconds, events in result.latencies:
            for _ in range(min(events, 50)):  # per event, bounded: a message's events share one latency
                metrics.latency.observe(seconds)
        for p, seq in result.committed.items():
            metrics.position.labels(str(p)).set(seq)

    async def _lag_loop(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            for p, owned in list(self.owned.items()):
                if owned.sub is None:
                    continue
                try:
                    info = await owned.sub.consumer_info()
                except Exception:  # noqa: BLE001
                    continue
                self.metrics.lag.labels(str(p)).set(info.num_pending + max(owned.queued, 0))


def _events_in(messages: list[StreamMessage]) -> int:
    total = 0
    for message in messages:
        count = message.headers.get("Propcrm-Count", "1")
        total += int(count) if count.isdigit() else 1
    return total


def _migrate_with_retry(url: str) -> None:
    """Several workers may start at once; one migrates, the others find the schema at head."""
    for attempt in range(5):
        try:
            migrate(url)
            return
        except Exception:  # noqa: BLE001
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)


def run_worker(*, bus: BusConfig, database_url: str, worker_id: str | None = None, metrics_port: int | None = None,
               metrics_host: str = "127.0.0.1", max_batch_events: int = 20_000, snapshot_interval_s: float = 2.0,
               push: bool = True) -> None:
    if not logging.getLogger().handlers:
        from ..adapters.logs import configure_logging
        configure_logging()
        logging.getLogger("alembic").setLevel(logging.WARNING)
    # The evaluation thread gives up the GIL at every database round trip and must win it back from the
    # event loop's thread; at the default 5 ms switch interval each round trip can wait that long.
    sys.setswitchinterval(0.0005)
    worker = ClusterWorker(bus=bus, database_url=database_url, worker_id=worker_id, metrics_port=metrics_port,
                           metrics_host=metrics_host, max_batch_events=max_batch_events,
                           snapshot_interval_s=snapshot_interval_s, push=push)
    # the audit log's anchors on their schedule (services/audit_anchors.py), beside the evaluation
    import threading

    from ..services.audit_anchors import anchor_loop

    stop = threading.Event()
    anchor_engine = make_engine(database_url)
    anchors = threading.Thread(target=anchor_loop, args=(sessions(anchor_engine, readonly=True), database_url, stop),
                               kwargs={"first_delay": 10.0}, name="audit-anchors", daemon=True)
    anchors.start()
    try:
        asyncio.run(worker.run())
    finally:
        stop.set()
        anchors.join(timeout=5)
        anchor_engine.dispose()


__all__ = ["ClusterWorker", "assign", "run_worker"]
