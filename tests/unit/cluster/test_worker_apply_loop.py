"""The worker's apply loop survives an unexpected error: the partitions of that batch are reloaded
from their checkpoints and later batches are still applied (a dead loop would keep the leases while
nothing is committed)."""

from __future__ import annotations

import asyncio

from propcrm.adapters.bus.jetstream import BusConfig
from propcrm.cluster.partition import BatchResult, PartitionRun, StreamMessage
from propcrm.cluster.worker import ClusterWorker, Owned


class _Store:
    def __init__(self) -> None:
        self.calls = 0
        self.applied: list[int] = []

    def apply(self, batch, *, snapshot: bool = False) -> BatchResult:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("unexpected")
        result = BatchResult()
        for run, messages in batch:
            self.applied.extend(m.seq for m in messages)
            result.committed[run.partition] = messages[-1].seq
        return result


def test_the_apply_loop_survives_an_unexpected_error():
    async def scenario() -> tuple[list[int], list[int]]:
        worker = ClusterWorker(bus=BusConfig(url="nats://127.0.0.1:1"), database_url="sqlite://")
        worker._store = _Store()
        worker._queue = asyncio.Queue()
        restarted: list[int] = []

        async def restart(p: int) -> None:
            restarted.append(p)
            worker.owned[p].epoch += 1  # what a reload does: a fresh epoch, so the old queue items drop

        worker._restart_partition = restart

        class _Nc:
            async def publish(self, *args) -> None:
                pass

        worker._nc = _Nc()
        worker.owned[3] = Owned(3, revision=1, epoch=1, run=PartitionRun(3, 0, 0))
        task = asyncio.create_task(worker._apply_loop())
        await worker._queue.put((3, 1, [StreamMessage(3, 1, {}, b"")]))
        await asyncio.sleep(0.2)
        await worker._queue.put((3, 2, [StreamMessage(3, 2, {}, b"")]))
        await asyncio.sleep(0.2)
        alive = not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        worker._executor.shutdown(wait=True)
        assert alive, "the apply loop died"
        return restarted, worker._store.applied

    restarted, applied = asyncio.run(scenario())
    assert restarted == [3]
    assert applied == [2]


def test_a_partition_reloaded_during_a_lease_renewal_keeps_the_renewed_revision():
    """A batch that rolls back reloads its partition (a fresh ``Owned`` with the lease revision of the
    moment). If that happens while the heartbeat is renewing the lease, the renewed revision must reach
    the fresh holder: with the stale one the next renewal fails and the partition is dropped."""

    async def scenario() -> int:
        worker = ClusterWorker(bus=BusConfig(url="nats://127.0.0.1:1", partitions=4), database_url="sqlite://",
                               worker_id="w1")
        stop = asyncio.Event()

        class _Leases:
            def __init__(self) -> None:
                self.revision = 10
                self.renewals = 0

            async def heartbeat(self, worker_id, info) -> None:
                pass

            async def renew(self, partition, worker_id, revision):
                self.renewals += 1
                if revision != self.revision:
                    return None
                if self.renewals == 1:  # the partition is reloaded while this renewal is under way
                    held = worker.owned[partition]
                    worker.owned[partition] = Owned(partition, held.revision, held.epoch + 1)
                self.revision += 1
                if self.renewals >= 3:
                    stop.set()
                return self.revision

            async def members(self):
                return ["w1"]

            async def acquire(self, partition, worker_id):
                return None

            async def release(self, partition, revision) -> None:
                pass

        worker._leases = _Leases()
        for p in range(4):
            worker.owned[p] = Owned(p, revision=10 if p == 0 else 1, epoch=1)
        worker.heartbeat_s = 0.01
        worker._leases.renew = _only_partition_0(worker._leases.renew)
        await asyncio.wait_for(worker._heartbeat_loop(stop), timeout=5)
        worker._executor.shutdown(wait=True)
        return 0 in worker.owned

    assert asyncio.run(scenario()), "partition 0 was dropped after a renewal raced with its reload"


def _only_partition_0(renew):
    async def wrapped(partition, worker_id, revision):
        if partition != 0:
            return revision
        return await renew(partition, worker_id, revision)

    return wrapped
