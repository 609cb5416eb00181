"""``propcrm cluster status``: who owns which partition, how far each is committed, and its lag."""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from ..adapters.bus.jetstream import BusConfig, Leases, connect
from ..adapters.db.models_cluster import DeadLetter, PartitionCheckpoint
from ..adapters.db.session import make_engine, sessions


async def _bus_view(bus: BusConfig) -> tuple[dict[int, str], list[str], dict[int, int]]:
    nc, js = await connect(bus, name="propcrm-cluster-status")
    try:
        leases = await Leases.open(js, bus)
        owners, members = await leases.owners(), await leases.members()
        last: dict[int, int] = {}
        for p in range(bus.partitions):
            try:
                last[p] = (await js.get_last_msg(bus.stream, bus.subject(p))).seq
            except Exception:  # noqa: BLE001 - nothing published to that partition yet
                last[p] = 0
        return owners, members, last
    finally:
        await nc.close()


def cluster_status(*, bus: BusConfig, database_url: str) -> int:
    owners, members, last = asyncio.run(_bus_view(bus))
    engine = make_engine(database_url)
    try:
        with sessions(engine)() as session:
            rows = {r.partition: r for r in session.scalars(
                select(PartitionCheckpoint).where(PartitionCheckpoint.stream == bus.stream))}
            dead = session.scalar(select(func.count()).select_from(DeadLetter)
                                  .where(DeadLetter.stream == bus.stream)) or 0
    finally:
        engine.dispose()
    console = Console(highlight=False)
    console.print(f"stream {bus.stream}: {bus.partitions} partitions; workers alive: "
                  f"{', '.join(members) or 'none'}; dead letters: {dead:,}")
    table = Table()
    for column in ("partition", "owner (lease)", "committed seq", "snapshot seq", "last published", "behind"):
        table.add_column(column, justify="right" if column != "owner (lease)" else "left")
    unowned = 0
    for p in range(bus.partitions):
        row = rows.get(p)
        committed = row.seq if row else 0
        owner = owners.get(p)
        unowned += owner is None
        behind = "0" if last[p] <= committed else "yes"
        table.add_row(str(p), owner or "[red]none[/]", f"{committed:,}", f"{row.state_seq if row else 0:,}",
                      f"{last[p]:,}", behind)
    console.print(table)
    return 1 if unowned else 0


__all__ = ["cluster_status"]
